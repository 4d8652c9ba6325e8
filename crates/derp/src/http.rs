//! HTTP edge of the relay: the `/derp` upgrade (plain and WebSocket) and the small
//! probe endpoints. Generic over the request body so it plugs into axum or bare hyper.
//!
//! `Derp-Fast-Start: 1` is not supported: hyper always writes the 101 response head before
//! handing over the connection, and a fast-start client would read that head as DERP
//! frames. Clients only send the header after seeing the TLS meta certificate, which this
//! server never presents, so in practice they always use the normal 101 exchange.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

use crate::frame::PROTOCOL_VERSION;
use crate::server::DerpServer;
use crate::ws_stream::{WsByteStream, derp_ws_config};

/// Response body of every handler here.
pub type DerpBody = Full<Bytes>;

/// Body of the 426 reply to a `/derp` request without an upgrade.
pub const UPGRADE_REQUIRED_MESSAGE: &str = "DERP requires connection upgrade";
const WS_SUBPROTOCOL: &str = "derp";
const CHALLENGE_HEADER: &str = "x-tailscale-challenge";
const RESPONSE_HEADER: &str = "x-tailscale-response";

/// Handles a request to `/derp`.
///
/// `Upgrade: DERP` → 101 and the DERP stream on the upgraded connection;
/// `Upgrade: websocket` offering subprotocol `derp` → a WebSocket carrying the DERP stream
/// (a WebSocket upgrade without that subprotocol is treated as plain DERP, as old clients
/// did); anything else → 426. The connection is served on a spawned task.
pub async fn handle_derp<B>(server: Arc<DerpServer>, mut req: Request<B>) -> Response<DerpBody> {
    let upgrade = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .trim();
    let is_derp = upgrade.eq_ignore_ascii_case("derp");
    let is_websocket = upgrade.eq_ignore_ascii_case("websocket");
    if !is_derp && !is_websocket {
        return text_response(StatusCode::UPGRADE_REQUIRED, UPGRADE_REQUIRED_MESSAGE);
    }
    let websocket_derp = is_websocket && offers_derp_subprotocol(req.headers());
    let websocket_key = if websocket_derp {
        match websocket_accept_key(req.headers()) {
            Ok(accept) => Some(accept),
            Err(problem) => return text_response(StatusCode::BAD_REQUEST, problem),
        }
    } else {
        None
    };
    // Present only on HTTP/1.1 connections served with upgrades enabled.
    let Some(on_upgrade) = req.extensions_mut().remove::<OnUpgrade>() else {
        return text_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "connection cannot be upgraded",
        );
    };

    let public_hex = hex::encode(server.public_key().0);
    let response = match &websocket_key {
        Some(accept) => Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(header::UPGRADE, "websocket")
            .header(header::CONNECTION, "Upgrade")
            .header(header::SEC_WEBSOCKET_ACCEPT, accept)
            .header(header::SEC_WEBSOCKET_PROTOCOL, WS_SUBPROTOCOL),
        None => Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(header::UPGRADE, "DERP")
            .header(header::CONNECTION, "Upgrade"),
    }
    .header("Derp-Version", PROTOCOL_VERSION.to_string())
    .header("Derp-Public-Key", public_hex)
    .body(Full::new(Bytes::new()))
    .expect("static headers are valid");

    let websocket = websocket_key.is_some();
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => TokioIo::new(upgraded),
            Err(err) => {
                tracing::debug!(%err, "DERP upgrade failed");
                return;
            }
        };
        let result = if websocket {
            let ws =
                WebSocketStream::from_raw_socket(upgraded, Role::Server, Some(derp_ws_config()))
                    .await;
            server.serve_connection(WsByteStream::new(ws)).await
        } else {
            server.serve_connection(upgraded).await
        };
        if let Err(err) = result {
            tracing::debug!(%err, websocket, "DERP connection ended");
        }
    });
    response
}

fn offers_derp_subprotocol(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == WS_SUBPROTOCOL)
}

fn websocket_accept_key(headers: &HeaderMap) -> Result<String, &'static str> {
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes)
        != Some(b"13")
    {
        return Err("unsupported Sec-WebSocket-Version (need 13)");
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .ok_or("missing Sec-WebSocket-Key")?;
    Ok(derive_accept_key(key.as_bytes()))
}

