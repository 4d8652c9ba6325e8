//! The policy in a running server (in-process, protocol-level clients, no real Tailscale):
//! loading and reloading, refusal of invalid policies, incremental map updates when the
//! policy or a tag changes, tags at registration, autoApprovers, and `policy check`.

mod check;
#[path = "../common/mod.rs"]
mod common;
mod helpers;

use std::sync::Arc;
use std::time::Duration;

use common::{MapStream, SECOND, TestNode, TestServer};
use helpers::*;
use oxiscale::config::PolicyMode;
use oxiscale::policy::PolicyStoreError;
use oxiscale::tailnet::Change;
use serde_json::{Value, json};

#[tokio::test]
async fn a_policy_file_decides_filters_and_a_valid_edit_reaches_streams_incrementally() {
    let (srv, path) = TestServer::with_policy_file(ALICE_TO_BOB_80).await;
    let (mut a, mut b) = alice_and_bob(&srv).await;
    let b_ip = ipv4(&node_json(&srv, "server-b"));
    let a_ip = ipv4(&node_json(&srv, "laptop-a"));

    let (mut sa, full_a) = first_map(&mut a).await;
    let (_sb, full_b) = first_map(&mut b).await;
    // bob's server accepts port 80 from alice; alice's laptop accepts nothing.
    assert_eq!(filter_dsts(&full_b).len(), 2, "v4 and v6: {full_b}");
    assert!(filter_dsts(&full_b).contains(&format!("{b_ip}:80")));
    assert!(full_a["PacketFilter"].as_array().unwrap().is_empty());
    assert_eq!(full_a["SSHPolicy"], json!({"rules": []}));
    assert_eq!(peer_ids(&full_a).len(), 1, "a sees b: {full_a}");

    let recorder = Arc::new(Recorder::default());
    srv.running().tailnet.subscribe(recorder.clone());

    // A syntax error is refused with its position, and the policy in force stays.
    std::fs::write(
        &path,
        "{\n  \"acls\": [\n    { \"action\": \"accept\" \"src\": [] }\n  ]\n}",
    )
    .unwrap();
    let err = srv.running().policy.reload(true).await.unwrap_err();
    match &err {
        PolicyStoreError::InvalidFile { source, .. } => {
            assert_eq!(source.line, Some(3), "{err}");
            assert!(source.column.is_some(), "{err}");
        }
        other => panic!("expected an invalid-file error, got {other}"),
    }
    assert!(err.to_string().contains("line 3, column"), "{err}");
    assert_eq!(
        srv.running().policy.view().await.policy.as_deref(),
        Some(ALICE_TO_BOB_80)
    );
    assert!(!recorder.take().contains(&Change::Visibility));

    // A valid edit, picked up by the file watcher (no SIGHUP), reaches the open stream.
    std::fs::write(&path, BOB_TO_ALICE_22).unwrap();
    let t0 = std::time::Instant::now();
    // (A stream may first repeat what its full map already had; wait for the new filter.)
    let delta = sa
        .until(5 * SECOND, |m| {
            m.get("PacketFilter").is_some() && filter_dsts(m).iter().any(|d| d.ends_with(":22"))
        })
        .await;
    assert_eq!(filter_dsts(&delta).len(), 2, "v4 and v6: {delta}");
    assert!(filter_dsts(&delta).contains(&format!("{a_ip}:22")));
    assert!(
        t0.elapsed() < Duration::from_millis(2500),
        "took {:?}",
        t0.elapsed()
    );
    // alice and bob still see each other: only the filters changed, and the streams were
    // not made to diff their peers.
    let changes = recorder.take();
    assert!(changes.contains(&Change::Filters), "{changes:?}");
    assert!(!changes.contains(&Change::Visibility), "{changes:?}");
    assert!(delta.get("PeersChanged").is_none() && delta.get("PeersRemoved").is_none());
    assert_eq!(
        srv.running().policy.view().await.policy.as_deref(),
        Some(BOB_TO_ALICE_22)
    );

    // A policy under which they no longer meet: visibility, and bob leaves alice's peers.
    let b_id = node_json(&srv, "server-b")["id"].as_u64().unwrap();
    std::fs::write(&path, r#"{"acls": []}"#).unwrap();
    let removed = sa
        .until(5 * SECOND, |m| {
            m["PeersRemoved"]
                .as_array()
                .is_some_and(|ids| ids.contains(&json!(b_id)))
        })
        .await;
    assert!(
        removed["PacketFilter"].as_array().unwrap().is_empty(),
        "{removed}"
    );
    assert!(recorder.take().contains(&Change::Visibility));
    srv.stop().await;
}

/// A join recompiles the policy. Under one that lets everyone see everyone the others'
/// peers stay as they were, so the streams are sent the newcomer, not made to diff their
/// whole peer sets; new filters go with it only when the join changed them.
#[tokio::test]
async fn a_join_under_an_all_seeing_policy_sends_filters_only_if_they_changed() {
    // Everyone sees everyone (port 80); port 22 is open to alice's devices only, so a new
    // device of hers is a new source in the filters of everyone.
    let policy = r#"{"acls": [
        {"action": "accept", "src": ["*"], "dst": ["*:80"]},
        {"action": "accept", "src": ["alice@"], "dst": ["*:22"]},
    ]}"#;
    let (srv, _path) = TestServer::with_policy_file(policy).await;
    let (mut a, _b) = alice_and_bob(&srv).await;
    let (mut sa, full_a) = first_map(&mut a).await;
    assert_eq!(peer_ids(&full_a).len(), 1, "{full_a}");
    // Let the stream's own changes (online) go out in an epoch of their own, so that the
    // join's epoch is one the stream can share (epochs are at least 50 ms apart).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let recorder = Arc::new(Recorder::default());
    srv.running().tailnet.subscribe(recorder.clone());

    let (_c, c) = register_as(&srv, "alice", "laptop-c").await;
    let c_id = c["id"].as_u64().unwrap();
    let delta = until_peer_changed(&mut sa, c_id).await;
    assert!(delta.get("PeersRemoved").is_none(), "{delta}");
    let c_ip = ipv4(&c);
    let sources: Vec<&str> = delta["PacketFilter"]
        .as_array()
        .unwrap_or_else(|| panic!("new filters come with the newcomer: {delta}"))
        .iter()
        .flat_map(|r| r["SrcIPs"].as_array().unwrap())
        .filter_map(Value::as_str)
        .collect();
    assert!(
        sources.iter().any(|s| s.starts_with(&c_ip)),
        "{c_ip} is a source now: {delta}"
    );
    let changes = recorder.take();
    assert!(changes.contains(&Change::Filters), "{changes:?}");
    assert!(!changes.contains(&Change::Visibility), "{changes:?}");

    // Bob's device is no new source: everyone's filters stay, and are not sent again.
    let (_d, d) = register_as(&srv, "bob", "laptop-d").await;
    let d_id = d["id"].as_u64().unwrap();
    let delta = until_peer_changed(&mut sa, d_id).await;
    assert!(delta.get("PacketFilter").is_none(), "{delta}");
    let changes = recorder.take();
    assert!(
        changes.contains(&Change::NodeUpserted(d_id))
            && !changes.contains(&Change::Filters)
            && !changes.contains(&Change::Visibility),
        "{changes:?}"
    );

    srv.stop().await;
}

