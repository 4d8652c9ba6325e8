//! The client side, for tests and the load generator: fetch `/key`, upgrade `/ts2021`,
//! handshake, and run an HTTP/2 client over the Noise stream.

use std::io;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use http::header::{CONNECTION, HOST, UPGRADE};
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Full, Limited};
use hyper::client::conn::{http1, http2};
use hyper::upgrade::Upgraded;
use hyper_util::rt::{TokioExecutor, TokioIo};
use oxiscale_tailcfg::MachinePublic;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use crate::handshake::{HEADER_LEN, HandshakeError, Initiator, MSG_ERROR, RESPONSE_LEN, StaticKey};
use crate::key_endpoint::KeyResponse;
use crate::stream::{EarlyPayload, NoiseStream};
use crate::upgrade::{HANDSHAKE_HEADER, UPGRADE_PROTOCOL};

/// The capability version this client announces (tailscale 1.90).
pub const CLIENT_VERSION: u16 = 130;
const MAX_KEY_BODY: usize = 64 * 1024;

/// Why connecting failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("bad control URL {url:?}: {reason}")]
    BadUrl { url: String, reason: &'static str },
    #[error("connecting to {addr}: {source}")]
    Connect { addr: String, source: io::Error },
    #[error("HTTP/1 exchange failed: {0}")]
    Http(#[source] hyper::Error),
    #[error("HTTP/2 handshake over Noise failed: {0}")]
    Http2(#[source] hyper::Error),
    #[error("GET /key answered {0}")]
    KeyStatus(StatusCode),
    #[error("bad /key response: {0}")]
    KeyBody(String),
    #[error("control server is too old; no noise key")]
    NoNoiseKey,
    #[error("/ts2021 answered {status}: {body:?}")]
    UpgradeRefused { status: StatusCode, body: String },
    #[error("101 response carried Upgrade {0:?}, want tailscale-control-protocol")]
    WrongUpgradeHeader(String),
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    #[error("I/O after upgrade: {0}")]
    Io(#[from] io::Error),
}

/// An HTTP/2 client over an established ts2021 connection.
pub struct ClientConnection {
    /// Send requests here; give them an absolute URI (`http://host/machine/map`) so hyper can
    /// fill `:scheme` and `:authority`.
    pub send_request: http2::SendRequest<Full<Bytes>>,
    /// Drives the connection; finishes when it closes.
    pub driver: JoinHandle<Result<(), hyper::Error>>,
    /// The server's Noise key, as fetched or given.
    pub server_pub: MachinePublic,
    /// The server's early payload, once the first bytes have been read.
    pub early_payload: EarlyPayload,
}

impl std::fmt::Debug for ClientConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConnection")
            .field("server_pub", &self.server_pub)
            .finish_non_exhaustive()
    }
}

/// Host and port of an `http://host[:port]` control URL.
#[derive(Debug, Clone)]
struct Target {
    host: String,
    port: u16,
    authority: String,
}

fn parse_control_url(control_url: &str) -> Result<Target, ClientError> {
    let bad = |reason| ClientError::BadUrl {
        url: control_url.to_owned(),
        reason,
    };
    let uri: Uri = control_url
        .trim_end_matches('/')
        .parse()
        .map_err(|_| bad("not a URI"))?;
    if uri.scheme_str() != Some("http") {
        return Err(bad("only http:// is supported"));
    }
    let authority = uri.authority().ok_or_else(|| bad("no host"))?;
    Ok(Target {
        host: authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
        port: authority.port_u16().unwrap_or(80),
        authority: authority.as_str().to_owned(),
    })
}

async fn dial(target: &Target) -> Result<TcpStream, ClientError> {
    let tcp = TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(|source| ClientError::Connect {
            addr: format!("{}:{}", target.host, target.port),
            source,
        })?;
    // HTTP/2 over Noise sends many small frames; don't let Nagle hold them back.
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

/// `GET {control_url}/key?v=130` over plain HTTP/1.1; returns the server's Noise key.
pub async fn fetch_server_key(control_url: &str) -> Result<MachinePublic, ClientError> {
    let target = parse_control_url(control_url)?;
    let tcp = dial(&target).await?;
    let (mut sender, conn) = http1::handshake::<_, Empty<Bytes>>(TokioIo::new(tcp))
        .await
        .map_err(ClientError::Http)?;
    let conn = tokio::spawn(conn);
    let req = Request::get(format!("/key?v={CLIENT_VERSION}"))
        .header(HOST, &target.authority)
        .body(Empty::new())
        .expect("static request is valid");
    let res = sender.send_request(req).await.map_err(ClientError::Http)?;
    if res.status() != StatusCode::OK {
        conn.abort();
        return Err(ClientError::KeyStatus(res.status()));
    }
    let body = Limited::new(res.into_body(), MAX_KEY_BODY)
        .collect()
        .await
        .map_err(|err| ClientError::KeyBody(err.to_string()))?
        .to_bytes();
    conn.abort();
    let keys: KeyResponse =
        serde_json::from_slice(&body).map_err(|err| ClientError::KeyBody(err.to_string()))?;
    if keys.public_key.is_zero() {
        return Err(ClientError::NoNoiseKey);
    }
    Ok(keys.public_key)
}

/// Upgrades `POST /ts2021` and completes the handshake as `machine_key`; returns the client
/// Noise stream (early payload stripped lazily) before any HTTP/2.
pub async fn connect_noise(
    control_url: &str,
    machine_key: &StaticKey,
    server_pub: &MachinePublic,
    version: u16,
) -> Result<(NoiseStream<TokioIo<Upgraded>>, EarlyPayload), ClientError> {
    let target = parse_control_url(control_url)?;
    let (initiator, initiation) = Initiator::new(machine_key, server_pub, version)?;
    let tcp = dial(&target).await?;
    let (mut sender, conn) = http1::handshake::<_, Empty<Bytes>>(TokioIo::new(tcp))
        .await
        .map_err(ClientError::Http)?;
    let conn = tokio::spawn(conn.with_upgrades());
    let req = Request::post("/ts2021")
        .header(HOST, &target.authority)
        .header(CONNECTION, "upgrade")
        .header(UPGRADE, UPGRADE_PROTOCOL)
        .header(HANDSHAKE_HEADER, BASE64.encode(initiation))
        .body(Empty::new())
        .expect("request head is valid");
    let res = sender.send_request(req).await.map_err(ClientError::Http)?;
    if res.status() != StatusCode::SWITCHING_PROTOCOLS {
        let status = res.status();
        let body = Limited::new(res.into_body(), MAX_KEY_BODY)
            .collect()
            .await
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
            .unwrap_or_default();
        conn.abort();
        return Err(ClientError::UpgradeRefused { status, body });
    }
    let upgrade_header = res
        .headers()
        .get(UPGRADE)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if upgrade_header != UPGRADE_PROTOCOL.as_bytes() {
        conn.abort();
        return Err(ClientError::WrongUpgradeHeader(
            String::from_utf8_lossy(upgrade_header).into_owned(),
        ));
    }
    let mut io = TokioIo::new(hyper::upgrade::on(res).await.map_err(ClientError::Http)?);

    let mut header = [0u8; HEADER_LEN];
    io.read_exact(&mut header).await?;
    let reply_len = match header[0] {
        MSG_ERROR => HEADER_LEN + usize::from(u16::from_be_bytes([header[1], header[2]])),
        // A response, or a type `finish` will name as unexpected.
        _ => RESPONSE_LEN,
    };
    let mut reply = vec![0u8; reply_len];
    reply[..HEADER_LEN].copy_from_slice(&header);
    io.read_exact(&mut reply[HEADER_LEN..]).await?;
    let transport = initiator.finish(&reply)?;
    Ok(NoiseStream::new_client(io, transport))
}

/// Connects to `control_url` (`http://host:port`) as `machine_key`: fetches the server key
/// unless given, upgrades `/ts2021`, handshakes, and starts HTTP/2 over the Noise stream.
pub async fn connect(
    control_url: &str,
    machine_key: &StaticKey,
    server_pub: Option<MachinePublic>,
) -> Result<ClientConnection, ClientError> {
    let server_pub = match server_pub {
        Some(key) => key,
        None => fetch_server_key(control_url).await?,
    };
    let (stream, early_payload) =
        connect_noise(control_url, machine_key, &server_pub, CLIENT_VERSION).await?;
    let (send_request, conn) = http2::Builder::new(TokioExecutor::new())
        .handshake(TokioIo::new(stream))
        .await
        .map_err(ClientError::Http2)?;
    let driver = tokio::spawn(conn);
    Ok(ClientConnection {
        send_request,
        driver,
        server_pub,
        early_payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_url_forms() {
        let t = parse_control_url("http://127.0.0.1:8081/").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.authority.as_str()),
            ("127.0.0.1", 8081, "127.0.0.1:8081")
        );
        let t = parse_control_url("http://localhost").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("localhost", 80));
        let t = parse_control_url("http://[::1]:9").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 9));
        assert!(matches!(
            parse_control_url("https://x"),
            Err(ClientError::BadUrl { .. })
        ));
        assert!(matches!(
            parse_control_url("not a url"),
            Err(ClientError::BadUrl { .. })
        ));
    }
}
