//! Maps at scale in-process: first maps held through a burst of registrations, full maps
//! from shared chunks, deltas shared by epoch. The real server on loopback, clients that
//! speak ts2021 (Noise + HTTP/2) to it.

mod common;

use common::{SECOND, TestNode, TestServer, ids};
use oxiscale::admin::ExpireNode;
use oxiscale::config::PolicyMode;
use serde_json::{Value, json};

/// During a burst of registrations a large first map waits for the burst to end
/// (server/src/control/admission.rs), so it carries every node that registered meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_map_waits_out_a_burst_of_registrations() {
    // More nodes than a map rendered inline (64), registered a few at a time: hundreds a
    // second, well above the 50 a second that make a burst.
    const BEFORE: usize = 100;
    const AFTER: usize = 100;
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let key = server.key(alice, true, false, "1h").await;
    let _before = server.register_nodes(&key, "before", BEFORE, 8).await;
    let mut watcher = TestNode::connect(&server.url, "watcher").await;
    watcher.register(Some(&key)).await;
    let mut stream = watcher.stream().await;
    let _after = server.register_nodes(&key, "after", AFTER, 8).await;

    let first = stream.next_within(15 * SECOND).await.unwrap();
    assert_eq!(
        ids(&first["Peers"]).len(),
        BEFORE + AFTER,
        "the first map went out during the burst"
    );
    server.stop().await;
}

/// Full maps of a tailnet larger than one peer chunk (`mapper::chunks`, 128 ids) are
/// assembled from shared pre-compressed frames: every viewer still gets exactly its peers,
/// each once, and a peer's change reaches later full maps (the chunk is re-made).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_maps_from_shared_chunks_are_complete_and_current() {
    // Four chunks: the viewers' own first and last, two shared between them.
    const NODES: usize = 400;
    let server = TestServer::start_with(|c| c.policy.mode = PolicyMode::Database).await;
    let alice = server.user("alice").await;
    let key = server.key(alice, true, false, "1h").await;
    let mut nodes = server.register_nodes(&key, "n", NODES, 50).await;

    // A full map with `expected` peers, each once, not including the viewer.
    let full_map_of = |m: &Value, expected: usize| {
        let me = m["Node"]["ID"].as_u64().unwrap();
        let mut peers = ids(&m["Peers"]);
        let n = peers.len();
        peers.sort();
        peers.dedup();
        assert_eq!(peers.len(), n, "each peer once");
        assert_eq!(n, expected, "peers of {me}");
        assert!(!peers.contains(&me));
        assert!(m["DERPMap"].is_object() && m["PacketFilter"].is_array());
        m.clone()
    };
    let full_map = |m: &Value| full_map_of(m, NODES - 1);
    let peer = |m: &Value, id: u64| {
        m["Peers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["ID"] == id)
            .unwrap()
            .clone()
    };

    // Viewers in the first and the last chunk; a peer in the middle one (shared for both).
    let mut first = nodes[0].stream().await;
    let a = full_map(&first.next_within(10 * SECOND).await.unwrap());
    let mut last = nodes[NODES - 1].stream().await;
    let b = full_map(&last.next_within(10 * SECOND).await.unwrap());
    let a_id = a["Node"]["ID"].as_u64().unwrap();
    let middle = a["Peers"].as_array().unwrap()[150]["ID"].as_u64().unwrap();
    assert_eq!(peer(&a, middle), peer(&b, middle), "one rendering for all");
    assert_eq!(peer(&b, a_id)["Online"], true, "a's stream is open");

    // The middle peer changes: a new full map shows the change.
    let m = nodes
        .iter_mut()
        .find(|n| n.hostname == peer(&a, middle)["Hostinfo"]["Hostname"])
        .unwrap();
    assert_eq!(m.lite_update(&["192.0.2.7:41641"]).await, 200);
    drop(first);
    let mut again = nodes[0].stream().await;
    let c = full_map(&again.next_within(10 * SECOND).await.unwrap());
    assert_eq!(peer(&c, middle)["Endpoints"], json!(["192.0.2.7:41641"]));
    assert_ne!(peer(&a, middle), peer(&c, middle));

    // A chunk with an expired member or a routing member is not shared whole: the
    // expired node is left out, the router is shown with its route, the rest as before.
    let expired = a["Peers"].as_array().unwrap()[140]["ID"].as_u64().unwrap();
    let admin = &server.running().admin;
    admin
        .expire_node(expired, ExpireNode::default())
        .await
        .unwrap();
    let router = a["Peers"].as_array().unwrap()[160]["Hostinfo"]["Hostname"].clone();
    let r = nodes.iter_mut().find(|n| n.hostname == router).unwrap();
    let mut body = r.map_body(false, true, &[]);
    body["Hostinfo"]["RoutableIPs"] = json!(["10.60.0.0/24"]);
    assert_eq!(r.post_json("/machine/map", body).await.0, 200);
    let router = server.node_id(router.as_str().unwrap());
    admin
        .approve_routes(router, vec!["10.60.0.0/24".into()])
        .await
        .unwrap();
    drop(again);
    let mut third = nodes[0].stream().await;
    // Everyone but me and the expired node.
    let d = full_map_of(&third.next_within(10 * SECOND).await.unwrap(), NODES - 2);
    let peers = ids(&d["Peers"]);
    assert!(!peers.contains(&expired));
    assert!(
        peer(&d, router)["AllowedIPs"]
            .as_array()
            .unwrap()
            .contains(&json!("10.60.0.0/24")),
        "the router is shown with its route: {}",
        peer(&d, router)
    );
    assert_eq!(
        peer(&d, middle),
        peer(&c, middle),
        "its neighbours as before"
    );
    let next_chunk = a["Peers"].as_array().unwrap()[300]["ID"].as_u64().unwrap();
    assert_eq!(
        peer(&d, next_chunk),
        peer(&a, next_chunk),
        "the next chunk as before"
    );

    // A policy that lets everyone reach everyone shares whole chunks too; one that does
    // not is judged node by node.
    let allow_all = r#"{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}"#;
    admin.set_policy(allow_all.into()).await.unwrap();
    drop(third);
    let mut fourth = nodes[0].stream().await;
    // The same peers under allow-all.
    let e = full_map_of(&fourth.next_within(10 * SECOND).await.unwrap(), NODES - 2);
    assert_eq!(peer(&e, next_chunk), peer(&a, next_chunk));
    let middle_ip = peer(&a, middle)["Addresses"][0]
        .as_str()
        .unwrap()
        .trim_end_matches("/32")
        .to_owned();
    admin
        .set_policy(format!(
            r#"{{"acls": [{{"action": "accept", "src": ["*"], "dst": ["{middle_ip}:*"]}}]}}"#
        ))
        .await
        .unwrap();
    drop(fourth);
    let mut fifth = nodes[0].stream().await;
    let f = fifth.next_within(10 * SECOND).await.unwrap();
    assert_eq!(
        ids(&f["Peers"]),
        vec![middle],
        "only the one peer it may reach"
    );
    drop(fifth);
    admin.set_policy(allow_all.into()).await.unwrap();

    // A burst of joins reaches an open stream as deltas (several peers per delta are
    // spliced from per-node shared frames): every newcomer, each complete.
    let joins = (0..20).map(|i| {
        let (url, key) = (server.url.clone(), key.clone());
        tokio::spawn(async move {
            let mut n = TestNode::connect(&url, &format!("late{i}")).await;
            n.register(Some(&key)).await;
        })
    });
    futures_util::future::join_all(joins).await;
    let mut heard = std::collections::BTreeSet::new();
    while heard.len() < 20 {
        let m = last
            .until(10 * SECOND, |m| m.get("PeersChanged").is_some())
            .await;
        assert!(m.get("Peers").is_none(), "deltas, not a full map");
        for p in m["PeersChanged"].as_array().unwrap() {
            assert!(p["Key"].as_str().unwrap().starts_with("nodekey:"), "{p}");
            let name = p["Name"].as_str().unwrap();
            if name.starts_with("late") {
                heard.insert(name.to_owned());
            }
        }
    }
}