/// 200 with an empty body for `/derp/probe` and `/derp/latency-check`.
pub fn probe_response() -> Response<DerpBody> {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*")
        .body(Full::new(Bytes::new()))
        .expect("static headers are valid")
}

/// 204 for `/generate_204` (captive-portal check). A valid `X-Tailscale-Challenge` is
/// echoed as `X-Tailscale-Response: response <challenge>`; an invalid one is ignored.
pub fn generate_204<B>(req: &Request<B>) -> Response<DerpBody> {
    let mut builder = Response::builder().status(StatusCode::NO_CONTENT).header(
        header::CACHE_CONTROL,
        "no-cache, no-store, must-revalidate, no-transform, max-age=0",
    );
    if let Some(challenge) = req
        .headers()
        .get(CHALLENGE_HEADER)
        .and_then(|v| v.to_str().ok())
        && is_valid_challenge(challenge)
    {
        builder = builder.header(RESPONSE_HEADER, format!("response {challenge}"));
    }
    builder
        .body(Full::new(Bytes::new()))
        .expect("validated headers are valid")
}

fn is_valid_challenge(challenge: &str) -> bool {
    !challenge.is_empty()
        && challenge.len() <= 64
        && challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

fn text_response(status: StatusCode, text: &'static str) -> Response<DerpBody> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from_static(text.as_bytes())))
        .expect("static headers are valid")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handshake::KeyPair;

    fn server() -> Arc<DerpServer> {
        Arc::new(DerpServer::new(
            KeyPair::generate().private_bytes(),
            Arc::new(|_| true),
        ))
    }

    #[tokio::test]
    async fn plain_get_gets_426() {
        let resp = handle_derp(server(), Request::get("/derp").body(()).unwrap()).await;
        assert_eq!(resp.status(), StatusCode::UPGRADE_REQUIRED);
        let resp = handle_derp(
            server(),
            Request::get("/derp")
                .header("Upgrade", "h2c")
                .body(())
                .unwrap(),
        )
        .await;
        assert_eq!(resp.status(), StatusCode::UPGRADE_REQUIRED);
    }

    #[tokio::test]
    async fn upgrade_without_hyper_connection_is_refused_not_101() {
        let resp = handle_derp(
            server(),
            Request::get("/derp")
                .header("Upgrade", "dErP")
                .body(())
                .unwrap(),
        )
        .await;
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[tokio::test]
    async fn websocket_derp_needs_version_and_key() {
        let req = Request::get("/derp")
            .header("Upgrade", "websocket")
            .header("Sec-WebSocket-Protocol", "derp")
            .body(())
            .unwrap();
        assert_eq!(
            handle_derp(server(), req).await.status(),
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn probe_allows_any_origin() {
        let resp = probe_response();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["access-control-allow-origin"], "*");
    }

    #[test]
    fn generate_204_echoes_only_valid_challenges() {
        let req = Request::get("/generate_204")
            .header("X-Tailscale-Challenge", "abc.DEF_12:3-4")
            .body(())
            .unwrap();
        let resp = generate_204(&req);
        assert_eq!(resp.status(), StatusCode::NO_CONTENT);
        assert_eq!(
            resp.headers()["x-tailscale-response"],
            "response abc.DEF_12:3-4"
        );
        assert!(
            resp.headers()["cache-control"]
                .to_str()
                .unwrap()
                .contains("no-store")
        );

        for bad in ["has space", "semi;colon", &"a".repeat(65), ""] {
            let req = Request::get("/generate_204")
                .header("X-Tailscale-Challenge", bad)
                .body(())
                .unwrap();
            let resp = generate_204(&req);
            assert_eq!(resp.status(), StatusCode::NO_CONTENT);
            assert!(
                resp.headers().get("x-tailscale-response").is_none(),
                "{bad:?}"
            );
        }
        assert!(is_valid_challenge(&"a".repeat(64)));
        let resp = generate_204(&Request::get("/generate_204").body(()).unwrap());
        assert!(resp.headers().get("x-tailscale-response").is_none());
    }
}
