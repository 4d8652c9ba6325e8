//! HTTPS from certificate files: the real server in-process with a certificate from a test
//! CA, a rustls client that trusts only that CA. Served over HTTP/1.1 and HTTP/2, the
//! control protocol and DERP upgrades work over TLS, plain HTTP gets no HTTP answer, a
//! replaced certificate is served without a restart (file change and SIGHUP), a broken
//! replacement keeps the old one, and every bad input stops the server naming the reason.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use common::TestServer;
use http::header::{CONNECTION, HOST, UPGRADE};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use oxiscale::config::Config;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
    SerialNumber,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore, crypto::ring};

/// A test certificate authority.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A server certificate and its key, as PEM, and the certificate's DER.
struct Leaf {
    cert: String,
    key: String,
    der: CertificateDer<'static>,
}

impl Ca {
    fn new() -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "oxiscale test CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Ca { issuer }
    }

    fn leaf(&self, names: &[&str], serial: u64) -> Leaf {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.serial_number = Some(SerialNumber::from(serial));
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }

    fn client(&self, alpn: &[&[u8]]) -> TlsConnector {
        let mut roots = RootCertStore::empty();
        roots.add(self.issuer.der().clone()).unwrap();
        let mut config = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        TlsConnector::from(Arc::new(config))
    }
}

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("oxiscale-tls-{}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes the pair as `cert.pem` / `key.pem` in `dir` (in place: same files, new content).
fn install(dir: &Path, leaf: &Leaf) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, &leaf.cert).unwrap();
    std::fs::write(&key, &leaf.key).unwrap();
    (cert, key)
}

fn with_files(c: &mut Config, cert: &Path, key: &Path) {
    c.server_url = "https://127.0.0.1:0".into();
    c.tls_cert_path = Some(cert.to_owned());
    c.tls_key_path = Some(key.to_owned());
}

async fn handshake(addr: SocketAddr, connector: &TlsConnector) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    connector
        .connect(ServerName::IpAddress(Ipv4Addr::LOCALHOST.into()), tcp)
        .await
        .expect("TLS handshake with a certificate from the test CA")
}

/// The leaf certificate the server presents now.
async fn served_leaf(addr: SocketAddr, ca: &Ca) -> CertificateDer<'static> {
    let tls = handshake(addr, &ca.client(&[])).await;
    tls.get_ref().1.peer_certificates().unwrap()[0].clone()
}