/// A viewer's map kept current from its stream the way a client keeps it: peers by id.
#[derive(Default)]
struct ReplayedMap {
    peers: std::collections::BTreeMap<u64, Value>,
}

impl ReplayedMap {
    fn apply(&mut self, m: &Value) {
        if let Some(all) = m.get("Peers") {
            self.peers = ids_to_peers(all);
        }
        for p in m["PeersChanged"].as_array().into_iter().flatten() {
            self.peers.insert(p["ID"].as_u64().unwrap(), p.clone());
        }
        for id in ids(&m["PeersRemoved"]) {
            self.peers.remove(&id);
        }
        for patch in m["PeersChangedPatch"].as_array().into_iter().flatten() {
            if let Some(p) = self.peers.get_mut(&patch["NodeID"].as_u64().unwrap()) {
                for field in ["Endpoints", "Online"] {
                    if let Some(v) = patch.get(field) {
                        p[field] = v.clone();
                    }
                }
            }
        }
    }

    /// What the comparison looks at: each peer's id, name, endpoints and online flag.
    fn summary(&self, skip: u64) -> Vec<(u64, Value, Value, Value)> {
        self.peers
            .values()
            .filter(|p| p["ID"] != skip)
            .map(|p| {
                (
                    p["ID"].as_u64().unwrap(),
                    p["Name"].clone(),
                    p["Endpoints"].clone(),
                    p["Online"].clone(),
                )
            })
            .collect()
    }
}

fn ids_to_peers(all: &Value) -> std::collections::BTreeMap<u64, Value> {
    all.as_array()
        .into_iter()
        .flatten()
        .map(|p| (p["ID"].as_u64().unwrap(), p.clone()))
        .collect()
}