/// The next message on `s` that adds or changes peer `id`.
async fn until_peer_changed(s: &mut MapStream, id: u64) -> Value {
    s.until(5 * SECOND, |m| ids_in(m, "PeersChanged").contains(&id))
        .await
}

/// Fails if the stream says anything but keep-alives before it has been quiet for a second.
async fn assert_hears_nothing(s: &mut MapStream, why: &str) {
    let mut heard = Vec::new();
    while let Ok(Some(m)) = tokio::time::timeout(SECOND, s.next()).await {
        if m.get("KeepAlive").is_none() {
            heard.push(m);
        }
    }
    assert_eq!(heard, Vec::<Value>::new(), "{why}");
}

/// Registers a node of an existing user; returns it and its admin view.
async fn register_as(srv: &TestServer, user: &str, hostname: &str) -> (TestNode, Value) {
    let key = srv.preauth_key(Some(user_id(srv, user)), &[]).await;
    let (node, _) = register_with(srv, hostname, &key, json!({})).await;
    (node, node_json(srv, hostname))
}

/// Under a policy where not everyone meets, a join or a leave changes only who sees the node
/// that came or went: the streams are not diffed (`Filters`, not `Visibility`), the node
/// reaches only the streams that may see it, and only the streams whose filters it changed
/// are sent filters.
#[tokio::test]
async fn a_join_or_leave_under_a_policy_reaches_only_those_it_concerns() {
    let (srv, _path) = TestServer::with_policy_file(ALICE_TO_BOB_80).await;
    let (mut a, mut b) = alice_and_bob(&srv).await;
    srv.user("carol").await;
    let (mut c, _) = register_as(&srv, "carol", "desk-c").await;
    let (mut sa, _) = first_map(&mut a).await;
    let (mut sb, _) = first_map(&mut b).await;
    let (mut sc, _) = first_map(&mut c).await;
    // Let what opening the streams changed (online, Hostinfo) go out first.
    for s in [&mut sa, &mut sb, &mut sc] {
        while let Ok(Some(_)) = tokio::time::timeout(SECOND / 2, s.next()).await {}
    }
    let recorder = Arc::new(Recorder::default());
    srv.running().tailnet.subscribe(recorder.clone());

    // Another of bob's nodes: alice may reach it, bob's other node and carol may not.
    let (_d, d) = register_as(&srv, "bob", "server-d").await;
    let d_id = d["id"].as_u64().unwrap();
    until_peer_changed(&mut sa, d_id).await;
    let changes = recorder.take();
    assert!(changes.contains(&Change::Filters), "{changes:?}");
    assert!(!changes.contains(&Change::Visibility), "{changes:?}");
    assert_hears_nothing(&mut sb, "nothing for bob's server").await;
    assert_hears_nothing(&mut sc, "nothing for carol").await;

    // Another of alice's nodes: it may reach bob's server, whose filter now admits it.
    let (_e, e) = register_as(&srv, "alice", "laptop-e").await;
    let e_id = e["id"].as_u64().unwrap();
    let to_b = until_peer_changed(&mut sb, e_id).await;
    let filter_of_b = match to_b.get("PacketFilter") {
        Some(_) => to_b,
        None => {
            sb.until(5 * SECOND, |m| m.get("PacketFilter").is_some())
                .await
        }
    };
    assert!(
        filter_of_b["PacketFilter"][0]["SrcIPs"]
            .as_array()
            .unwrap()
            .contains(&json!(ipv4(&e))),
        "{filter_of_b}"
    );
    assert!(!recorder.take().contains(&Change::Visibility));
    assert_hears_nothing(&mut sa, "alice's laptops do not meet").await;
    assert_hears_nothing(&mut sc, "nothing for carol").await;

    // Bob's new node leaves: only alice had it.
    srv.running().admin.delete_node(d_id).await.unwrap();
    let gone = sa
        .until(5 * SECOND, |m| m.get("PeersRemoved").is_some())
        .await;
    assert_eq!(gone["PeersRemoved"], json!([d_id]), "{gone}");
    assert!(!recorder.take().contains(&Change::Visibility));
    assert_hears_nothing(&mut sb, "nothing for bob's server").await;
    assert_hears_nothing(&mut sc, "nothing for carol").await;
    srv.stop().await;
}

