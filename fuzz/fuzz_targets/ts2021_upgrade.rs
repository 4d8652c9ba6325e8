//! The server's `/ts2021` HTTP edge (`oxiscale_noise::upgrade`): the request's Upgrade
//! header, the base64 initiation in `X-Tailscale-Handshake` (POST form) or the query
//! (WebSocket form), the WebSocket headers, then the handshake itself.
//!
//! Input: the URI on the first line, a header per further line (`oxiscale_fuzz::
//! request_from_bytes`). The answer must be a 101 with a connection to drive and the
//! form's headers, or a 400 without one.
#![no_main]

use std::sync::{Arc, OnceLock};

use http::StatusCode;
use http::header::{CONTENT_TYPE, SEC_WEBSOCKET_ACCEPT, UPGRADE};
use libfuzzer_sys::fuzz_target;
use oxiscale_noise::upgrade::UPGRADE_PROTOCOL;
use oxiscale_noise::{ServerConfig, upgrade};

fn config() -> Arc<ServerConfig> {
    static CONFIG: OnceLock<Arc<ServerConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            // A minimum version, so old clients take the error-frame path.
            Arc::new(ServerConfig {
                min_version: 100,
                ..ServerConfig::new(oxiscale_fuzz::server_key())
            })
        })
        .clone()
}

fuzz_target!(|data: &[u8]| {
    let req = oxiscale_fuzz::request_from_bytes(data);
    let asked = req
        .headers()
        .get(UPGRADE)
        .map(|v| v.as_bytes().to_ascii_lowercase());
    let up = upgrade(req, config());
    let status = up.response.status();
    if status == StatusCode::SWITCHING_PROTOCOLS {
        assert!(up.connection.is_some());
        let answered = up.response.headers()[UPGRADE]
            .as_bytes()
            .to_ascii_lowercase();
        assert_eq!(Some(&answered), asked.as_ref());
        if answered == b"websocket" {
            assert!(up.response.headers().contains_key(SEC_WEBSOCKET_ACCEPT));
        } else {
            assert_eq!(answered, UPGRADE_PROTOCOL.as_bytes());
        }
    } else {
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(up.connection.is_none());
        assert!(up.response.headers().contains_key(CONTENT_TYPE));
    }
});