async fn get_h1(tls: TlsStream<TcpStream>, path: &str) -> (StatusCode, String) {
    let (mut send, conn) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = Request::get(path)
        .header(HOST, "127.0.0.1")
        .body(Empty::new())
        .unwrap();
    let res = send.send_request(req).await.unwrap();
    let status = res.status();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

async fn wait_until_served(addr: SocketAddr, ca: &Ca, want: &CertificateDer<'static>) {
    for _ in 0..100 {
        if &served_leaf(addr, ca).await == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the replaced certificate was not served within 10 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_only_on_the_main_listener_with_both_http_versions_and_upgrades() {
    let (ca, dir) = (Ca::new(), temp_dir());
    let leaf = ca.leaf(&["127.0.0.1"], 1);
    let (cert, key) = install(&dir, &leaf);
    let server = TestServer::start_with(|c| with_files(c, &cert, &key)).await;
    let addr = server.running().http_addr;
    assert_eq!(server.url, format!("https://{addr}"));

    // A client that connects and never handshakes holds up nobody.
    let _stalled = TcpStream::connect(addr).await.unwrap();

    // HTTP/1.1 (no ALPN, as Tailscale's control and DERP dials).
    let (status, body) = get_h1(handshake(addr, &ca.client(&[])).await, "/health").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("pass"), "{body}");

    // HTTP/2 by ALPN.
    let tls = handshake(addr, &ca.client(&[b"h2", b"http/1.1"])).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut send, conn) = hyper::client::conn::http2::handshake::<_, _, Empty<Bytes>>(
        TokioExecutor::new(),
        TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = Request::get(format!("https://{addr}/version"))
        .body(Empty::new())
        .unwrap();
    let res = send.send_request(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);

    // Plain HTTP to the same port: no HTTP answer, only the end of a failed handshake.
    let mut plain = TcpStream::connect(addr).await.unwrap();
    plain
        .write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut answer)).await;
    assert!(
        !answer.starts_with(b"HTTP/"),
        "plain HTTP got an HTTP answer: {:?}",
        String::from_utf8_lossy(&answer)
    );

    // DERP upgrade over TLS: 101, then the server's key frame (type 1, "DERP🔑" magic).
    let mut tls = handshake(addr, &ca.client(&[])).await;
    tls.write_all(
        b"GET /derp HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: DERP\r\n\r\n",
    )
    .await
    .unwrap();
    // The head, then a frame header (type, length) and the 8-byte magic.
    let mut got = Vec::new();
    let frame_at = loop {
        let mut more = [0u8; 512];
        let n = tokio::time::timeout(Duration::from_secs(5), tls.read(&mut more))
            .await
            .unwrap()
            .unwrap();
        assert!(
            n > 0,
            "DERP connection closed: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&more[..n]);
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n")
            && got.len() >= end + 4 + 13
        {
            break end + 4;
        }
    };
    let head = String::from_utf8_lossy(&got[..frame_at]).into_owned();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert_eq!(
        got[frame_at], 0x01,
        "the first DERP frame is the server key"
    );
    assert_eq!(&got[frame_at + 5..frame_at + 13], "DERP🔑".as_bytes());

    // The control protocol's upgrade over TLS: /key, then the Noise handshake on /ts2021.
    let (status, body) = get_h1(handshake(addr, &ca.client(&[])).await, "/key?v=130").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let keys: oxiscale_noise::KeyResponse = serde_json::from_str(&body).unwrap();
    let machine = oxiscale_noise::StaticKey::generate();
    let (initiator, initiation) =
        oxiscale_noise::Initiator::new(&machine, &keys.public_key, 130).unwrap();
    let tls = handshake(addr, &ca.client(&[])).await;
    let (mut send, conn) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn.with_upgrades());
    let req = Request::post("/ts2021")
        .header(HOST, "127.0.0.1")
        .header(CONNECTION, "upgrade")
        .header(UPGRADE, "tailscale-control-protocol")
        .header(
            "X-Tailscale-Handshake",
            base64::engine::general_purpose::STANDARD.encode(initiation),
        )
        .body(Empty::new())
        .unwrap();
    let res = send.send_request(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::SWITCHING_PROTOCOLS);
    let mut io = TokioIo::new(hyper::upgrade::on(res).await.unwrap());
    let mut reply = [0u8; oxiscale_noise::handshake::RESPONSE_LEN];
    io.read_exact(&mut reply).await.unwrap();
    initiator
        .finish(&reply)
        .expect("Noise handshake completes over TLS");

    // Stopped: the port is free at once (a restart binds it again).
    server.stop().await;
    std::net::TcpListener::bind(addr).expect("the port is free after stop");
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_certificate_is_served_without_a_restart_and_a_broken_one_is_not() {
    let (ca, dir) = (Ca::new(), temp_dir());
    let first = ca.leaf(&["127.0.0.1"], 1);
    let (cert, key) = install(&dir, &first);
    let server = TestServer::start_with(|c| with_files(c, &cert, &key)).await;
    let addr = server.running().http_addr;
    assert_eq!(served_leaf(addr, &ca).await, first.der);

    // Replaced on disk (new serial, new key): picked up by the file watcher.
    let second = ca.leaf(&["127.0.0.1"], 2);
    install(&dir, &second);
    wait_until_served(addr, &ca, &second.der).await;

    // A broken replacement (not PEM; then a certificate for another name) keeps the one in
    // force; the server keeps serving HTTPS.
    std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\nnot base64\n").unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(served_leaf(addr, &ca).await, second.der);
    install(&dir, &ca.leaf(&["other.example"], 3));
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(served_leaf(addr, &ca).await, second.der);
    let (status, _) = get_h1(handshake(addr, &ca.client(&[])).await, "/health").await;
    assert_eq!(status, StatusCode::OK);

    // Fixed again: served.
    let third = ca.leaf(&["127.0.0.1"], 4);
    install(&dir, &third);
    wait_until_served(addr, &ca, &third.der).await;

    server.stop().await;
    std::fs::remove_dir_all(&dir).ok();
}

/// Rewrites the pair in place and puts the modification times back: the same inode, length
/// and time, so the file watcher sees no change.
fn install_unseen(dir: &Path, leaf: &Leaf) {
    let paths = [dir.join("cert.pem"), dir.join("key.pem")];
    let times: Vec<_> = paths
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().modified().unwrap())
        .collect();
    install(dir, leaf);
    for (path, time) in paths.iter().zip(times) {
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(time)
            .unwrap();
    }
}

/// SIGHUP reloads even when the files look unchanged to the watcher.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_certificate() {
    let (ca, dir) = (Ca::new(), temp_dir());
    let mut in_force = ca.leaf(&["127.0.0.1"], 1);
    let (cert, key) = install(&dir, &in_force);
    let server = TestServer::start_with(|c| with_files(c, &cert, &key)).await;
    let addr = server.running().http_addr;
    assert_eq!(served_leaf(addr, &ca).await, in_force.der);

    // ECDSA signatures vary in length by a byte or two: replacements of equal size. On a
    // loaded machine the watcher may look between the write and the time reset and take
    // the new pair itself; then that one is in force and the next replacement is tried.
    let mut serials = 2..;
    let mut tries = 0;
    let pending = loop {
        let next = serials
            .by_ref()
            .take(200)
            .map(|serial| ca.leaf(&["127.0.0.1"], serial))
            .find(|l| l.cert.len() == in_force.cert.len() && l.key.len() == in_force.key.len())
            .expect("a same-size certificate");
        install_unseen(&dir, &next);
        tokio::time::sleep(Duration::from_secs(3)).await;
        if served_leaf(addr, &ca).await == in_force.der {
            break next;
        }
        tries += 1;
        assert!(tries < 5, "the watcher saw every unseen replacement");
        in_force = next;
    };
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    wait_until_served(addr, &ca, &pending.der).await;

    server.stop().await;
    std::fs::remove_dir_all(&dir).ok();
}

