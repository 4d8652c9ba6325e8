//! The server's HTTP edge for `/ts2021`: validates the upgrade request, runs the handshake
//! (whose first message rides in the request), answers 101, and — once hyper hands over the
//! upgraded socket — sends the Noise response and yields a [`NoiseConnection`].
//!
//! Works with any request body type (hyper's `Incoming`, axum's `Body`), because only the
//! head and hyper's upgrade extension are used. The connection must be served by hyper with
//! upgrades enabled (`serve_connection(..).with_upgrades()`; axum does this).
//!
//! Wiring it into axum (sketch; the HTTP/2 service is the server's):
//!
//! ```ignore
//! async fn ts2021(State(cfg): State<Arc<ServerConfig>>, req: Request<Body>) -> Response<Body> {
//!     let up = oxiscale_noise::upgrade(req, cfg);
//!     if let Some(pending) = up.connection {
//!         tokio::spawn(async move {
//!             match pending.await {
//!                 Ok(conn) => {
//!                     let svc = /* routes for conn.machine */;
//!                     let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
//!                         .serve_connection(TokioIo::new(conn.stream), svc)
//!                         .await;
//!                 }
//!                 Err(err) => tracing::info!(%err, "ts2021 upgrade ended"),
//!             }
//!         });
//!     }
//!     up.response.map(Body::new)
//! }
//! ```

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use http::header::{
    CONNECTION, CONTENT_TYPE, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL,
    SEC_WEBSOCKET_VERSION, UPGRADE,
};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use oxiscale_tailcfg::MachinePublic;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

use crate::handshake::{Accepted, HandshakeError, StaticKey, accept_initiation};
use crate::stream::{NoiseStream, fresh_challenge};
use crate::ws::WebSocketIo;

/// Value of the `Upgrade` header (and WebSocket subprotocol) for ts2021.
pub const UPGRADE_PROTOCOL: &str = "tailscale-control-protocol";
/// Header (or, for WebSocket, query parameter) carrying the base64 initiation.
pub const HANDSHAKE_HEADER: &str = "X-Tailscale-Handshake";

/// What the ts2021 edge needs to know.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The server's Noise static key (its public half is served at `/key`).
    pub key: StaticKey,
    /// Clients announcing an older protocol version get an error message and are closed.
    pub min_version: u16,
    /// Send `{"nodeKeyChallenge": …}` with a fresh key before HTTP/2, as Go's server does.
    pub early_payload: bool,
}

impl ServerConfig {
    /// Accepts every version and sends the early payload.
    pub fn new(key: StaticKey) -> Self {
        Self {
            key,
            min_version: 0,
            early_payload: true,
        }
    }
}

/// Why an accepted upgrade did not become a connection.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error("HTTP upgrade failed: {0}")]
    Upgrade(#[source] hyper::Error),
    #[error("writing the handshake response failed: {0}")]
    Io(#[from] io::Error),
    /// The client was told so with an error message and the connection was closed.
    #[error("refused client version {version}; minimum is {min_version}")]
    UnsupportedVersion { version: u16, min_version: u16 },
}

/// The upgraded socket: raw HTTP/1 connection or a WebSocket carrying binary messages.
#[derive(Debug)]
pub enum ServerIo {
    Http(TokioIo<Upgraded>),
    // Boxed: the WebSocket state is large and rare (browser clients only).
    WebSocket(Box<WebSocketIo<TokioIo<Upgraded>>>),
}

impl AsyncRead for ServerIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerIo::Http(io) => Pin::new(io).poll_read(cx, buf),
            ServerIo::WebSocket(io) => Pin::new(io).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ServerIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ServerIo::Http(io) => Pin::new(io).poll_write(cx, buf),
            ServerIo::WebSocket(io) => Pin::new(io).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerIo::Http(io) => Pin::new(io).poll_flush(cx),
            ServerIo::WebSocket(io) => Pin::new(io).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerIo::Http(io) => Pin::new(io).poll_shutdown(cx),
            ServerIo::WebSocket(io) => Pin::new(io).poll_shutdown(cx),
        }
    }
}

/// An established ts2021 connection: serve HTTP/2 over `stream`.
#[derive(Debug)]
pub struct NoiseConnection {
    /// The client's authenticated machine key.
    pub machine: MachinePublic,
    /// The client's protocol (capability) version.
    pub version: u16,
    pub stream: NoiseStream<ServerIo>,
}