/// `nodeAttrs` are the node's own capabilities: a policy edit that changes them reaches
/// the node's open stream as a new self `Node`; one that does not sends no `Node`.
#[tokio::test]
async fn a_policy_edit_of_node_attributes_reaches_the_nodes_own_map() {
    let (srv, path) = TestServer::with_policy_file(ALICE_TO_BOB_80).await;
    let (mut a, _b) = alice_and_bob(&srv).await;
    let (mut sa, full_a) = first_map(&mut a).await;
    assert!(full_a["Node"]["CapMap"].get("funnel").is_none(), "{full_a}");

    let with_attr = ALICE_TO_BOB_80.replace(
        r#""acls""#,
        r#""nodeAttrs": [{ "target": ["alice@"], "attr": ["funnel"] }],
  "acls""#,
    );
    std::fs::write(&path, &with_attr).unwrap();
    let update = sa
        .until(5 * SECOND, |m| m["Node"]["CapMap"].get("funnel").is_some())
        .await;
    assert_eq!(update["Node"]["Name"], "laptop-a.tail.test.", "{update}");

    // Only the filter changes now: the node's capabilities are as sent, so no Node.
    std::fs::write(&path, with_attr.replace("bob@:80", "bob@:81")).unwrap();
    let filter = sa
        .until(5 * SECOND, |m| m.get("PacketFilter").is_some())
        .await;
    assert!(filter.get("Node").is_none(), "{filter}");
    srv.stop().await;
}