/// Starts a server with `adjust` expecting a refusal; returns its message.
async fn refusal(adjust: impl FnOnce(&mut Config, &Path)) -> String {
    let dir = temp_dir();
    let mut config = common::config_for(&dir.join("data"));
    adjust(&mut config, &dir);
    let port = config.listen_addr;
    let err = match oxiscale::serve::start(config).await {
        Ok(running) => {
            running.stop().await.ok();
            panic!("the server started (on {port})");
        }
        Err(e) => format!("{e:#}"),
    };
    std::fs::remove_dir_all(&dir).ok();
    err
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tls_input_stops_the_server_naming_the_reason() {
    let ca = Ca::new();
    let good = ca.leaf(&["127.0.0.1"], 1);
    let other = ca.leaf(&["127.0.0.1"], 2);

    // An unreadable key file, named.
    let err = refusal(|c, dir| {
        let (cert, _) = install(dir, &good);
        with_files(c, &cert, &dir.join("missing-key.pem"));
    })
    .await;
    assert!(
        err.contains("cannot read the TLS key file") && err.contains("missing-key.pem"),
        "{err}"
    );

    // A certificate for another name.
    let err = refusal(|c, dir| {
        let (cert, key) = install(dir, &ca.leaf(&["vpn.example.org"], 3));
        with_files(c, &cert, &key);
    })
    .await;
    assert!(
        err.contains("not valid for 127.0.0.1") && err.contains("vpn.example.org"),
        "{err}"
    );

    // A key that belongs to another certificate.
    let err = refusal(|c, dir| {
        let (cert, key) = install(dir, &good);
        std::fs::write(&key, &other.key).unwrap();
        with_files(c, &cert, &key);
    })
    .await;
    assert!(err.contains("does not belong to the certificate"), "{err}");

    // A malformed certificate file; a key file without a key.
    let err = refusal(|c, dir| {
        let (cert, key) = install(dir, &good);
        std::fs::write(&cert, "hello\n").unwrap();
        with_files(c, &cert, &key);
    })
    .await;
    assert!(err.contains("holds no certificate"), "{err}");
    let err = refusal(|c, dir| {
        let (cert, key) = install(dir, &good);
        std::fs::write(&key, &good.cert).unwrap();
        with_files(c, &cert, &key);
    })
    .await;
    assert!(err.contains("holds no private key"), "{err}");

    // Only one of the two paths; an ACME hostname that is not server_url's; an ACME server
    // that cannot be reached; plain http:// with certificate files.
    let err = refusal(|c, dir| {
        let (cert, _) = install(dir, &good);
        c.server_url = "https://127.0.0.1:0".into();
        c.tls_cert_path = Some(cert);
    })
    .await;
    assert!(
        err.contains("tls_key_path") && err.contains("both are needed"),
        "{err}"
    );
    let err = refusal(|c, _| {
        c.server_url = "https://vpn.example.org".into();
        c.tls_letsencrypt_hostname = Some("other.example.org".into());
    })
    .await;
    assert!(
        err.contains("tls_letsencrypt_hostname") && err.contains("clients dial vpn.example.org"),
        "{err}"
    );
    // An ACME server that cannot be reached (a closed local port): named, nothing served.
    // (The conversation with a real one, pebble, is end2end/clients/test_acme.py.)
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let acme_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let err = refusal(|c, _| {
        c.server_url = "https://vpn.example.org".into();
        c.listen_addr = acme_port;
        c.tls_letsencrypt_hostname = Some("vpn.example.org".into());
        c.tls_letsencrypt_challenge_type = Some("TLS-ALPN-01".into());
        c.acme_url = Some(format!("https://{closed}/dir"));
    })
    .await;
    assert!(
        err.contains(&format!(
            "cannot use the ACME server at https://{closed}/dir (acme_url)"
        )),
        "{err}"
    );
    assert!(
        TcpStream::connect(acme_port).await.is_err(),
        "nothing listens"
    );
    let err = refusal(|c, dir| {
        let (cert, key) = install(dir, &good);
        with_files(c, &cert, &key);
        c.server_url = "http://127.0.0.1:0".into();
    })
    .await;
    assert!(err.contains("server_url") && err.contains("https"), "{err}");

    // Nothing was left listening on a refused start.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let err = refusal(|c, dir| {
        let (cert, _) = install(dir, &good);
        with_files(c, &cert, &dir.join("missing-key.pem"));
        c.listen_addr = port;
    })
    .await;
    assert!(err.contains("missing-key.pem"), "{err}");
    assert!(TcpStream::connect(port).await.is_err(), "nothing listens");
}
