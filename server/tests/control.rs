//! The control protocol end to end in-process: the real server on loopback, clients that
//! speak ts2021 (Noise + HTTP/2) to it. Real Tailscale clients are exercised in end2end/.

mod common;

use std::time::Duration;

use common::{SECOND, TestNode, TestServer, ids};
use oxiscale_tailcfg::NodePublic;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