#[tokio::test]
async fn disable_ipv4_keeps_a_nodes_ipv4_from_the_tailnet_until_the_policy_drops_it() {
    let (srv, path) = TestServer::with_policy_file(ALICE_TO_BOB_80).await;
    let (mut a, mut b) = alice_and_bob(&srv).await;
    let (mut sa, full_a) = first_map(&mut a).await;
    let (mut sb, _) = first_map(&mut b).await;
    let bob_v4 = allowed_ips_of(&full_a, "server-b")
        .into_iter()
        .find(|a| a.contains('.'))
        .expect("alice is told bob's IPv4 at first");
    for s in [&mut sa, &mut sb] {
        while let Ok(Some(_)) = tokio::time::timeout(SECOND / 2, s.next()).await {}
    }

    let without_v4 = ALICE_TO_BOB_80.replace(
        r#""acls""#,
        r#""nodeAttrs": [{ "target": ["bob@"], "attr": ["disable-ipv4"] }],
  "acls""#,
    );
    std::fs::write(&path, &without_v4).unwrap();
    let only_v6 = |v: &Value| {
        v.as_array().is_some_and(|a| {
            !a.is_empty()
                && a.iter()
                    .all(|x| x.as_str().is_some_and(|s| s.contains(':')))
        })
    };
    // Bob is told his own addresses without the IPv4, and so is alice of bob.
    let own = sb
        .until(5 * SECOND, |m| only_v6(&m["Node"]["Addresses"]))
        .await;
    assert!(only_v6(&own["Node"]["AllowedIPs"]), "{own}");
    // Without an IPv4 of his own, bob is told alice's IPv6 address only.
    let alice_v6 = |m: &Value| {
        ["Peers", "PeersChanged"].iter().any(|field| {
            m[*field].as_array().is_some_and(|p| {
                p.iter().any(|n| {
                    n["Name"] == "laptop-a.tail.test."
                        && only_v6(&n["Addresses"])
                        && only_v6(&n["AllowedIPs"])
                })
            })
        })
    };
    if !alice_v6(&own) {
        sb.until(5 * SECOND, alice_v6).await;
    }
    let peer = sa
        .until(5 * SECOND, |m| {
            m["PeersChanged"].as_array().is_some_and(|p| {
                p.iter()
                    .any(|n| n["Name"] == "server-b.tail.test." && only_v6(&n["Addresses"]))
            })
        })
        .await;
    assert!(
        !peer.to_string().contains(&format!("\"{bob_v4}/32\"")),
        "{peer}"
    );
    // The address stays assigned to bob.
    assert!(
        node_json(&srv, "server-b")["ip_addresses"]
            .as_array()
            .unwrap()
            .contains(&json!(bob_v4.trim_end_matches("/32"))),
        "{}",
        node_json(&srv, "server-b")
    );

    // Without the attribute alice is told bob's IPv4 again, and bob alice's.
    std::fs::write(&path, ALICE_TO_BOB_80).unwrap();
    sa.until(5 * SECOND, |m| {
        m["PeersChanged"].as_array().is_some_and(|p| {
            p.iter()
                .any(|n| n["AllowedIPs"].to_string().contains(&bob_v4))
        })
    })
    .await;
    sb.until(5 * SECOND, |m| {
        m["PeersChanged"].as_array().is_some_and(|p| {
            p.iter().any(|n| {
                n["Name"] == "laptop-a.tail.test."
                    && n["Addresses"].as_array().is_some_and(|a| {
                        a.iter()
                            .any(|x| x.as_str().is_some_and(|s| s.contains('.')))
                    })
            })
        })
    })
    .await;
    srv.stop().await;
}