/// Streams that keep up are sent one shared encoding per epoch (`mapper::epoch`); under a
/// burst of joins, endpoint changes and a delete, every viewer's map, replayed from its
/// stream, still ends equal to a fresh full map.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deltas_shared_by_epoch_reach_every_stream_exactly() {
    use std::sync::{Arc, Mutex};
    const VIEWERS: usize = 12;
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let key = server.key(alice, true, false, "1h").await;
    let mut viewers = Vec::new();
    for i in 0..VIEWERS {
        let mut n = TestNode::connect(&server.url, &format!("v{i}")).await;
        n.register(Some(&key)).await;
        viewers.push(n);
    }
    // Each viewer keeps its map from its stream's messages, from the full map on.
    let maps: Vec<Arc<Mutex<ReplayedMap>>> = (0..VIEWERS).map(|_| Arc::default()).collect();
    let mut streams = Vec::new();
    for (v, map) in viewers.iter_mut().zip(&maps) {
        let mut s = v.stream().await;
        let first = s.next_within(5 * SECOND).await.unwrap();
        assert!(first.get("Peers").is_some());
        map.lock().unwrap().apply(&first);
        streams.push(s);
    }
    // Let the viewers' own online patches settle.
    tokio::time::sleep(SECOND / 2).await;

    // With nothing else going on, one join is one epoch that every viewer holds alone:
    // all of them are sent the epoch's one encoded delta.
    let sessions = &server.running().control.sessions;
    let before = sessions.delta_counts();
    let mut quiet = TestNode::connect(&server.url, "quiet").await;
    quiet.register(Some(&key)).await;
    for (s, map) in streams.iter_mut().zip(&maps) {
        loop {
            let m = s.next_within(5 * SECOND).await.unwrap();
            map.lock().unwrap().apply(&m);
            if m.to_string().contains("quiet.tail.test.") {
                assert_eq!(m["PeersChanged"].as_array().unwrap().len(), 1, "{m}");
                break;
            }
        }
    }
    let after = sessions.delta_counts();
    assert_eq!(
        (after.shared - before.shared, after.own - before.own),
        (VIEWERS as u64, 0),
        "one shared delta for all viewers, none built per viewer"
    );

    let mut readers = Vec::new();
    for (mut s, map) in streams.into_iter().zip(maps.clone()) {
        readers.push(tokio::spawn(async move {
            while let Some(m) = s.next().await {
                map.lock().unwrap().apply(&m);
            }
        }));
    }
    // An observer, whose full maps are the truth to compare with.
    let mut observer = TestNode::connect(&server.url, "observer").await;
    observer.register(Some(&key)).await;
    let mut truth_stream = observer.stream().await;
    let observer_id = truth_stream.next_within(5 * SECOND).await.unwrap()["Node"]["ID"]
        .as_u64()
        .unwrap();
    drop(truth_stream);

    // A burst of everything at once: joins, endpoint changes, a deletion.
    let joins = (0..15).map(|i| {
        let (url, key) = (server.url.clone(), key.clone());
        tokio::spawn(async move {
            let mut n = TestNode::connect(&url, &format!("burst{i}")).await;
            n.register(Some(&key)).await;
            let mut s = n.stream().await;
            s.next_within(5 * SECOND).await.unwrap();
            n.lite_update(&[&format!("192.0.2.{i}:41641")]).await;
            (n, s)
        })
    });
    for (i, v) in viewers.iter_mut().enumerate().take(6) {
        assert_eq!(
            v.lite_update(&[&format!("198.51.100.{i}:41641")]).await,
            200
        );
    }
    let quiet_id = server.node_id("quiet");
    server.running().admin.delete_node(quiet_id).await.unwrap();
    let burst: Vec<_> = futures_util::future::join_all(joins)
        .await
        .into_iter()
        .map(|j| j.unwrap())
        .collect();

    // Every viewer's replayed map converges on the server's own full map.
    let deadline = tokio::time::Instant::now() + 10 * SECOND;
    loop {
        let mut s = observer.stream().await;
        let truth = s.next_within(5 * SECOND).await.unwrap();
        drop(s);
        let want = ReplayedMap {
            peers: ids_to_peers(&truth["Peers"]),
        }
        .summary(observer_id);
        assert_eq!(
            want.len(),
            VIEWERS + 15,
            "viewers and burst nodes, not quiet"
        );
        // A viewer sees everyone but itself (and the observer, skipped on both sides).
        let mismatch = |i: usize| {
            let own_name = format!("{}.tail.test.", viewers[i].hostname);
            let want: Vec<_> = want.iter().filter(|p| p.1 != own_name).collect();
            let got = maps[i].lock().unwrap().summary(observer_id);
            let missing: Vec<_> = want.iter().filter(|p| !got.contains(p)).collect();
            let extra: Vec<_> = got.iter().filter(|p| !want.contains(p)).collect();
            (!missing.is_empty() || !extra.is_empty())
                .then(|| format!("viewer {i} lacks {missing:?} and has {extra:?}"))
        };
        let behind: Vec<String> = (0..VIEWERS).filter_map(mismatch).collect();
        if behind.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "viewers do not match the server's map: {}",
            behind.join("; ")
        );
        tokio::time::sleep(SECOND / 5).await;
    }
    drop(burst);
    for r in readers {
        r.abort();
    }
    server.stop().await;
}