/// Resolves once the socket is upgraded and the handshake response sent.
pub type PendingConnection =
    Pin<Box<dyn Future<Output = Result<NoiseConnection, UpgradeError>> + Send>>;

/// What [`upgrade`] decided.
pub struct Upgrade {
    /// Send this now: a 101, or a 400 saying what was wrong.
    pub response: Response<Full<Bytes>>,
    /// For a 101: drive this (e.g. in a spawned task) to get the connection.
    pub connection: Option<PendingConnection>,
}

impl std::fmt::Debug for Upgrade {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upgrade")
            .field("status", &self.response.status())
            .field("connection", &self.connection.is_some())
            .finish()
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Form {
    Http,
    WebSocket,
}

fn bad_request(reason: &str) -> Upgrade {
    let mut response = Response::new(Full::new(Bytes::from(format!("{reason}\n"))));
    *response.status_mut() = StatusCode::BAD_REQUEST;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Upgrade {
        response,
        connection: None,
    }
}

/// Handles a `/ts2021` request: the POST form (`Upgrade: tailscale-control-protocol`, header
/// `X-Tailscale-Handshake`) or the WebSocket form (`Upgrade: websocket`, subprotocol
/// `tailscale-control-protocol`, query parameter `X-Tailscale-Handshake`).
pub fn upgrade<B>(mut req: Request<B>, cfg: Arc<ServerConfig>) -> Upgrade {
    let headers = req.headers();
    let Some(next_protocol) = headers.get(UPGRADE) else {
        return bad_request(
            "missing next protocol: no Upgrade header (a proxy may have stripped it)",
        );
    };
    let form = if next_protocol
        .as_bytes()
        .eq_ignore_ascii_case(UPGRADE_PROTOCOL.as_bytes())
    {
        Form::Http
    } else if next_protocol.as_bytes().eq_ignore_ascii_case(b"websocket") {
        Form::WebSocket
    } else {
        return bad_request(&format!("unknown next protocol {next_protocol:?}"));
    };

    let encoded = match form {
        Form::Http => headers.get(HANDSHAKE_HEADER).map(|v| v.as_bytes().to_vec()),
        Form::WebSocket => req
            .uri()
            .query()
            .and_then(|q| query_param(q, HANDSHAKE_HEADER)),
    };
    let Some(encoded) = encoded else {
        return bad_request("missing X-Tailscale-Handshake");
    };
    let Ok(initiation) = BASE64.decode(encoded.trim_ascii()) else {
        return bad_request("X-Tailscale-Handshake is not valid base64");
    };

    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    match form {
        Form::Http => {
            let h = response.headers_mut();
            h.insert(UPGRADE, HeaderValue::from_static(UPGRADE_PROTOCOL));
            h.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        }
        Form::WebSocket => match websocket_accept_headers(headers) {
            Ok(ws_headers) => response.headers_mut().extend(ws_headers),
            Err(reason) => return bad_request(reason),
        },
    }

    let outcome = match accept_initiation(&cfg.key, &initiation, cfg.min_version) {
        Ok(accepted) => Ok(accepted),
        Err(HandshakeError::UnsupportedVersion {
            version,
            min_version,
            error_frame,
        }) => Err((version, min_version, error_frame)),
        Err(err) => return bad_request(&format!("bad handshake: {err}")),
    };

    let on_upgrade = hyper::upgrade::on(&mut req);
    let early_payload = cfg.early_payload;
    let connection = Box::pin(async move {
        let upgraded = TokioIo::new(on_upgrade.await.map_err(UpgradeError::Upgrade)?);
        let mut io = match form {
            Form::Http => ServerIo::Http(upgraded),
            Form::WebSocket => ServerIo::WebSocket(Box::new(WebSocketIo::new(
                WebSocketStream::from_raw_socket(
                    upgraded,
                    Role::Server,
                    Some(crate::ws::ts2021_ws_config()),
                )
                .await,
            ))),
        };
        match outcome {
            Ok(accepted) => finish_accept(io, accepted, early_payload).await,
            Err((version, min_version, error_frame)) => {
                io.write_all(&error_frame).await?;
                io.flush().await?;
                // Best effort: the client may already be gone.
                let _ = io.shutdown().await;
                Err(UpgradeError::UnsupportedVersion {
                    version,
                    min_version,
                })
            }
        }
    });
    Upgrade {
        response,
        connection: Some(connection),
    }
}

async fn finish_accept(
    io: ServerIo,
    accepted: Accepted,
    early_payload: bool,
) -> Result<NoiseConnection, UpgradeError> {
    let Accepted {
        response,
        machine,
        version,
        transport,
    } = accepted;
    let mut stream = NoiseStream::new(io, transport);
    // The response goes first, unencrypted; the early payload shares its flush.
    stream.queue_raw(&response);
    if early_payload {
        stream.queue_early_payload(fresh_challenge())?;
    }
    stream.flush().await?;
    Ok(NoiseConnection {
        machine,
        version,
        stream,
    })
}

fn websocket_accept_headers(headers: &HeaderMap) -> Result<HeaderMap, &'static str> {
    if headers
        .get(SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes)
        != Some(b"13")
    {
        return Err("unsupported or missing Sec-WebSocket-Version (want 13)");
    }
    let key = headers
        .get(SEC_WEBSOCKET_KEY)
        .ok_or("missing Sec-WebSocket-Key")?;
    let offered: Vec<&str> = headers
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    if !offered.is_empty() && !offered.contains(&UPGRADE_PROTOCOL) {
        return Err("WebSocket subprotocol tailscale-control-protocol not offered");
    }
    let mut out = HeaderMap::new();
    out.insert(UPGRADE, HeaderValue::from_static("websocket"));
    out.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    let accept = derive_accept_key(key.as_bytes());
    out.insert(
        SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept).expect("base64 is a valid header value"),
    );
    if !offered.is_empty() {
        out.insert(
            SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(UPGRADE_PROTOCOL),
        );
    }
    Ok(out)
}