/// A node's own description changing (its Hostinfo) is one epoch whose delta is encoded
/// once for every stream that may see the node; under a policy a stream that may not is
/// sent nothing of it, although the epoch's verdicts are shared (`mapper::epoch`).
#[tokio::test]
async fn a_peer_update_reaches_only_the_streams_that_may_see_it() {
    let (srv, _path) = TestServer::with_policy_file(ALICE_TO_BOB_80).await;
    let (mut a, mut b) = alice_and_bob(&srv).await;
    let carol = srv.user("carol").await;
    let kc = srv.preauth_key(Some(carol), &[]).await;
    let (mut c, _) = register_with(&srv, "desk-c", &kc, json!({})).await;
    let (mut sb, full_b) = first_map(&mut b).await;
    let (mut sc, full_c) = first_map(&mut c).await;
    let a_id = node_json(&srv, "laptop-a")["id"].as_u64().unwrap();
    assert_eq!(peer_ids(&full_b), vec![a_id], "{full_b}");
    assert!(peer_ids(&full_c).is_empty(), "carol sees nobody: {full_c}");
    // Let what opening the streams changed (online, Hostinfo) go out first.
    for s in [&mut sb, &mut sc] {
        while let Ok(Some(_)) = tokio::time::timeout(SECOND / 2, s.next()).await {}
    }

    let with_os = |node: &TestNode, os_version: &str| {
        let mut body = node.map_body(false, true, &[]);
        body["Hostinfo"]["OSVersion"] = json!(os_version);
        body
    };
    let sessions = &srv.running().control.sessions;
    let before = sessions.delta_counts();
    assert_eq!(
        a.post_json("/machine/map", with_os(&a, "6.1.0")).await.0,
        200
    );
    let seen = sb
        .until(5 * SECOND, |m| !ids_in(m, "PeersChanged").is_empty())
        .await;
    assert_eq!(ids_in(&seen, "PeersChanged"), vec![a_id], "{seen}");
    assert_eq!(seen["PeersChanged"][0]["Hostinfo"]["OSVersion"], "6.1.0");

    // Carol's next message is about herself: her stream was sent nothing of laptop-a
    // (messages on a stream keep their order).
    assert_eq!(
        c.post_json("/machine/map", with_os(&c, "6.2.0")).await.0,
        200
    );
    let own = sc.next_within(5 * SECOND).await.unwrap();
    assert_eq!(own["Node"]["Hostinfo"]["OSVersion"], "6.2.0", "{own}");
    assert!(own.get("PeersChanged").is_none(), "{own}");
    let after = sessions.delta_counts();
    assert_eq!(
        (after.shared - before.shared, after.own - before.own),
        (1, 1),
        "bob was sent the shared delta; carol only her own node"
    );
    srv.stop().await;
}

#[tokio::test]
async fn a_policy_whose_tests_fail_is_refused_and_changes_nothing() {
    let (srv, path) = TestServer::with_policy_file(ALICE_TO_BOB_80).await;
    let (_a, _b) = alice_and_bob(&srv).await;
    std::fs::write(
        &path,
        r#"{"acls": [{"action": "accept", "src": ["alice@"], "dst": ["bob@:80"]}],
            "tests": [{"src": "alice@", "accept": ["bob@:443"]}]}"#,
    )
    .unwrap();
    let err = srv.running().policy.reload(true).await.unwrap_err();
    assert!(err.to_string().contains("test"), "{err}");
    let b = node_json(&srv, "server-b");
    let filter = srv.running().tailnet.read(|s| {
        let n = s.node(b["id"].as_u64().unwrap()).unwrap().clone();
        s.access().packet_filter(&n)
    });
    assert_eq!(filter.len(), 1, "the old policy's rule stays: {filter:?}");
    srv.stop().await;
}

