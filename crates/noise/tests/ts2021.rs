//! End to end over loopback: a tiny hyper HTTP/1 server routes `/key` and `/ts2021` to this
//! crate, then serves HTTP/2 (an echo service) over each accepted Noise stream; clients
//! connect with `client::connect` (or lower-level pieces to misbehave on purpose).

use std::convert::Infallible;
use std::error::Error as StdError;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::{Bytes, BytesMut};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use oxiscale_noise::client::{CLIENT_VERSION, connect_noise};
use oxiscale_noise::handshake::{HEADER_LEN, MSG_ERROR, RESPONSE_LEN};
use oxiscale_noise::record::MSG_RECORD;
use oxiscale_noise::ws::WebSocketIo;
use oxiscale_noise::{
    ClientError, HandshakeError, Initiator, NoiseStream, ServerConfig, StaticKey, UpgradeError,
    connect, key_response, upgrade,
};
use oxiscale_tailcfg::MachinePublic;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const WAIT: Duration = Duration::from_secs(10);

/// What the test server observed, per connection.
#[derive(Debug)]
enum Event {
    Connected {
        machine: MachinePublic,
        version: u16,
    },
    /// HTTP/2 over Noise ended; `Err` carries the error and its whole source chain as text
    /// (h2 keeps only the text of I/O errors, so the record error's type is not recoverable).
    Closed(Result<(), String>),
    UpgradeFailed(UpgradeError),
}

struct TestServer {
    url: String,
    server_pub: MachinePublic,
    events: mpsc::UnboundedReceiver<Event>,
}

impl TestServer {
    async fn next_event(&mut self) -> Event {
        timeout(WAIT, self.events.recv())
            .await
            .expect("server event in time")
            .expect("server alive")
    }
}

