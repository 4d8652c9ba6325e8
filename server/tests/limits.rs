//! Bounds on what a client sends over the control protocol (README, "Limits on what
//! clients send").

mod common;

use common::{TestNode, TestServer};
use serde_json::json;

/// A node may not grow its peers' maps: a Hostinfo over 32 KiB or too many endpoints is
/// refused whole (the bound named), in registration and in map requests, and nothing of
/// it is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_hostinfo_and_endpoints_are_refused_and_not_stored() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let key = server.key(alice, true, false, "1h").await;

    let mut big = TestNode::connect(&server.url, "big").await;
    let mut body = big.register_body(Some(&key));
    body["Hostinfo"]["Padding"] = json!("x".repeat(100_000));
    let (status, answer) = big.post_json("/machine/register", body).await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer.to_string().contains("32768"), "{answer}");
    assert!(
        server.running().admin.list_nodes(None).is_empty(),
        "nothing registered"
    );

    let mut a = TestNode::connect(&server.url, "a").await;
    a.register(Some(&key)).await;
    let id = server.node_id("a");
    let mut body = a.map_body(false, true, &["192.0.2.1:41641"]);
    body["Hostinfo"]["Padding"] = json!("x".repeat(100_000));
    assert_eq!(a.post_json("/machine/map", body).await.0, 400);
    let many: Vec<String> = (0..65).map(|i| format!("192.0.2.1:{}", 1000 + i)).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    assert_eq!(a.lite_update(&many).await, 400);
    let view = server.running().admin.node(id).unwrap();
    assert!(view.endpoints.is_empty(), "{:?}", view.endpoints);

    // Within the bounds, the same request is taken.
    assert_eq!(a.lite_update(&["192.0.2.1:41641"]).await, 200);
    let view = server.running().admin.node(id).unwrap();
    assert_eq!(view.endpoints, vec!["192.0.2.1:41641".to_string()]);
    server.stop().await;
}

/// `oxiscale serve` started with a soft limit of 256 open files (a common service default
/// is 1,024) raises it to the hard limit: idle connections must not exhaust it first.
#[test]
fn serve_raises_its_open_file_limit_to_the_hard_limit() {
    let dir = std::env::temp_dir().join(format!("oxiscale-nofile-{}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut child = std::process::Command::new("sh")
        .args(["-c", "ulimit -Sn 256 && exec \"$0\" serve"])
        .arg(env!("CARGO_BIN_EXE_oxiscale"))
        .env("OXISCALE_DATA_DIR", &dir)
        .env("OXISCALE_LISTEN_ADDR", "127.0.0.1:0")
        .env("OXISCALE_SERVER_URL", "http://127.0.0.1:0")
        .env("OXISCALE_DERP_SERVER_STUN_LISTEN_ADDR", "127.0.0.1:0")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let open_files = |which: usize| -> Option<String> {
        let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id())).ok()?;
        let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
        line.split_whitespace().nth(which).map(str::to_owned)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut seen = None;
    while std::time::Instant::now() < deadline {
        seen = open_files(3).zip(open_files(4));
        if seen.as_ref().is_some_and(|(soft, hard)| soft == hard) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    child.kill().ok();
    child.wait().ok();
    std::fs::remove_dir_all(&dir).ok();
    let (soft, hard) = seen.expect("the server's limits were readable");
    assert_eq!(soft, hard, "soft limit raised to the hard one");
    assert_ne!(soft, "256");
}