#[tokio::test]
async fn an_invalid_policy_file_stops_the_server_at_start() {
    let dir = temp_dir();
    let path = dir.join("policy.hujson");
    std::fs::write(
        &path,
        "{\n  \"acls\": [ { \"action\": \"allow\", \"src\": [\"*\"], \"dst\": [\"*:*\"] } ]\n}\n",
    )
    .unwrap();
    let p = path.clone();
    let err = match start_with(&dir, move |c| c.policy.path = Some(p)).await {
        Ok(_) => panic!("the server must not start with an invalid policy"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("line 2"), "{err}");
    assert!(err.contains(&path.display().to_string()), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn file_mode_without_a_path_is_allow_all_and_refuses_set() {
    let srv = TestServer::start().await;
    let (mut a, _b) = alice_and_bob(&srv).await;
    let (_s, full) = first_map(&mut a).await;
    assert_eq!(
        full["PacketFilter"][0]["SrcIPs"],
        json!(["*"]),
        "allow-all: {}",
        full["PacketFilter"]
    );
    let err = srv
        .running()
        .admin
        .set_policy(ALICE_TO_BOB_80.into())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("file"), "{err}");
    srv.stop().await;
}

#[tokio::test]
async fn database_mode_keeps_history_and_serves_the_newest() {
    let dir = temp_dir();
    let mut srv = start_with(&dir, |c| c.policy.mode = PolicyMode::Database)
        .await
        .unwrap();
    let admin = srv.running().admin.clone();
    assert!(admin.get_policy().await.policy.is_none());
    admin.set_policy(ALICE_TO_BOB_80.into()).await.unwrap();
    admin.set_policy(BOB_TO_ALICE_22.into()).await.unwrap();
    let err = admin
        .set_policy(
            "{\"acls\": [ {\"action\": \"allow\", \"src\": [\"*\"], \"dst\": [\"*:*\"]} ]}".into(),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("line 1, column"), "{err}");
    assert_eq!(
        admin.get_policy().await.policy.as_deref(),
        Some(BOB_TO_ALICE_22)
    );
    // The newest row is in force after a restart, too.
    let port = srv.running().http_addr.port();
    srv.running.take().unwrap().stop().await.unwrap();
    srv = start_with(&dir, |c| {
        c.policy.mode = PolicyMode::Database;
        c.listen_addr = format!("127.0.0.1:{port}").parse().unwrap();
    })
    .await
    .unwrap();
    assert_eq!(
        srv.running().admin.get_policy().await.policy.as_deref(),
        Some(BOB_TO_ALICE_22)
    );
    assert!(srv.running().tailnet.read(|s| s.policy().is_some()));
    srv.stop().await;
}

#[tokio::test]
async fn a_tagged_key_makes_a_tagged_node_without_any_policy() {
    let srv = TestServer::start().await;
    let key = srv.preauth_key(None, &["tag:server"]).await;
    let (_n, resp) = register_with(&srv, "tagged", &key, json!({})).await;
    assert_eq!(resp["MachineAuthorized"], true, "{resp}");
    let n = node_json(&srv, "tagged");
    assert_eq!(n["tags"], json!(["tag:server"]));
    assert!(n["user"].is_null(), "a tagged node has no user: {n}");
    srv.stop().await;
}

#[tokio::test]
async fn request_tags_need_tag_owners() {
    let (srv, _path) = TestServer::with_policy_file(ALICE_TO_BOB_80).await;
    let alice = srv.user("alice").await;
    let bob = srv.user("bob").await;
    let kb = srv.preauth_key(Some(bob), &[]).await;
    let (_n, resp) = register_with(
        &srv,
        "bobs-box",
        &kb,
        json!({"RequestTags": ["tag:server"]}),
    )
    .await;
    let error = resp["Error"].as_str().unwrap_or_default();
    assert!(
        error.contains("tag:server") && error.contains("not permitted"),
        "{resp}"
    );
    assert!(srv.running().admin.list_nodes(None).is_empty());

    let ka = srv.preauth_key(Some(alice), &[]).await;
    let (_n, resp) = register_with(
        &srv,
        "alices-box",
        &ka,
        json!({"RequestTags": ["tag:server"]}),
    )
    .await;
    assert_eq!(resp["MachineAuthorized"], true, "{resp}");
    assert_eq!(node_json(&srv, "alices-box")["tags"], json!(["tag:server"]));

    // Under a policy, the CLI may only set tags tagOwners defines.
    let id = node_json(&srv, "alices-box")["id"].as_u64().unwrap();
    let err = srv
        .running()
        .admin
        .set_tags(id, vec!["tag:nobody".into()])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("tag:nobody"), "{err}");
    srv.stop().await;
}

#[tokio::test]
async fn a_tag_change_reaches_peers_at_once() {
    let policy = r#"{
      "tagOwners": { "tag:web": ["alice@"], "tag:db": ["alice@"] },
      "acls": [ { "action": "accept", "src": ["bob@"], "dst": ["tag:web:80"] } ],
    }"#;
    let (srv, _path) = TestServer::with_policy_file(policy).await;
    let (mut a, mut b) = alice_and_bob(&srv).await;
    let a_id = node_json(&srv, "laptop-a")["id"].as_u64().unwrap();
    let a_ip = ipv4(&node_json(&srv, "laptop-a"));
    let (mut sa, full_a) = first_map(&mut a).await;
    let (mut sb, full_b) = first_map(&mut b).await;
    assert!(
        peer_ids(&full_b).is_empty(),
        "b may reach no one yet: {full_b}"
    );
    assert!(full_a["PacketFilter"].as_array().unwrap().is_empty());

    srv.running()
        .admin
        .set_tags(a_id, vec!["tag:web".into()])
        .await
        .unwrap();
    // (A stream may first repeat what its full map already had; wait for a new filter.)
    let got = sa
        .until(3 * SECOND, |m| {
            m.get("PacketFilter").is_some() && !filter_dsts(m).is_empty()
        })
        .await;
    assert!(filter_dsts(&got).contains(&format!("{a_ip}:80")), "{got}");
    let got = sb
        .until(3 * SECOND, |m| {
            m["PeersChanged"]
                .as_array()
                .is_some_and(|p| p.iter().any(|n| n["ID"] == a_id))
        })
        .await;
    assert!(got.to_string().contains("tag:web"), "{got}");

    // Re-tagged to something bob may not reach: a disappears from b's map.
    srv.running()
        .admin
        .set_tags(a_id, vec!["tag:db".into()])
        .await
        .unwrap();
    sb.until(3 * SECOND, |m| {
        m["PeersRemoved"]
            .as_array()
            .is_some_and(|p| p.iter().any(|id| *id == a_id))
    })
    .await;
    srv.stop().await;
}

