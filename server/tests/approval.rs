//! Device approval (`node.approval_required`) over the control protocol: a new node is held,
//! nobody's peer and seeing none, until an administrator approves it; then both sides hear
//! of each other on the streams they have open.

mod common;

use std::time::Duration;

use common::{MapStream, SECOND, TestNode, TestServer};
use serde_json::Value;

/// The ids of the nodes a map message adds or changes, whole or as a patch.
fn mentioned(m: &Value) -> Vec<u64> {
    let nodes = ["Peers", "PeersChanged"]
        .iter()
        .flat_map(|f| m[f].as_array().into_iter().flatten())
        .filter_map(|n| n["ID"].as_u64());
    let patches = m["PeersChangedPatch"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["NodeID"].as_u64());
    let online = m["OnlineChange"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(id, _)| id.parse().ok());
    nodes.chain(patches).chain(online).collect()
}

/// Every message the stream sends within `window` (the stream stays open).
async fn messages_within(stream: &mut MapStream, window: Duration) -> Vec<Value> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + window;
    while let Ok(next) = tokio::time::timeout_at(deadline, stream.next()).await {
        seen.push(next.expect("stream still open"));
    }
    seen
}

async fn approval_server() -> TestServer {
    TestServer::start_with(|c| c.node.approval_required = true).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_node_waits_for_approval_and_then_both_sides_hear_of_it() {
    let server = approval_server().await;
    let admin = &server.running().admin;
    let alice = server.user("alice").await;
    let key = server.key(alice, true, false, "1h").await;

    // A registers first and is approved before anyone else comes.
    let mut a = TestNode::connect(&server.url, "a").await;
    let reg = a.register(Some(&key)).await;
    assert_eq!(reg["MachineAuthorized"], false, "held: {reg}");
    assert_eq!(reg["Error"], "");
    let a_id = server.node_id("a");
    assert!(!admin.node(a_id).unwrap().approved);
    assert!(admin.approve_node(a_id).await.unwrap().approved);
    let mut stream_a = a.stream().await;
    let first_a = stream_a.next_within(5 * SECOND).await.unwrap();
    assert_eq!(first_a["Node"]["MachineAuthorized"], true);

    // B registers and is held.
    let mut b = TestNode::connect(&server.url, "b").await;
    let reg = b.register(Some(&key)).await;
    assert_eq!(reg["MachineAuthorized"], false, "held: {reg}");
    let b_id = server.node_id("b");
    assert!(!admin.node(b_id).unwrap().approved);

    // B may stream (its client stays connected and waits), but sees only itself.
    let mut stream_b = b.stream().await;
    let first_b = stream_b.next_within(5 * SECOND).await.unwrap();
    assert_eq!(first_b["Node"]["ID"], b_id);
    // `MachineAuthorized` is omitted when false, as Tailscale's JSON does.
    assert_ne!(first_b["Node"]["MachineAuthorized"], true, "{first_b}");
    assert!(first_b.get("Peers").is_none(), "no peers: {first_b}");
    assert_eq!(first_b["PacketFilter"], serde_json::json!([]), "drops all");
    // What B says about itself is taken and told to no one.
    assert_eq!(b.lite_update(&["192.0.2.2:41641"]).await, 200);

    // A never hears of B while B waits; B hears of no one.
    for m in messages_within(&mut stream_a, 2 * SECOND).await {
        assert!(!mentioned(&m).contains(&b_id), "A was told of B: {m}");
    }
    for m in messages_within(&mut stream_b, SECOND).await {
        assert!(mentioned(&m).is_empty(), "B was told of a peer: {m}");
    }
    assert!(
        admin
            .node(b_id)
            .unwrap()
            .endpoints
            .contains(&"192.0.2.2:41641".to_owned())
    );

    // Approved: A gets B as a new peer, B gets A and is told it is authorized.
    let view = admin.approve_node(b_id).await.unwrap();
    assert!(view.approved);
    let joined = stream_a
        .until(5 * SECOND, |m| mentioned(m).contains(&b_id))
        .await;
    let b_seen = joined["PeersChanged"]
        .as_array()
        .and_then(|p| p.iter().find(|n| n["ID"] == b_id))
        .unwrap_or_else(|| panic!("B whole in PeersChanged: {joined}"));
    assert_eq!(
        b_seen["Endpoints"],
        serde_json::json!(["192.0.2.2:41641"]),
        "with what it said while it waited"
    );
    let welcomed = stream_b
        .until(5 * SECOND, |m| mentioned(m).contains(&a_id))
        .await;
    assert_eq!(welcomed["Node"]["MachineAuthorized"], true, "{welcomed}");
    assert!(
        welcomed["PacketFilter"]
            .as_array()
            .is_some_and(|f| !f.is_empty()),
        "a filter that lets A in: {welcomed}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_setting_nodes_join_at_once() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let key = server.key(alice, true, false, "1h").await;
    let mut a = TestNode::connect(&server.url, "a").await;
    assert_eq!(a.register(Some(&key)).await["MachineAuthorized"], true);
    let mut stream_a = a.stream().await;
    stream_a.next_within(5 * SECOND).await.unwrap();
    let mut b = TestNode::connect(&server.url, "b").await;
    assert_eq!(b.register(Some(&key)).await["MachineAuthorized"], true);
    let (a_id, b_id) = (server.node_id("a"), server.node_id("b"));
    assert!(
        server
            .running()
            .admin
            .list_nodes(None)
            .iter()
            .all(|n| n.approved)
    );

    stream_a
        .until(5 * SECOND, |m| mentioned(m).contains(&b_id))
        .await;
    let first_b = b.stream().await.next_within(5 * SECOND).await.unwrap();
    assert_eq!(first_b["Node"]["MachineAuthorized"], true);
    assert_eq!(mentioned(&first_b), vec![a_id], "{first_b}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wait_and_the_approval_outlive_a_restart() {
    let mut server = approval_server().await;
    let alice = server.user("alice").await;
    let key = server.key(alice, true, false, "1h").await;
    let mut b = TestNode::connect(&server.url, "b").await;
    b.register(Some(&key)).await;
    let id = server.node_id("b");

    server.restart().await;
    assert!(!server.running().admin.node(id).unwrap().approved);
    server.running().admin.approve_node(id).await.unwrap();
    server.restart().await;
    assert!(server.running().admin.node(id).unwrap().approved);
    server.stop().await;
}

/// The CLI as an operator runs it, over the server's socket: `nodes list` says which node
/// waits, `nodes approve` lets it in, `-o json` carries `approved`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_lists_and_approves_waiting_nodes() {
    let server = approval_server().await;
    let alice = server.user("alice").await;
    let key = server.key(alice, true, false, "1h").await;
    let mut b = TestNode::connect(&server.url, "b").await;
    b.register(Some(&key)).await;
    let id = server.node_id("b");

    let cli = |args: Vec<String>| {
        let dir = server.dir.clone();
        tokio::task::spawn_blocking(move || {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_oxiscale"))
                .args(&args)
                .env("OXISCALE_DATA_DIR", &dir)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "oxiscale {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap()
        })
    };
    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();

    let table = cli(args(&["nodes", "list"])).await.unwrap();
    assert!(table.contains("Approval"), "{table}");
    assert!(table.contains("pending approval"), "{table}");
    let json: Value =
        serde_json::from_str(&cli(args(&["nodes", "list", "-o", "json"])).await.unwrap()).unwrap();
    assert_eq!(json[0]["approved"], false, "{json}");
    assert!(
        json[0].get("approval").is_none(),
        "the table's cell stays in the table"
    );

    let said = cli(args(&["nodes", "approve", "-i", &id.to_string()]))
        .await
        .unwrap();
    assert_eq!(said.trim(), "Node b approved");
    assert!(server.running().admin.node(id).unwrap().approved);
    let table = cli(args(&["nodes", "list"])).await.unwrap();
    assert!(!table.contains("pending"), "{table}");
    server.stop().await;
}
