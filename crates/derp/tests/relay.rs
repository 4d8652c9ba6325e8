//! End-to-end relay tests: a hyper server on 127.0.0.1:0 wired to the HTTP edge, real
//! TCP clients from `oxiscale_derp::client`.

use std::collections::HashSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use oxiscale_derp::frame::{Frame, PeerGoneReason, SERVER_KEY_MAGIC, frame_type};
use oxiscale_derp::server::NOT_ADMITTED_MESSAGE;
use oxiscale_derp::{ClientError, DerpClient, DerpConfig, DerpServer, KeyPair};
use oxiscale_tailcfg::NodePublic;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const WAIT: Duration = Duration::from_secs(5);

struct Relay {
    server: Arc<DerpServer>,
    addr: SocketAddr,
}

impl Relay {
    fn url(&self) -> String {
        format!("http://{}/derp", self.addr)
    }
}

async fn route(
    server: Arc<DerpServer>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(match req.uri().path() {
        "/derp" => oxiscale_derp::handle_derp(server, req).await,
        "/derp/probe" | "/derp/latency-check" => oxiscale_derp::probe_response(),
        "/generate_204" => oxiscale_derp::generate_204(&req),
        _ => Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(Full::new(Bytes::new()))
            .unwrap(),
    })
}

async fn start_relay_with(admit: oxiscale_derp::AdmitFn, config: DerpConfig) -> Relay {
    let server = Arc::new(DerpServer::with_config(
        KeyPair::generate().private_bytes(),
        admit,
        config,
    ));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accept_server = server.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let server = accept_server.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| route(server.clone(), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    Relay { server, addr }
}

async fn start_relay() -> Relay {
    start_relay_with(Arc::new(|_| true), DerpConfig::default()).await
}

async fn connect(relay: &Relay) -> DerpClient {
    DerpClient::connect(&relay.url(), KeyPair::generate().private_bytes())
        .await
        .unwrap()
}

/// The next frame that is not a KeepAlive, within [`WAIT`].
async fn next(client: &mut DerpClient) -> Result<Frame, ClientError> {
    loop {
        match tokio::time::timeout(WAIT, client.recv())
            .await
            .expect("a frame within the wait")
        {
            Ok(Frame::KeepAlive) => continue,
            other => return other,
        }
    }
}

async fn expect_packet(client: &mut DerpClient, from: NodePublic, payload: &[u8]) {
    match next(client).await.unwrap() {
        Frame::RecvPacket { src, packet } => {
            assert_eq!(src, from);
            assert_eq!(&packet[..], payload);
        }
        other => panic!("expected RecvPacket, got {other:?}"),
    }
}

/// Waits until the server closes `client` (EOF or reset), failing after [`WAIT`].
async fn expect_closed(client: &mut DerpClient) {
    loop {
        match next(client).await {
            Err(ClientError::Closed | ClientError::Io(_)) => return,
            Err(other) => panic!("expected close, got error {other}"),
            Ok(_) => continue,
        }
    }
}

async fn wait_until(mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not reached in time"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn two_clients_exchange_packets_both_ways() {
    let relay = start_relay().await;
    let mut a = connect(&relay).await;
    let mut b = connect(&relay).await;
    assert_eq!(a.server_key(), relay.server.public_key());
    a.note_preferred(true).await.unwrap();

    a.send_packet(&b.public_key(), b"hello from a")
        .await
        .unwrap();
    expect_packet(&mut b, a.public_key(), b"hello from a").await;
    b.send_packet(&a.public_key(), b"hello from b")
        .await
        .unwrap();
    expect_packet(&mut a, b.public_key(), b"hello from b").await;

    // A maximal 64 KiB packet passes intact.
    let big: Vec<u8> = (0..65536u32).map(|i| (i % 251) as u8).collect();
    a.send_packet(&b.public_key(), &big).await.unwrap();
    expect_packet(&mut b, a.public_key(), &big).await;
    assert!(matches!(
        a.send_packet(&b.public_key(), &[0; 65537]).await,
        Err(ClientError::PacketTooLarge(65537))
    ));

    let stats = relay.server.stats();
    assert_eq!(stats.connections, 2);
    assert_eq!(stats.accepted_total, 2);
    assert_eq!(stats.packets_forwarded, 3);
    assert_eq!(stats.bytes_forwarded, 12 + 12 + 65536);
}

#[tokio::test]
async fn unadmitted_key_is_refused_and_admitted_key_works() {
    let allowed = KeyPair::generate();
    let allowed_set: HashSet<NodePublic> = [allowed.public()].into();
    let relay = start_relay_with(
        Arc::new(move |k| allowed_set.contains(k)),
        DerpConfig::default(),
    )
    .await;

    let refused = DerpClient::connect(&relay.url(), KeyPair::generate().private_bytes()).await;
    match refused {
        Err(ClientError::Refused(reason)) => assert_eq!(reason, NOT_ADMITTED_MESSAGE),
        Err(other) => panic!("expected Refused, got {other}"),
        Ok(_) => panic!("unadmitted key was served"),
    }

    let mut ok = DerpClient::connect(&relay.url(), allowed.private_bytes())
        .await
        .unwrap();
    ok.send_packet(&allowed.public(), b"to myself")
        .await
        .unwrap();
    expect_packet(&mut ok, allowed.public(), b"to myself").await;
    let stats = relay.server.stats();
    assert_eq!(
        (stats.refused_total, stats.accepted_total, stats.connections),
        (1, 1, 1)
    );
}

#[tokio::test]
async fn unknown_destination_gets_rate_limited_peer_gone_not_here() {
    let relay = start_relay().await;
    let mut a = connect(&relay).await;
    let nobody = KeyPair::generate().public();
    for _ in 0..10 {
        a.send_packet(&nobody, b"anyone?").await.unwrap();
    }
    // Pong follows the PeerGones in the same control queue, so it marks their end.
    a.ping(*b"sentinel").await.unwrap();
    let mut peer_gones = 0;
    loop {
        match next(&mut a).await.unwrap() {
            Frame::PeerGone { peer, reason } => {
                assert_eq!((peer, reason), (nobody, PeerGoneReason::NotHere));
                peer_gones += 1;
            }
            Frame::Pong { data } => {
                assert_eq!(&data, b"sentinel");
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(peer_gones, 3, "burst of 3, then limited to 1/s");
    assert_eq!(relay.server.stats().packets_dropped_not_here, 10);
}

#[tokio::test]
async fn oversized_frame_closes_only_that_client() {
    let relay = start_relay().await;
    let mut a = connect(&relay).await;
    let mut b = connect(&relay).await;
    let mut c = connect(&relay).await;
    let c_key = c.public_key();

    // A SendPacket header claiming 2 MiB.
    let mut header = vec![frame_type::SEND_PACKET];
    header.extend_from_slice(&(2u32 << 20).to_be_bytes());
    c.write_raw(&header).await.unwrap();
    expect_closed(&mut c).await;
    wait_until(|| !relay.server.is_connected(&c_key)).await;

    a.send_packet(&b.public_key(), b"still here").await.unwrap();
    expect_packet(&mut b, a.public_key(), b"still here").await;
    b.send_packet(&a.public_key(), b"me too").await.unwrap();
    expect_packet(&mut a, b.public_key(), b"me too").await;
    assert_eq!(relay.server.stats().connections, 2);
}

#[tokio::test]
async fn oversized_packet_within_frame_limit_also_closes() {
    let relay = start_relay().await;
    let mut c = connect(&relay).await;
    let mut frame = vec![frame_type::SEND_PACKET];
    frame.extend_from_slice(&((32 + 65537) as u32).to_be_bytes());
    c.write_raw(&frame).await.unwrap();
    expect_closed(&mut c).await;
}

/// Upgrades a raw TCP connection by hand; returns it positioned after the 101 head.
async fn raw_upgrade(relay: &Relay) -> (TcpStream, Vec<u8>) {
    let mut s = TcpStream::connect(relay.addr).await.unwrap();
    s.write_all(
        b"GET /derp HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: DERP\r\n\r\n",
    )
    .await
    .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let end = loop {
        if let Some(p) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        let n = tokio::time::timeout(WAIT, s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed during response head");
        got.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&got[..end]).to_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: derp"), "{head}");
    assert!(head.contains("derp-version: 2"), "{head}");
    let server_hex = hex::encode(relay.server.public_key().0);
    assert!(
        head.contains(&format!("derp-public-key: {server_hex}")),
        "{head}"
    );
    (s, got[end..].to_vec())
}

/// Reads to EOF (failing after [`WAIT`]); returns everything read.
async fn read_to_close(s: &mut TcpStream, mut got: Vec<u8>) -> Vec<u8> {
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(WAIT, s.read(&mut buf))
            .await
            .expect("server closes the connection")
        {
            Ok(0) | Err(_) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn garbage_after_upgrade_closes_that_client() {
    let relay = start_relay().await;
    let mut a = connect(&relay).await;

    // Garbage instead of ClientInfo: "hello..." reads as type 'h' with a ~1.7 GB length.
    let (mut s, rest) = raw_upgrade(&relay).await;
    s.write_all(b"hello, this is not DERP at all\r\n")
        .await
        .unwrap();
    let got = read_to_close(&mut s, rest).await;
    // The server spoke first (ServerKey) and then hung up.
    assert_eq!(got.len(), 45);
    assert_eq!(got[0], frame_type::SERVER_KEY);
    assert_eq!(&got[5..13], &SERVER_KEY_MAGIC);

    // A well-formed but wrong first frame is refused the same way.
    let (mut s, rest) = raw_upgrade(&relay).await;
    s.write_all(&Frame::Ping { data: [1; 8] }.to_bytes())
        .await
        .unwrap();
    assert_eq!(read_to_close(&mut s, rest).await.len(), 45);

    // ClientInfo with a box that does not open.
    let (mut s, rest) = raw_upgrade(&relay).await;
    let bogus = Frame::ClientInfo {
        key: KeyPair::generate().public(),
        sealed: Bytes::from(vec![0u8; 80]),
    };
    s.write_all(&bogus.to_bytes()).await.unwrap();
    assert_eq!(read_to_close(&mut s, rest).await.len(), 45);

    // Garbage from an already admitted client.
    let mut b = connect(&relay).await;
    b.write_raw(b"hello, this is not DERP at all\r\n")
        .await
        .unwrap();
    expect_closed(&mut b).await;

    a.ping(*b"survivor").await.unwrap();
    assert_eq!(
        next(&mut a).await.unwrap(),
        Frame::Pong { data: *b"survivor" }
    );
    assert_eq!(relay.server.stats().accepted_total, 2);
}

#[tokio::test]
async fn disconnect_closes_the_client_and_tells_its_peers() {
    let relay = start_relay().await;
    let mut a = connect(&relay).await;
    let mut b = connect(&relay).await;
    let a_key = a.public_key();
    a.send_packet(&b.public_key(), b"route via derp")
        .await
        .unwrap();
    expect_packet(&mut b, a_key, b"route via derp").await;

    assert!(relay.server.disconnect(&a_key));
    expect_closed(&mut a).await;
    assert_eq!(
        next(&mut b).await.unwrap(),
        Frame::PeerGone {
            peer: a_key,
            reason: PeerGoneReason::Disconnected
        }
    );
    assert!(!relay.server.is_connected(&a_key));
    assert!(!relay.server.disconnect(&a_key));
    assert_eq!(relay.server.stats().connections, 1);
}

#[tokio::test]
async fn client_leaving_sends_peer_gone_to_those_it_sent_to() {
    let relay = start_relay().await;
    let mut a = connect(&relay).await;
    let mut b = connect(&relay).await;
    let a_key = a.public_key();
    a.send_packet(&b.public_key(), b"x").await.unwrap();
    expect_packet(&mut b, a_key, b"x").await;
    drop(a);
    assert_eq!(
        next(&mut b).await.unwrap(),
        Frame::PeerGone {
            peer: a_key,
            reason: PeerGoneReason::Disconnected
        }
    );
}

#[tokio::test]
async fn ping_gets_pong_with_the_same_bytes() {
    let relay = start_relay().await;
    let mut a = connect(&relay).await;
    for data in [*b"12345678", [0xff; 8]] {
        a.ping(data).await.unwrap();
        assert_eq!(next(&mut a).await.unwrap(), Frame::Pong { data });
    }
}

#[tokio::test]
async fn newest_connection_for_a_key_wins() {
    let relay = start_relay().await;
    let key = KeyPair::generate();
    let mut old = DerpClient::connect(&relay.url(), key.private_bytes())
        .await
        .unwrap();
    let mut new = DerpClient::connect(&relay.url(), key.private_bytes())
        .await
        .unwrap();
    expect_closed(&mut old).await;
    let mut b = connect(&relay).await;
    b.send_packet(&key.public(), b"for the newest")
        .await
        .unwrap();
    expect_packet(&mut new, b.public_key(), b"for the newest").await;
    // The replaced connection must not announce the key as gone.
    b.ping(*b"nogone!!").await.unwrap();
    assert_eq!(
        next(&mut b).await.unwrap(),
        Frame::Pong { data: *b"nogone!!" }
    );
    assert_eq!(relay.server.stats().connections, 2);
}

#[tokio::test]
async fn keep_alive_is_sent_when_idle() {
    let config = DerpConfig {
        keep_alive: Duration::from_millis(100),
        ..DerpConfig::default()
    };
    let relay = start_relay_with(Arc::new(|_| true), config).await;
    let mut a = connect(&relay).await;
    let frame = tokio::time::timeout(WAIT, a.recv()).await.unwrap().unwrap();
    assert_eq!(frame, Frame::KeepAlive);
}

#[tokio::test]
async fn slow_reader_does_not_block_others() {
    let relay = start_relay().await;
    let mut a = connect(&relay).await;
    let slow = connect(&relay).await; // never reads
    let mut c = connect(&relay).await;
    let packet = vec![7u8; 60_000];
    // Far more than the slow client's queue plus socket buffers can hold.
    for _ in 0..400 {
        a.send_packet(&slow.public_key(), &packet).await.unwrap();
    }
    a.send_packet(&c.public_key(), b"not stuck").await.unwrap();
    expect_packet(&mut c, a.public_key(), b"not stuck").await;
    assert!(relay.server.stats().packets_dropped_queue_full > 0);
    drop(slow);
}

#[tokio::test]
async fn websocket_derp_round_trip() {
    let relay = start_relay().await;
    let mut ws = DerpClient::connect_websocket(&relay.url(), KeyPair::generate().private_bytes())
        .await
        .unwrap();
    let mut ws2 = DerpClient::connect_websocket(&relay.url(), KeyPair::generate().private_bytes())
        .await
        .unwrap();
    let mut plain = connect(&relay).await;
    assert_eq!(ws.server_key(), relay.server.public_key());

    ws.send_packet(&plain.public_key(), b"ws to plain")
        .await
        .unwrap();
    expect_packet(&mut plain, ws.public_key(), b"ws to plain").await;
    plain
        .send_packet(&ws.public_key(), b"plain to ws")
        .await
        .unwrap();
    expect_packet(&mut ws, plain.public_key(), b"plain to ws").await;
    let big = vec![3u8; 65536];
    ws.send_packet(&ws2.public_key(), &big).await.unwrap();
    expect_packet(&mut ws2, ws.public_key(), &big).await;
    ws.ping(*b"wsping!!").await.unwrap();
    assert_eq!(
        next(&mut ws).await.unwrap(),
        Frame::Pong { data: *b"wsping!!" }
    );
}

/// One raw HTTP/1.1 exchange; returns the lowercased response text.
async fn http_exchange(relay: &Relay, request: &str) -> String {
    let mut s = TcpStream::connect(relay.addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let got = read_to_close(&mut s, Vec::new()).await;
    String::from_utf8_lossy(&got).to_lowercase()
}

#[tokio::test]
async fn generate_204_answers_the_challenge() {
    let relay = start_relay().await;
    let resp = http_exchange(
        &relay,
        "GET /generate_204 HTTP/1.1\r\nHost: x\r\nX-Tailscale-Challenge: ts_Chal-1.2:3\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("http/1.1 204"), "{resp}");
    assert!(
        resp.contains("x-tailscale-response: response ts_chal-1.2:3"),
        "{resp}"
    );

    let resp = http_exchange(
        &relay,
        "GET /generate_204 HTTP/1.1\r\nHost: x\r\nX-Tailscale-Challenge: bad value!\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("http/1.1 204"), "{resp}");
    assert!(!resp.contains("x-tailscale-response"), "{resp}");
}

#[tokio::test]
async fn plain_get_to_derp_is_426_and_probe_is_200() {
    let relay = start_relay().await;
    let resp = http_exchange(
        &relay,
        "GET /derp HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("http/1.1 426"), "{resp}");
    assert!(resp.contains("derp requires connection upgrade"), "{resp}");
    match DerpClient::connect(&format!("http://{}/nothing", relay.addr), [1; 32]).await {
        Err(ClientError::HttpStatus { status: 404, .. }) => {}
        Err(other) => panic!("expected 404, got {other}"),
        Ok(_) => panic!("connected to a non-DERP path"),
    }

    for path in ["/derp/probe", "/derp/latency-check"] {
        let resp = http_exchange(
            &relay,
            &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert!(resp.starts_with("http/1.1 200"), "{resp}");
        assert!(resp.contains("access-control-allow-origin: *"), "{resp}");
    }
}

#[tokio::test]
async fn key_revoked_during_the_handshake_is_refused() {
    // Admitted at the first check, revoked by the time the client is registered.
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = calls.clone();
    let admit =
        Arc::new(move |_: &NodePublic| seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0);
    let relay = start_relay_with(admit, DerpConfig::default()).await;
    let result = DerpClient::connect(&relay.url(), KeyPair::generate().private_bytes()).await;
    assert!(
        matches!(result, Err(ClientError::Refused(_))),
        "{:?}",
        result.err()
    );
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
    let stats = relay.server.stats();
    assert_eq!(
        (stats.connections, stats.accepted_total, stats.refused_total),
        (0, 0, 1)
    );
}