#[tokio::test]
async fn routes_reach_peers_after_approval_and_auto_approvers_approve() {
    let policy = r#"{
      "acls": [ { "action": "accept", "src": ["*"], "dst": ["*:*"] } ],
      "autoApprovers": { "routes": { "10.20.0.0/16": ["alice@"] } },
    }"#;
    let (srv, _path) = TestServer::with_policy_file(policy).await;
    let alice = srv.user("alice").await;
    let bob = srv.user("bob").await;
    let kb = srv.preauth_key(Some(bob), &[]).await;
    let (mut viewer, _) = register_with(&srv, "viewer", &kb, json!({})).await;
    let (mut sv, _) = first_map(&mut viewer).await;

    // bob's router: 10.30.0.0/24 is not auto-approved; it reaches peers only once approved.
    let (mut router_b, _) = register_with(
        &srv,
        "router-b",
        &kb,
        json!({"RoutableIPs": ["10.30.0.0/24"]}),
    )
    .await;
    let rb = node_json(&srv, "router-b");
    assert_eq!(rb["approved_routes"], json!([]));
    // (No stream for the router: this test client's map requests carry a Hostinfo without
    // RoutableIPs, which would withdraw the advertisement.)
    let _ = &mut router_b;
    let msg = sv
        .until(3 * SECOND, |m| m.to_string().contains("router-b"))
        .await;
    assert_eq!(allowed_ips_of(&msg, "router-b").len(), 2, "{msg}");
    srv.running()
        .admin
        .approve_routes(rb["id"].as_u64().unwrap(), vec!["10.30.0.0/24".into()])
        .await
        .unwrap();
    sv.until(3 * SECOND, |m| {
        allowed_ips_of(m, "router-b").contains(&"10.30.0.0/24".to_string())
    })
    .await;

    // alice's router: the covered route is approved at registration, the other is not.
    let ka = srv.preauth_key(Some(alice), &[]).await;
    let (_ra, _) = register_with(
        &srv,
        "router-a",
        &ka,
        json!({"RoutableIPs": ["10.20.5.0/24", "192.168.9.0/24"]}),
    )
    .await;
    assert_eq!(
        node_json(&srv, "router-a")["approved_routes"],
        json!(["10.20.5.0/24"])
    );
    let routes = srv
        .running()
        .admin
        .list_routes(Some(node_json(&srv, "router-a")["id"].as_u64().unwrap()))
        .unwrap();
    assert_eq!(routes[0].approved_routes, vec!["10.20.5.0/24".to_string()]);

    // Advertised later through a map request: approved when Hostinfo.RoutableIPs changes.
    let mut later = TestNode::connect(&srv.url, "router-late").await;
    later.register(Some(&ka)).await;
    let mut body = later.map_body(false, true, &[]);
    body["Hostinfo"]["RoutableIPs"] = json!(["10.20.9.0/24"]);
    let (status, _) = later.post_json("/machine/map", body).await;
    assert_eq!(status, 200);
    assert_eq!(
        node_json(&srv, "router-late")["approved_routes"],
        json!(["10.20.9.0/24"])
    );
    srv.stop().await;
}

