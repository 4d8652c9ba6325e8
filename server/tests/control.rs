//! The control protocol end to end in-process: the real server on loopback, clients that
//! speak ts2021 (Noise + HTTP/2) to it. Real Tailscale clients are exercised in end2end/.

mod common;

use std::time::Duration;

use common::{SECOND, TestNode, TestServer};
use oxiscale::admin::ExpireNode;
use oxiscale::config::PolicyMode;
use oxiscale_tailcfg::NodePublic;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn ids(v: &Value) -> Vec<u64> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n["ID"].as_u64().or_else(|| n.as_u64()))
        .collect()
}

/// What a map message says of peer `id`'s `field`: in a patch, or in the whole node when
/// the same epoch changed more of it.
fn peer_field(m: &Value, id: u64, field: &str) -> Option<Value> {
    let patched = m["PeersChangedPatch"].as_array().into_iter().flatten();
    let whole = m["PeersChanged"].as_array().into_iter().flatten();
    patched
        .filter(|c| c["NodeID"] == id)
        .chain(whole.filter(|n| n["ID"] == id))
        .find_map(|c| c.get(field).cloned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_then_stream_a_full_map_then_deltas() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let key = server.key(alice, true, false, "1h").await;

    let mut a = TestNode::connect(&server.url, "node-a").await;
    let reg = a.register(Some(&key)).await;
    assert_eq!(reg["MachineAuthorized"], true, "{reg}");
    assert_eq!(reg["Error"], "");
    assert_eq!(reg["Login"]["LoginName"], "alice");

    let mut stream_a = a.stream().await;
    let first = stream_a.next_within(5 * SECOND).await.unwrap();
    let me = &first["Node"];
    assert_eq!(me["Name"], "node-a.tail.test.");
    assert_eq!(me["MachineAuthorized"], true);
    assert_eq!(
        me["Machine"],
        a.machine.public().to_string(),
        "its own machine key"
    );
    assert_eq!(
        me["Addresses"],
        json!(["100.64.0.1/32", "fd7a:115c:a1e0::1/128"])
    );
    assert!(
        first["DERPMap"]["Regions"]["999"]["Nodes"][0]["DERPPort"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert_eq!(
        first["PacketFilter"][0]["SrcIPs"],
        json!(["*"]),
        "no policy means allow-all"
    );
    assert_eq!(first["DNSConfig"]["Domains"], json!(["tail.test"]));
    assert!(first.get("Peers").is_none(), "alone in the tailnet");

    // A second node joins: the first hears about it as a delta, not a full map.
    let mut b = TestNode::connect(&server.url, "node-b").await;
    b.register(Some(&key)).await;
    let joined = stream_a
        .until(5 * SECOND, |m| m.get("PeersChanged").is_some())
        .await;
    assert!(
        joined.get("Peers").is_none(),
        "incremental, not a full map: {joined}"
    );
    assert_eq!(joined["PeersChanged"][0]["Name"], "node-b.tail.test.");
    assert!(
        joined["PeersChanged"][0].get("Machine").is_none(),
        "a peer's machine key is not sent"
    );
    let b_id = joined["PeersChanged"][0]["ID"].as_u64().unwrap();

    // B opens its stream (online) and reports endpoints: A hears them, as a light patch,
    // or inside B's whole node when B's stream opening changed B in the same epoch.
    let mut stream_b = b.stream().await;
    let b_first = stream_b.next_within(5 * SECOND).await.unwrap();
    assert_eq!(ids(&b_first["Peers"]), vec![me["ID"].as_u64().unwrap()]);
    assert!(b_first["Peers"][0].get("Machine").is_none());
    assert_eq!(b_first["Node"]["Machine"], b.machine.public().to_string());
    assert_eq!(b.lite_update(&["192.0.2.1:41641"]).await, 200);
    let endpoints_of_b = |m: &Value| peer_field(m, b_id, "Endpoints");
    let heard = stream_a
        .until(5 * SECOND, |m| endpoints_of_b(m).is_some())
        .await;
    assert_eq!(endpoints_of_b(&heard), Some(json!(["192.0.2.1:41641"])));

    // Deleting B removes it from A's map and ends B's stream.
    server.running().admin.delete_node(b_id).await.unwrap();
    let removed = stream_a
        .until(5 * SECOND, |m| m.get("PeersRemoved").is_some())
        .await;
    assert_eq!(removed["PeersRemoved"], json!([b_id]));
    let end = tokio::time::timeout(5 * SECOND, async {
        while stream_b.next().await.is_some() {}
    })
    .await;
    assert!(end.is_ok(), "the deleted node's stream ends");
    server.stop().await;
}

/// A stream's end: a client that goes away is offline for its peers, and a server that
/// stops ends the streams still open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_is_offline_and_stopping_ends_open_streams() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let key = server.key(alice, true, false, "1h").await;
    let mut a = TestNode::connect(&server.url, "node-a").await;
    a.register(Some(&key)).await;
    let mut stream_a = a.stream().await;
    stream_a.next_within(5 * SECOND).await.unwrap();

    let mut b = TestNode::connect(&server.url, "node-b").await;
    b.register(Some(&key)).await;
    let b_id = server.node_id("node-b");
    let online_of_b = |m: &Value| peer_field(m, b_id, "Online").and_then(|v| v.as_bool());
    let mut stream_b = b.stream().await;
    stream_b.next_within(5 * SECOND).await.unwrap();
    stream_a
        .until(5 * SECOND, |m| online_of_b(m) == Some(true))
        .await;

    drop(stream_b);
    drop(b);
    stream_a
        .until(5 * SECOND, |m| online_of_b(m) == Some(false))
        .await;

    let stopping = tokio::spawn(server.stop());
    let end = tokio::time::timeout(10 * SECOND, async {
        while stream_a.next().await.is_some() {}
    })
    .await;
    assert!(end.is_ok(), "the open stream ends when the server stops");
    stopping.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_keys_are_refused_when_used_expired_or_unknown() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let single = server.key(alice, false, false, "1h").await;

    let mut a = TestNode::connect(&server.url, "a").await;
    assert_eq!(a.register(Some(&single)).await["MachineAuthorized"], true);
    let mut b = TestNode::connect(&server.url, "b").await;
    assert_eq!(
        b.register(Some(&single)).await["Error"],
        "authkey already used"
    );

    let short = server.key(alice, true, false, "1s").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut c = TestNode::connect(&server.url, "c").await;
    assert_eq!(c.register(Some(&short)).await["Error"], "authkey expired");

    let mut d = TestNode::connect(&server.url, "d").await;
    assert_eq!(
        d.register(Some(
            "oxskey-auth-aaaaaaaaaaaa-bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
        ))
        .await["Error"],
        "invalid authkey"
    );
    assert_eq!(
        d.register(Some("tskey-garbage")).await["Error"],
        "invalid authkey"
    );

    let nodes = server.running().admin.list_nodes(None);
    assert_eq!(nodes.len(), 1, "refused registrations leave nothing behind");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_key_cannot_be_taken_over_by_another_machine() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let key = server.key(alice, true, false, "1h").await;
    let mut a = TestNode::connect(&server.url, "a").await;
    a.register(Some(&key)).await;

    // Another machine presents A's node key, with and without a valid auth key.
    let mut thief = TestNode::connect_as(
        &server.url,
        "thief",
        oxiscale_noise::StaticKey::generate(),
        a.node_key,
    )
    .await;
    assert_eq!(
        thief.register(None).await["Error"],
        "node key is registered to another machine"
    );
    assert_eq!(
        thief.register(Some(&key)).await["Error"],
        "node key is registered to another machine"
    );
    let (status, _) = thief
        .post_json(
            "/machine/map",
            thief.map_body(false, true, &["203.0.113.1:1"]),
        )
        .await;
    assert_eq!(
        status, 401,
        "map requests for another machine's node are refused"
    );
    let node = &server.running().admin.list_nodes(None)[0];
    assert!(
        node.endpoints.is_empty(),
        "the refused update changed nothing"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_nodes_addresses_and_keys() {
    let mut server = TestServer::start().await;
    let alice = server.user("alice").await;
    let key = server.key(alice, false, false, "1h").await;
    let machine = oxiscale_noise::StaticKey::from_bytes(rand::random());
    let node_key = NodePublic(rand::random());
    let mut a = TestNode::connect_as(&server.url, "a", machine.clone(), node_key).await;
    a.register(Some(&key)).await;
    let before = server.running().admin.list_nodes(None);

    server.restart().await;
    let after = server.running().admin.list_nodes(None);
    assert_eq!(before[0].id, after[0].id);
    assert_eq!(before[0].ip_addresses, after[0].ip_addresses);
    assert_eq!(before[0].node_key, after[0].node_key);

    // A restarted client re-registers with its saved node key and no auth key.
    let mut again = TestNode::connect_as(&server.url, "a", machine.clone(), node_key).await;
    let reg = again.register(None).await;
    assert_eq!(reg["MachineAuthorized"], true, "{reg}");
    let first = again.stream().await.next_within(5 * SECOND).await.unwrap();
    assert_eq!(
        first["Node"]["Addresses"][0],
        format!("{}/32", before[0].ip_addresses[0])
    );

    // A new user gets id 2 after a restart, never a reused one.
    let bob = server.user("bob").await;
    assert_eq!(bob, 2);

    // The machine lost its state: a fresh node key with a new key of alice's gets the same
    // node back (found by machine key, an index rebuilt at start); with bob's key it is a
    // second node.
    let alice_again = server.key(alice, false, false, "1h").await;
    let mut wiped = TestNode::connect_as(
        &server.url,
        "a",
        machine.clone(),
        NodePublic(rand::random()),
    )
    .await;
    let reg = wiped.register(Some(&alice_again)).await;
    assert_eq!(reg["MachineAuthorized"], true, "{reg}");
    let nodes = server.running().admin.list_nodes(None);
    assert_eq!(nodes.len(), 1, "{nodes:?}");
    assert_eq!(nodes[0].id, before[0].id);
    assert_eq!(nodes[0].ip_addresses, before[0].ip_addresses);
    assert_ne!(nodes[0].node_key, before[0].node_key);
    let bob_key = server.key(bob, false, false, "1h").await;
    let mut as_bob =
        TestNode::connect_as(&server.url, "a", machine, NodePublic(rand::random())).await;
    let reg = as_bob.register(Some(&bob_key)).await;
    assert_eq!(reg["MachineAuthorized"], true, "{reg}");
    let nodes = server.running().admin.list_nodes(None);
    assert_eq!(nodes.len(), 2, "{nodes:?}");
    assert!(nodes.iter().any(|n| n.id != before[0].id));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_expires_the_node_and_interactive_login_waits_for_approval() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let key = server.key(alice, true, false, "1h").await;
    let mut a = TestNode::connect(&server.url, "a").await;
    a.register(Some(&key)).await;

    let mut logout = a.register_body(None);
    logout["Expiry"] = json!("1970-01-01T00:02:03Z");
    let (_, resp) = a.post_json("/machine/register", logout).await;
    assert_eq!(resp["NodeKeyExpired"], true, "{resp}");
    assert!(server.running().admin.list_nodes(None)[0].expired);

    // No credentials: an AuthURL, then a Followup that completes when an admin approves.
    let mut b = TestNode::connect(&server.url, "b").await;
    let first = b.register(None).await;
    let url = first["AuthURL"].as_str().unwrap().to_owned();
    assert!(
        url.starts_with(&format!("{}/register/oxsreq-", server.url)),
        "{url}"
    );
    let mut followup = b.register_body(None);
    followup["Followup"] = json!(url);
    let auth_id = url.rsplit('/').next().unwrap().to_owned();
    let admin = server.running().admin.clone();
    let approve = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        admin
            .complete_registration(oxiscale::admin::CompleteRegistration {
                auth_id,
                user: alice,
            })
            .await
            .unwrap()
    });
    let (_, done) = b.post_json("/machine/register", followup).await;
    assert_eq!(done["MachineAuthorized"], true, "{done}");
    assert_eq!(approve.await.unwrap().given_name, "b");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_clients_get_a_clear_refusal() {
    let server = TestServer::start().await;
    let mut a = TestNode::connect(&server.url, "a").await;
    let mut body = a.register_body(None);
    body["Version"] = json!(90);
    let (_, resp) = a.post_json("/machine/register", body).await;
    assert!(
        resp["Error"].as_str().unwrap().contains("too old"),
        "{resp}"
    );
    server.stop().await;
}

/// Garbage on one connection closes that connection only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_closes_only_the_offending_connection() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let key = server.key(alice, true, false, "1h").await;
    let mut a = TestNode::connect(&server.url, "a").await;
    a.register(Some(&key)).await;
    let mut stream = a.stream().await;
    stream.next_within(5 * SECOND).await.unwrap();
    let addr = server.running().http_addr;

    // 1. Garbage instead of a handshake: refused with 400 before any upgrade.
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"POST /ts2021 HTTP/1.1\r\nHost: x\r\nUpgrade: tailscale-control-protocol\r\nConnection: upgrade\r\nX-Tailscale-Handshake: bm90LWEtaGFuZHNoYWtl\r\nContent-Length: 0\r\n\r\n").await.unwrap();
    let mut head = vec![0u8; 64];
    let n = s.read(&mut head).await.unwrap();
    assert!(String::from_utf8_lossy(&head[..n]).starts_with("HTTP/1.1 400"));

    // 2. A completed handshake, then bytes that are not Noise records: the server drops
    //    that connection (we see EOF).
    let server_pub = oxiscale_noise::client::fetch_server_key(&server.url)
        .await
        .unwrap();
    let (mut noise, _) = oxiscale_noise::client::connect_noise(
        &server.url,
        &oxiscale_noise::StaticKey::generate(),
        &server_pub,
        130,
    )
    .await
    .unwrap();
    noise
        .get_mut()
        .write_all(&[0x04, 0x10, 0x00])
        .await
        .unwrap(); // a record header claiming 4096 bytes
    noise.get_mut().write_all(&[0xAB; 4096]).await.unwrap();
    let mut sink = Vec::new();
    let closed = tokio::time::timeout(5 * SECOND, noise.get_mut().read_to_end(&mut sink)).await;
    assert!(
        closed.is_ok(),
        "the server closes a connection whose records do not decrypt"
    );

    // 3. Invalid JSON and an unknown node key over a good connection: errors, not crashes.
    let mut c = TestNode::connect(&server.url, "c").await;
    let (status, _) = c
        .post_json("/machine/register", json!("not a register request"))
        .await;
    assert_eq!(status, 400);
    let (status, _) = c
        .post_json("/machine/map", c.map_body(true, false, &[]))
        .await;
    assert_eq!(status, 404, "unknown node key");
    let resp = c
        .post("/machine/register", json!({"NodeKey": "x".repeat(2 << 20)}))
        .await;
    assert_eq!(resp.status(), 413, "oversized bodies are refused");

    // 4. Raw garbage on an upgraded socket.
    let mut raw = tokio::net::TcpStream::connect(addr).await.unwrap();
    raw.write_all(b"POST /ts2021 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n\xff\xff\xff")
        .await
        .unwrap();
    let _ = raw.read(&mut head).await;

    // The healthy node is unaffected: its updates still flow and its stream stays open.
    assert_eq!(a.lite_update(&["192.0.2.9:1"]).await, 200);
    let mut d = TestNode::connect(&server.url, "d").await;
    d.register(Some(&key)).await;
    let msg = stream
        .until(5 * SECOND, |m| m.get("PeersChanged").is_some())
        .await;
    assert_eq!(msg["PeersChanged"][0]["Name"], "d.tail.test.");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_are_unique_and_renames_reach_peers() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let key = server.key(alice, true, false, "1h").await;
    let mut a = TestNode::connect(&server.url, "Joe's Mac mini").await;
    a.register(Some(&key)).await;
    let mut b = TestNode::connect(&server.url, "Joe's Mac mini").await;
    b.register(Some(&key)).await;
    let names: Vec<String> = server
        .running()
        .admin
        .list_nodes(None)
        .into_iter()
        .map(|n| n.given_name)
        .collect();
    assert_eq!(names, vec!["joes-mac-mini", "joes-mac-mini-1"]);

    let mut stream_a = a.stream().await;
    stream_a.next_within(5 * SECOND).await.unwrap();
    let b_id = server.running().admin.list_nodes(None)[1].id;
    assert!(
        server
            .running()
            .admin
            .rename_node(b_id, "Bad Name".into())
            .await
            .is_err()
    );
    server
        .running()
        .admin
        .rename_node(b_id, "build-box".into())
        .await
        .unwrap();
    // (b's registration may still arrive as a delta after a's full map: it repeats what
    // the full map had, which clients accept.)
    let renamed = stream_a
        .until(5 * SECOND, |m| {
            m["PeersChanged"]
                .as_array()
                .is_some_and(|p| p.iter().any(|n| n["ID"] == b_id))
                && m["PeersChanged"][0]["Name"] != "joes-mac-mini-1.tail.test."
        })
        .await;
    assert_eq!(renamed["PeersChanged"][0]["Name"], "build-box.tail.test.");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_key_rotation_moves_the_node_and_tells_peers() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let key = server.key(alice, true, false, "1h").await;
    let mut a = TestNode::connect(&server.url, "a").await;
    a.register(Some(&key)).await;
    let mut b = TestNode::connect(&server.url, "b").await;
    b.register(Some(&key)).await;
    let mut stream_b = b.stream().await;
    stream_b.next_within(5 * SECOND).await.unwrap();
    let before = server.running().admin.list_nodes(None)[0].clone();

    // Seamless renewal: the old key is still valid, so no credentials are needed.
    let new_key = NodePublic(rand::random());
    let mut body = a.register_body(None);
    body["OldNodeKey"] = json!(a.node_key.to_string());
    body["NodeKey"] = json!(new_key.to_string());
    let (_, resp) = a.post_json("/machine/register", body).await;
    assert_eq!(resp["MachineAuthorized"], true, "{resp}");

    let after = server.running().admin.list_nodes(None)[0].clone();
    assert_eq!(
        (after.id, &after.ip_addresses),
        (before.id, &before.ip_addresses)
    );
    assert_eq!(after.node_key, new_key.to_string());
    let seen = stream_b
        .until(5 * SECOND, |m| {
            m["PeersChanged"]
                .as_array()
                .is_some_and(|p| p.iter().any(|n| n["Key"] == new_key.to_string()))
        })
        .await;
    assert_eq!(seen["PeersChanged"][0]["ID"], before.id);

    // The old key is gone: a map request with it is refused.
    let (status, _) = a
        .post_json("/machine/map", a.map_body(false, true, &["192.0.2.5:1"]))
        .await;
    assert_eq!(status, 404, "the old node key no longer names a node");
    server.stop().await;
}

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
