//! What a client asks before anything else: `GET /version` (no key needed), the OpenAPI
//! document, and `GET /api/v1/health`.

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use serde_json::{Value, json};

use crate::admin::Admin;

/// The headscale release whose REST API, CLI and configuration oxiscale answers like. Tools
/// such as Headplane enable features by this version, so it names the newest release whose
/// contract oxiscale meets route for route.
pub const HEADSCALE_VERSION: &str = "v0.29.2";

/// headscale 0.29.2's OpenAPI (Swagger 2.0) document, as headscale serves it. oxiscale's
/// extensions (`POST /api/v1/node/{nodeId}/approve`, `GET /api/v1/node/{nodeId}/routes`,
/// `GET /api/v1/routes`, `/api/v1/dns`, `/api/v1/console/admin`, `GET /api/v1/audit`) are not
/// in it; the README lists them.
pub const OPENAPI: &str =
    include_str!("../../../fixtures/headscale/api/headscale-0.29.2.swagger.json");

/// `GOARCH`'s name for this machine, which headscale's `/version` reports.
fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// headscale's `/version` body, with oxiscale's own version beside it.
pub fn version_body() -> Value {
    json!({
        "version": HEADSCALE_VERSION,
        "commit": option_env!("OXISCALE_GIT_COMMIT").unwrap_or("unknown"),
        "buildTime": option_env!("OXISCALE_BUILD_TIME").unwrap_or("unknown"),
        "go": {
            // No Go here: the toolchain field names Rust.
            "version": "rust",
            "os": std::env::consts::OS,
            "arch": arch(),
        },
        "dirty": false,
        "oxiscale": {
            "version": env!("CARGO_PKG_VERSION"),
        },
    })
}

pub async fn version() -> Json<Value> {
    Json(version_body())
}

pub async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}

pub async fn health(State(a): State<Admin>) -> Json<Value> {
    let ok = a.tailnet().store().ping().await.is_ok();
    Json(json!({ "databaseConnectivity": ok }))
}
