//! Bounds on what a client sends and holds: control requests, connections (README, "Limits on what
//! clients send").

mod common;

use std::time::{Duration, Instant};

use common::{TestNode, TestServer};
use oxiscale::config::HumanDuration;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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

async fn closed_within(stream: &mut tokio::net::TcpStream, within: Duration) -> Vec<u8> {
    let mut received = Vec::new();
    tokio::time::timeout(within, async {
        let mut buf = [0u8; 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("the server closes the connection in time");
    received
}

/// A connection that never completes a request header (silent, or one header line and
/// then nothing) is closed after `limits.header_timeout`, and so is an HTTP/1 connection
/// kept alive after its request. Before, all three were held forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_slow_and_idle_connections_are_closed() {
    let server = TestServer::start_with(|c| {
        c.limits.header_timeout = HumanDuration(Duration::from_secs(1));
    })
    .await;
    let addr = server.running().http_addr;

    let started = Instant::now();
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    assert!(
        closed_within(&mut silent, Duration::from_secs(10))
            .await
            .is_empty()
    );
    let answered = closed_within(&mut slow, Duration::from_secs(10)).await;
    assert!(
        !String::from_utf8_lossy(&answered).contains(" 200 "),
        "the unfinished request was not served"
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "closed after {waited:?}, before the timeout"
    );

    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let n = idle.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let served = Instant::now();
    closed_within(&mut idle, Duration::from_secs(10)).await;
    assert!(
        served.elapsed() >= Duration::from_millis(900),
        "closed after {:?}",
        served.elapsed()
    );
    server.stop().await;
}

/// One address holds at most `limits.connections_per_address` connections: the one over
/// it is closed at once, others are served meanwhile, and a place frees when one closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_address_are_bounded() {
    let server = TestServer::start_with(|c| c.limits.connections_per_address = 3).await;
    let addr = server.running().http_addr;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(addr).await.unwrap());
    }
    // The server counts a connection once it has accepted it; give it the moment.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut over = TcpStream::connect(addr).await.unwrap();
    let refused = Instant::now();
    over.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .ok();
    assert!(
        closed_within(&mut over, Duration::from_secs(5))
            .await
            .is_empty()
    );
    assert!(refused.elapsed() < Duration::from_secs(5));

    let health = |addr| async move {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let answer = closed_within(&mut s, Duration::from_secs(5)).await;
        String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200")
    };
    assert!(!health(addr).await, "a fourth connection is not served");
    held.pop();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(health(addr).await, "a freed place is taken again");
    server.stop().await;
}

/// A control connection (after its Noise handshake) that sends no request is closed after
/// the header timeout: a handshake alone holds nothing. One that made a request and then
/// has none in progress is closed after the idle timeout; a map stream in progress keeps
/// its connection past it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_idle_control_connections_are_closed() {
    let server = TestServer::start_with(|c| {
        c.limits.header_timeout = HumanDuration(Duration::from_secs(1));
        c.limits.idle_timeout = HumanDuration(Duration::from_secs(2));
    })
    .await;
    let alice = server.user("alice").await;
    let key = server.key(alice, true, false, "1h").await;

    let silent = TestNode::connect(&server.url, "silent").await;
    let ended = tokio::time::timeout(Duration::from_secs(10), silent.conn.driver)
        .await
        .expect("the server closes a silent control connection");
    assert!(ended.is_ok());

    let mut quiet = TestNode::connect(&server.url, "quiet").await;
    quiet.register(Some(&key)).await;
    let registered = Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(10), quiet.conn.driver)
        .await
        .expect("the server closes an idle control connection");
    assert!(ended.is_ok());
    assert!(
        registered.elapsed() >= Duration::from_millis(1900),
        "closed after {:?}, before the idle timeout",
        registered.elapsed()
    );

    let mut streaming = TestNode::connect(&server.url, "streaming").await;
    streaming.register(Some(&key)).await;
    let mut stream = streaming.stream().await;
    assert!(stream.next().await.is_some(), "the first map arrives");
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        !streaming.conn.driver.is_finished(),
        "a connection with its map stream open stays"
    );
    drop(stream);
    server.stop().await;
}