/// The percent-decoded value of query parameter `name`. A literal `+` stays `+` rather than
/// becoming a space: base64 has no spaces and unencoded `+` is the likelier mistake.
fn query_param(query: &str, name: &str) -> Option<Vec<u8>> {
    let raw = query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then_some(value)
    })?;
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = bytes.get(i + 1..i + 3)
            && let Ok(text) = std::str::from_utf8(hex)
            && let Ok(byte) = u8::from_str_radix(text, 16)
        {
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handshake::Initiator;

    fn config() -> Arc<ServerConfig> {
        Arc::new(ServerConfig::new(StaticKey::generate()))
    }

    fn initiation(cfg: &ServerConfig, version: u16) -> String {
        let (_, init) = Initiator::new(&StaticKey::generate(), &cfg.key.public(), version).unwrap();
        BASE64.encode(init)
    }

    fn body_text(up: &Upgrade) -> String {
        // Full<Bytes> has exactly one frame; peek at it without polling machinery.
        format!("{:?}", up.response.body())
    }

    #[test]
    fn post_form_gets_exact_101_headers() {
        let cfg = config();
        let req = Request::post("/ts2021")
            .header("upgrade", "Tailscale-Control-Protocol")
            .header("connection", "upgrade")
            .header("x-tailscale-handshake", initiation(&cfg, 130))
            .body(())
            .unwrap();
        let up = upgrade(req, cfg);
        assert_eq!(up.response.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(
            up.response.headers()[UPGRADE].as_bytes(),
            b"tailscale-control-protocol"
        );
        assert_eq!(up.response.headers()[CONNECTION].as_bytes(), b"upgrade");
        assert!(up.connection.is_some());
    }

    #[test]
    fn missing_upgrade_is_400() {
        let cfg = config();
        let req = Request::post("/ts2021")
            .header(HANDSHAKE_HEADER, initiation(&cfg, 130))
            .body(())
            .unwrap();
        let up = upgrade(req, cfg);
        assert_eq!(up.response.status(), StatusCode::BAD_REQUEST);
        assert!(
            body_text(&up).contains("missing next protocol"),
            "{}",
            body_text(&up)
        );
        assert!(up.connection.is_none());
    }

    #[test]
    fn unknown_upgrade_is_400() {
        let cfg = config();
        let req = Request::post("/ts2021")
            .header("upgrade", "h2c")
            .header(HANDSHAKE_HEADER, initiation(&cfg, 130))
            .body(())
            .unwrap();
        let up = upgrade(req, cfg);
        assert_eq!(up.response.status(), StatusCode::BAD_REQUEST);
        assert!(
            body_text(&up).contains("unknown next protocol"),
            "{}",
            body_text(&up)
        );
    }

    #[test]
    fn missing_and_bad_handshake_are_400() {
        let cfg = config();
        let req = Request::post("/ts2021")
            .header("upgrade", UPGRADE_PROTOCOL)
            .body(())
            .unwrap();
        let up = upgrade(req, cfg.clone());
        assert_eq!(up.response.status(), StatusCode::BAD_REQUEST);
        assert!(body_text(&up).contains("missing X-Tailscale-Handshake"));

        let req = Request::post("/ts2021")
            .header("upgrade", UPGRADE_PROTOCOL)
            .header(HANDSHAKE_HEADER, "not*base64")
            .body(())
            .unwrap();
        let up = upgrade(req, cfg.clone());
        assert_eq!(up.response.status(), StatusCode::BAD_REQUEST);
        assert!(body_text(&up).contains("not valid base64"));

        // Valid base64 of a truncated initiation.
        let short = BASE64.encode([0u8; 50]);
        let req = Request::post("/ts2021")
            .header("upgrade", UPGRADE_PROTOCOL)
            .header(HANDSHAKE_HEADER, short)
            .body(())
            .unwrap();
        let up = upgrade(req, cfg);
        assert_eq!(up.response.status(), StatusCode::BAD_REQUEST);
        assert!(
            body_text(&up).contains("wrong handshake initiation size"),
            "{}",
            body_text(&up)
        );
    }

    #[test]
    fn old_version_still_switches_so_the_error_frame_can_be_sent() {
        let cfg = Arc::new(ServerConfig {
            min_version: 120,
            ..ServerConfig::new(StaticKey::generate())
        });
        let req = Request::post("/ts2021")
            .header("upgrade", UPGRADE_PROTOCOL)
            .header(HANDSHAKE_HEADER, initiation(&cfg, 100))
            .body(())
            .unwrap();
        let up = upgrade(req, cfg);
        assert_eq!(up.response.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert!(up.connection.is_some());
    }

    #[test]
    fn websocket_form_answers_with_accept_key_and_subprotocol() {
        let cfg = config();
        let query = initiation(&cfg, 130)
            .replace('+', "%2B")
            .replace('/', "%2F")
            .replace('=', "%3D");
        let req = Request::get(format!("/ts2021?other=1&X-Tailscale-Handshake={query}"))
            .header("upgrade", "websocket")
            .header("connection", "Upgrade")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .header("sec-websocket-protocol", "tailscale-control-protocol")
            .body(())
            .unwrap();
        let up = upgrade(req, cfg);
        assert_eq!(up.response.status(), StatusCode::SWITCHING_PROTOCOLS);
        let h = up.response.headers();
        assert_eq!(h[UPGRADE], "websocket");
        // RFC 6455's example key and answer.
        assert_eq!(h[SEC_WEBSOCKET_ACCEPT], "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert_eq!(h[SEC_WEBSOCKET_PROTOCOL], UPGRADE_PROTOCOL);
    }

    #[test]
    fn websocket_form_without_key_or_query_is_400() {
        let cfg = config();
        let req = Request::get("/ts2021")
            .header("upgrade", "websocket")
            .body(())
            .unwrap();
        let up = upgrade(req, cfg.clone());
        assert_eq!(up.response.status(), StatusCode::BAD_REQUEST);
        assert!(body_text(&up).contains("missing X-Tailscale-Handshake"));

        let req = Request::get(format!(
            "/ts2021?X-Tailscale-Handshake={}",
            initiation(&cfg, 130)
        ))
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .body(())
        .unwrap();
        let up = upgrade(req, cfg);
        assert_eq!(up.response.status(), StatusCode::BAD_REQUEST);
        assert!(body_text(&up).contains("Sec-WebSocket-Key"));
    }

    #[test]
    fn query_param_decodes_percent_escapes() {
        assert_eq!(query_param("a=1&X=ab%2B%2f%3D", "X").unwrap(), b"ab+/=");
        assert_eq!(query_param("X=a+b", "X").unwrap(), b"a+b");
        assert_eq!(query_param("X=%zz", "X").unwrap(), b"%zz");
        assert!(query_param("a=1", "X").is_none());
    }
}