#[tokio::test]
async fn the_online_router_carries_a_shared_route_and_the_policy_decides_who_gets_it() {
    // The engine alone would pick the lowest id (router-1) as primary; the server's HA
    // election knows router-1 is offline and picks router-2. Maps must follow the server.
    let policy = r#"{
      "acls": [ { "action": "accept", "src": ["alice@"], "dst": ["10.40.0.0/24:*"] } ],
      "autoApprovers": { "routes": { "10.40.0.0/24": ["bob@"] } },
    }"#;
    let (srv, _path) = TestServer::with_policy_file(policy).await;
    let alice = srv.user("alice").await;
    let bob = srv.user("bob").await;
    let carol = srv.user("carol").await;
    let kb = srv.preauth_key(Some(bob), &[]).await;
    let route = json!({"RoutableIPs": ["10.40.0.0/24"]});
    let (_r1, _) = register_with(&srv, "router-1", &kb, route.clone()).await;
    let (mut r2, _) = register_with(&srv, "router-2", &kb, route).await;
    // router-2 goes online with a map stream that keeps advertising the route.
    let mut body = r2.map_body(true, false, &[]);
    body["Hostinfo"]["RoutableIPs"] = json!(["10.40.0.0/24"]);
    let r2_stream = r2.post("/machine/map", body).await;
    assert_eq!(r2_stream.status(), 200);
    for _ in 0..50 {
        if node_json(&srv, "router-2")["online"] == true {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        node_json(&srv, "router-2")["subnet_routes"],
        json!(["10.40.0.0/24"]),
        "router-2 is primary: {}",
        node_json(&srv, "router-2")
    );

    let ka = srv.preauth_key(Some(alice), &[]).await;
    let (mut viewer, _) = register_with(&srv, "viewer", &ka, json!({})).await;
    let (_sv, full) = first_map(&mut viewer).await;
    assert!(
        allowed_ips_of(&full, "router-2").contains(&"10.40.0.0/24".to_string()),
        "{full}"
    );
    assert!(
        !allowed_ips_of(&full, "router-1").contains(&"10.40.0.0/24".to_string()),
        "{full}"
    );

    // carol may not use the route: she does not even see the routers.
    let kc = srv.preauth_key(Some(carol), &[]).await;
    let (mut other, _) = register_with(&srv, "other", &kc, json!({})).await;
    let (_so, full) = first_map(&mut other).await;
    assert!(peer_ids(&full).is_empty(), "{full}");
    drop(r2_stream);
    srv.stop().await;
}

#[tokio::test]
async fn a_via_grant_sends_the_route_through_the_router_it_names_not_the_primary() {
    let policy = r#"{
      "tagOwners": { "tag:a": ["bob@"], "tag:b": ["bob@"] },
      "grants": [ { "src": ["alice@"], "dst": ["10.40.0.0/24"], "ip": ["*"], "via": ["tag:b"] } ],
      "autoApprovers": { "routes": { "10.40.0.0/24": ["tag:a", "tag:b"] } },
    }"#;
    let (srv, _path) = TestServer::with_policy_file(policy).await;
    let alice = srv.user("alice").await;
    let bob = srv.user("bob").await;
    let route = json!({"RoutableIPs": ["10.40.0.0/24"]});
    let ka = srv.preauth_key(Some(bob), &["tag:a"]).await;
    let kb = srv.preauth_key(Some(bob), &["tag:b"]).await;
    let (mut ra, _) = register_with(&srv, "router-a", &ka, route.clone()).await;
    let (mut rb, _) = register_with(&srv, "router-b", &kb, route).await;
    let mut streams = Vec::new();
    for r in [&mut ra, &mut rb] {
        let mut body = r.map_body(true, false, &[]);
        body["Hostinfo"]["RoutableIPs"] = json!(["10.40.0.0/24"]);
        let stream = r.post("/machine/map", body).await;
        assert_eq!(stream.status(), 200);
        streams.push(stream);
    }
    for _ in 0..50 {
        if node_json(&srv, "router-b")["online"] == true {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        node_json(&srv, "router-a")["subnet_routes"],
        json!(["10.40.0.0/24"]),
        "router-a, online first, is the elected primary: {}",
        node_json(&srv, "router-a")
    );

    let kv = srv.preauth_key(Some(alice), &[]).await;
    let (mut viewer, _) = register_with(&srv, "viewer", &kv, json!({})).await;
    let (_sv, full) = first_map(&mut viewer).await;
    assert!(
        allowed_ips_of(&full, "router-b").contains(&"10.40.0.0/24".to_string()),
        "the route goes through the router the grant names: {full}"
    );
    assert!(
        !allowed_ips_of(&full, "router-a").contains(&"10.40.0.0/24".to_string()),
        "not through the primary: {full}"
    );
    drop(streams);
    srv.stop().await;
}