fn error_chain(err: &(dyn StdError + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

async fn echo(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let path = req.uri().path().to_owned();
    let body = req.into_body().collect().await?.to_bytes();
    let mut res = Response::new(Full::new(body));
    res.headers_mut()
        .insert("x-path", path.parse().expect("path is a header value"));
    Ok(res)
}

async fn route(
    req: Request<Incoming>,
    cfg: Arc<ServerConfig>,
    events: mpsc::UnboundedSender<Event>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    match req.uri().path() {
        "/key" => {
            let body = serde_json::to_vec(&key_response(cfg.key.public())).expect("serializes");
            Ok(Response::new(Full::new(Bytes::from(body))))
        }
        "/ts2021" => {
            let up = upgrade(req, cfg);
            if let Some(pending) = up.connection {
                tokio::spawn(async move {
                    match pending.await {
                        Ok(conn) => {
                            let _ = events.send(Event::Connected {
                                machine: conn.machine,
                                version: conn.version,
                            });
                            let served =
                                hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                                    .serve_connection(TokioIo::new(conn.stream), service_fn(echo))
                                    .await;
                            let _ = events.send(Event::Closed(served.map_err(|e| error_chain(&e))));
                        }
                        Err(err) => {
                            let _ = events.send(Event::UpgradeFailed(err));
                        }
                    }
                });
            }
            Ok(up.response)
        }
        _ => {
            let mut res = Response::new(Full::new(Bytes::from_static(b"not found")));
            *res.status_mut() = StatusCode::NOT_FOUND;
            Ok(res)
        }
    }
}

async fn start_server(cfg: ServerConfig) -> TestServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server_pub = cfg.key.public();
    let cfg = Arc::new(cfg);
    let (tx, events) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let (cfg, tx) = (cfg.clone(), tx.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req| route(req, cfg.clone(), tx.clone()));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    TestServer {
        url: format!("http://{addr}"),
        server_pub,
        events,
    }
}

fn pattern(len: usize, seed: u8) -> Bytes {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect::<Vec<u8>>()
        .into()
}

async fn post<B>(
    send: &mut hyper::client::conn::http2::SendRequest<B>,
    path: &str,
    body: B,
) -> (StatusCode, String, Bytes)
where
    B: hyper::body::Body + 'static,
{
    send.ready().await.unwrap();
    let req = Request::post(format!("http://127.0.0.1{path}"))
        .body(body)
        .unwrap();
    let res = timeout(WAIT, send.send_request(req))
        .await
        .unwrap()
        .unwrap();
    let status = res.status();
    let seen = res
        .headers()
        .get("x-path")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, seen, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_over_noise_round_trip_with_large_bodies() {
    let mut server = start_server(ServerConfig::new(StaticKey::generate())).await;
    let machine = StaticKey::generate();

    // No key given: the client fetches /key first.
    let mut conn = connect(&server.url, &machine, None).await.unwrap();
    assert_eq!(conn.server_pub, server.server_pub);
    match server.next_event().await {
        Event::Connected {
            machine: seen,
            version,
        } => {
            assert_eq!(seen, machine.public());
            assert_eq!(version, CLIENT_VERSION);
        }
        other => panic!("unexpected {other:?}"),
    }

    let (status, path, body) = post(
        &mut conn.send_request,
        "/machine/register",
        Full::new(Bytes::from_static(b"{}")),
    )
    .await;
    assert_eq!(
        (status, path.as_str(), &body[..]),
        (StatusCode::OK, "/machine/register", &b"{}"[..])
    );

    // > 64 KiB each way: dozens of records per direction, so nonces well past 1.
    let big = pattern(300_000, 7);
    let (status, _, body) = post(
        &mut conn.send_request,
        "/machine/map",
        Full::new(big.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body.len(), big.len());
    assert!(body == big, "echoed body differs");

    // Several concurrent requests on the one connection.
    let mut tasks = Vec::new();
    for i in 0..8u8 {
        let mut send = conn.send_request.clone();
        tasks.push(tokio::spawn(async move {
            let data = pattern(70_000 + usize::from(i) * 1000, i);
            let (status, path, body) = post(
                &mut send,
                &format!("/concurrent/{i}"),
                Full::new(data.clone()),
            )
            .await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(path, format!("/concurrent/{i}"));
            assert!(body == data, "stream {i} body differs");
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }

    // The server sent the early payload with a fresh challenge; the client stripped it.
    let challenge = conn
        .early_payload
        .challenge()
        .expect("first bytes read")
        .expect("early payload sent");
    assert!(!challenge.is_zero());

    // A second connection with the key given: another challenge, same machine.
    let mut second = connect(&server.url, &machine, Some(server.server_pub))
        .await
        .unwrap();
    let (status, _, _) = post(&mut second.send_request, "/x", Full::new(Bytes::new())).await;
    assert_eq!(status, StatusCode::OK);
    match server.next_event().await {
        Event::Connected { machine: seen, .. } => assert_eq!(seen, machine.public()),
        other => panic!("unexpected {other:?}"),
    }
    assert_ne!(
        second.early_payload.challenge().unwrap().unwrap(),
        challenge
    );

    // Closing the client ends the server's connection cleanly.
    drop(conn.send_request);
    timeout(WAIT, conn.driver).await.unwrap().unwrap().unwrap();
    match server.next_event().await {
        Event::Closed(result) => assert_eq!(result, Ok(())),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn no_early_payload_also_works() {
    let cfg = ServerConfig {
        early_payload: false,
        ..ServerConfig::new(StaticKey::generate())
    };
    let mut server = start_server(cfg).await;
    let mut conn = connect(&server.url, &StaticKey::generate(), Some(server.server_pub))
        .await
        .unwrap();
    let (status, _, body) = post(
        &mut conn.send_request,
        "/echo",
        Full::new(Bytes::from_static(b"hello")),
    )
    .await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"hello"[..]));
    assert_eq!(conn.early_payload.challenge(), Some(None));
    assert!(matches!(server.next_event().await, Event::Connected { .. }));
}

#[tokio::test]
async fn garbage_after_upgrade_closes_only_that_connection() {
    let mut server = start_server(ServerConfig::new(StaticKey::generate())).await;
    let (mut bad, _) = connect_noise(
        &server.url,
        &StaticKey::generate(),
        &server.server_pub,
        CLIENT_VERSION,
    )
    .await
    .unwrap();
    assert!(matches!(server.next_event().await, Event::Connected { .. }));

    // Plaintext HTTP where records belong.
    bad.get_mut()
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    bad.get_mut().flush().await.unwrap();
    match server.next_event().await {
        Event::Closed(Err(text)) => assert!(
            text.contains("unexpected Noise message type 0x47"),
            "{text}"
        ),
        other => panic!("unexpected {other:?}"),
    }
    // The server dropped the socket: the client sees the end (after any early bytes).
    let mut sink = Vec::new();
    let _ = timeout(WAIT, bad.read_to_end(&mut sink))
        .await
        .expect("connection closed");

    // The listener still serves others.
    let mut good = connect(&server.url, &StaticKey::generate(), Some(server.server_pub))
        .await
        .unwrap();
    let (status, _, body) = post(
        &mut good.send_request,
        "/still",
        Full::new(Bytes::from_static(b"alive")),
    )
    .await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"alive"[..]));
}

#[tokio::test]
async fn oversized_record_closes_the_connection() {
    let mut server = start_server(ServerConfig::new(StaticKey::generate())).await;
    let (mut bad, _) = connect_noise(
        &server.url,
        &StaticKey::generate(),
        &server.server_pub,
        CLIENT_VERSION,
    )
    .await
    .unwrap();
    assert!(matches!(server.next_event().await, Event::Connected { .. }));
    let mut frame = vec![MSG_RECORD, 0x0f, 0xfe]; // 4094 > 4093
    frame.extend_from_slice(&[0u8; 4094]);
    bad.get_mut().write_all(&frame).await.unwrap();
    match server.next_event().await {
        Event::Closed(Err(text)) => assert!(
            text.contains("4094 ciphertext bytes exceeds the maximum 4093"),
            "{text}"
        ),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn truncated_record_mid_stream_closes_the_connection() {
    let mut server = start_server(ServerConfig::new(StaticKey::generate())).await;
    let (mut bad, _) = connect_noise(
        &server.url,
        &StaticKey::generate(),
        &server.server_pub,
        CLIENT_VERSION,
    )
    .await
    .unwrap();
    assert!(matches!(server.next_event().await, Event::Connected { .. }));
    // A header promising 100 bytes, 20 of them, then end of stream.
    let mut partial = vec![MSG_RECORD, 0, 100];
    partial.extend_from_slice(&[0u8; 20]);
    bad.get_mut().write_all(&partial).await.unwrap();
    bad.get_mut().shutdown().await.unwrap();
    match server.next_event().await {
        Event::Closed(Err(text)) => assert!(
            text.contains("stream ended inside a Noise record (23 bytes buffered)"),
            "{text}"
        ),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn old_client_gets_error_message_then_close() {
    let cfg = ServerConfig {
        min_version: 113,
        ..ServerConfig::new(StaticKey::generate())
    };
    let mut server = start_server(cfg).await;
    let err = connect_noise(&server.url, &StaticKey::generate(), &server.server_pub, 100)
        .await
        .unwrap_err();
    match err {
        ClientError::Handshake(HandshakeError::ServerError(text)) => {
            assert!(text.contains("unsupported client version 100"), "{text}");
        }
        other => panic!("unexpected {other:?}"),
    }
    match server.next_event().await {
        Event::UpgradeFailed(UpgradeError::UnsupportedVersion {
            version: 100,
            min_version: 113,
        }) => {}
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn wrong_server_key_is_refused_with_400() {
    let server = start_server(ServerConfig::new(StaticKey::generate())).await;
    let wrong = StaticKey::generate().public();
    match connect(&server.url, &StaticKey::generate(), Some(wrong))
        .await
        .unwrap_err()
    {
        ClientError::UpgradeRefused { status, body } => {
            assert_eq!(status, StatusCode::BAD_REQUEST);
            assert!(body.contains("bad handshake"), "{body}");
        }
        other => panic!("unexpected {other:?}"),
    }
}

/// Sends one raw HTTP/1 request and returns (status, body).
async fn raw_http1(url: &str, req: Request<Empty<Bytes>>) -> (StatusCode, String) {
    let tcp = TcpStream::connect(url.trim_start_matches("http://"))
        .await
        .unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let res = send.send_request(req).await.unwrap();
    let status = res.status();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn bad_upgrade_requests_get_400_with_a_reason() {
    let server = start_server(ServerConfig::new(StaticKey::generate())).await;
    let (_, init) = Initiator::new(&StaticKey::generate(), &server.server_pub, 130).unwrap();
    let good_handshake = BASE64.encode(init);

    let cases = [
        (None, Some(good_handshake.as_str()), "missing next protocol"),
        (
            Some("h2c"),
            Some(good_handshake.as_str()),
            "unknown next protocol",
        ),
        (
            Some("tailscale-control-protocol"),
            None,
            "missing X-Tailscale-Handshake",
        ),
        (
            Some("tailscale-control-protocol"),
            Some("%%%"),
            "not valid base64",
        ),
        (
            Some("tailscale-control-protocol"),
            Some("AAAA"),
            "wrong handshake initiation size: 3 bytes",
        ),
    ];
    for (upgrade_value, handshake, reason) in cases {
        let mut req = Request::post("/ts2021").header("host", "127.0.0.1");
        if let Some(v) = upgrade_value {
            req = req.header("upgrade", v).header("connection", "upgrade");
        }
        if let Some(h) = handshake {
            req = req.header("x-tailscale-handshake", h);
        }
        let (status, body) = raw_http1(&server.url, req.body(Empty::new()).unwrap()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{reason}");
        assert!(body.contains(reason), "{reason}: {body}");
    }
}

#[tokio::test]
async fn exact_101_and_nothing_before_the_response() {
    let server = start_server(ServerConfig::new(StaticKey::generate())).await;
    let machine = StaticKey::generate();
    let (initiator, init) = Initiator::new(&machine, &server.server_pub, 130).unwrap();
    let mut tcp = TcpStream::connect(server.url.trim_start_matches("http://"))
        .await
        .unwrap();
    let head = format!(
        "POST /ts2021 HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: upgrade\r\n\
         Upgrade: tailscale-control-protocol\r\nX-Tailscale-Handshake: {}\r\n\r\n",
        BASE64.encode(init)
    );
    tcp.write_all(head.as_bytes()).await.unwrap();

    let mut got = BytesMut::new();
    let head_end = loop {
        let mut chunk = [0u8; 1024];
        let n = timeout(WAIT, tcp.read(&mut chunk)).await.unwrap().unwrap();
        assert!(n > 0, "closed early");
        got.extend_from_slice(&chunk[..n]);
        if let Some(pos) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
    };
    let head = std::str::from_utf8(&got[..head_end])
        .unwrap()
        .to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101 "), "{head}");
    assert!(
        head.contains("\r\nupgrade: tailscale-control-protocol\r\n"),
        "{head}"
    );
    assert!(head.contains("\r\nconnection: upgrade\r\n"), "{head}");
    // Exact case of the value, as the Go client compares byte-for-byte.
    assert!(
        std::str::from_utf8(&got[..head_end])
            .unwrap()
            .contains(": tailscale-control-protocol\r\n")
    );

    while got.len() < head_end + RESPONSE_LEN {
        let mut chunk = [0u8; 1024];
        let n = timeout(WAIT, tcp.read(&mut chunk)).await.unwrap().unwrap();
        assert!(n > 0, "closed early");
        got.extend_from_slice(&chunk[..n]);
    }
    let response = &got[head_end..head_end + RESPONSE_LEN];
    assert_eq!(&response[..HEADER_LEN], &[0x02, 0x00, 0x30]);
    assert_ne!(response[0], MSG_ERROR);
    let mut transport = initiator.finish(response).unwrap();
    // Whatever follows is records: the early payload decrypts with nonce 0.
    transport
        .decoder_mut()
        .feed(&got[head_end + RESPONSE_LEN..]);
    while transport.decoder_mut().buffered() < 3 + 9 {
        let mut chunk = [0u8; 1024];
        let n = timeout(WAIT, tcp.read(&mut chunk)).await.unwrap().unwrap();
        transport.decoder_mut().feed(&chunk[..n]);
    }
    let mut first = None;
    while first.is_none() {
        first = transport.decoder_mut().next_record().unwrap();
        if first.is_none() {
            let mut chunk = [0u8; 1024];
            let n = timeout(WAIT, tcp.read(&mut chunk)).await.unwrap().unwrap();
            transport.decoder_mut().feed(&chunk[..n]);
        }
    }
    assert_eq!(&first.unwrap()[..5], b"\xff\xff\xffTS");
}

/// Opens the WebSocket form of ts2021 as `machine`; the handshake's reply is still unread.
async fn open_websocket(
    server: &TestServer,
    machine: &StaticKey,
) -> (tokio_tungstenite::WebSocketStream<TcpStream>, Initiator) {
    let (initiator, init) = Initiator::new(machine, &server.server_pub, 130).unwrap();
    let encoded = BASE64
        .encode(init)
        .replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D");
    let url = format!(
        "{}/ts2021?X-Tailscale-Handshake={encoded}",
        server.url.replace("http://", "ws://")
    );
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "tailscale-control-protocol".parse().unwrap(),
    );
    let tcp = TcpStream::connect(server.url.trim_start_matches("http://"))
        .await
        .unwrap();
    let (ws, response) = tokio_tungstenite::client_async(request, tcp).await.unwrap();
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(
        response.headers()["sec-websocket-protocol"],
        "tailscale-control-protocol"
    );

    (ws, initiator)
}

#[tokio::test]
async fn websocket_form_round_trip() {
    let mut server = start_server(ServerConfig::new(StaticKey::generate())).await;
    let machine = StaticKey::generate();
    let (ws, initiator) = open_websocket(&server, &machine).await;
    let mut io = WebSocketIo::new(ws);
    let mut reply = [0u8; RESPONSE_LEN];
    timeout(WAIT, io.read_exact(&mut reply))
        .await
        .unwrap()
        .unwrap();
    let transport = initiator.finish(&reply).unwrap();
    let (stream, early) = NoiseStream::new_client(io, transport);
    let (mut send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);

    match server.next_event().await {
        Event::Connected {
            machine: seen,
            version,
        } => {
            assert_eq!(seen, machine.public());
            assert_eq!(version, 130);
        }
        other => panic!("unexpected {other:?}"),
    }
    let big = pattern(100_000, 3);
    let (status, path, body) = post(&mut send, "/over/websocket", Full::new(big.clone())).await;
    assert_eq!((status, path.as_str()), (StatusCode::OK, "/over/websocket"));
    assert!(body == big, "echoed body differs");
    assert!(early.challenge().unwrap().is_some());
}

#[tokio::test]
async fn an_oversized_websocket_message_closes_the_connection() {
    use futures_util::SinkExt;
    let mut server = start_server(ServerConfig::new(StaticKey::generate())).await;
    let (mut ws, _) = open_websocket(&server, &StaticKey::generate()).await;
    let message = vec![0u8; oxiscale_noise::ws::MAX_MESSAGE + 1];
    // The server may close before the whole message is written.
    let _ = ws
        .send(tokio_tungstenite::tungstenite::Message::binary(message))
        .await;
    loop {
        match server.next_event().await {
            Event::Connected { .. } => continue,
            Event::Closed(Err(text)) => {
                assert!(
                    text.contains("too long") || text.contains("Space limit"),
                    "{text}"
                );
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_clients() {
    const CLIENTS: usize = 200;
    let mut server = start_server(ServerConfig::new(StaticKey::generate())).await;
    let (url, server_pub) = (server.url.clone(), server.server_pub);
    let mut tasks = Vec::new();
    for i in 0..CLIENTS {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let machine = StaticKey::generate();
            let mut conn = connect(&url, &machine, Some(server_pub)).await.unwrap();
            let body = Bytes::from(format!("client {i}"));
            let (status, _, echoed) = post(
                &mut conn.send_request,
                "/machine/map",
                Full::new(body.clone()),
            )
            .await;
            assert_eq!((status, echoed), (StatusCode::OK, body));
            (machine.public(), conn)
        }));
    }
    let mut machines = std::collections::HashSet::new();
    let mut conns = Vec::new();
    for t in tasks {
        let (machine, conn) = t.await.unwrap();
        machines.insert(machine);
        conns.push(conn);
    }
    let mut seen = std::collections::HashSet::new();
    for _ in 0..CLIENTS {
        match server.next_event().await {
            Event::Connected { machine, .. } => assert!(seen.insert(machine)),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(seen, machines);
}
