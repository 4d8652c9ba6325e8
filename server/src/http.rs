//! The main HTTP listener: the Tailscale control endpoints (`/key`, `/ts2021`), the embedded
//! relay (`/derp`, probes), the admin API, health, and the console.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router};
use oxiscale_derp::DerpServer;
use oxiscale_noise::ServerConfig as NoiseConfig;
use tracing::{debug, info};

use crate::admin::Admin;
use crate::control::ControlPlane;
use crate::identity::OidcHandle;

#[derive(Clone)]
pub struct Edge {
    pub control: Arc<ControlPlane>,
    pub noise: Arc<NoiseConfig>,
    pub derp: Option<Arc<DerpServer>>,
    pub admin: Admin,
    pub server_url: String,
    /// Device sign-in through the OpenID Connect provider in force (read per request; without
    /// one, a login link says how an administrator approves the machine).
    pub oidc: OidcHandle,
}

pub fn router(edge: Edge) -> Router {
    let mut r = Router::new()
        .route("/key", get(key))
        .route("/ts2021", any(ts2021))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/version", get(version))
        .route(
            "/robots.txt",
            get(|| async { "User-agent: *\nDisallow: /\n" }),
        );
    if edge.derp.is_some() {
        r = r
            .route("/derp", any(derp))
            .route("/derp/probe", any(derp_probe))
            .route("/derp/latency-check", any(derp_probe))
            .route("/generate_204", any(generate_204));
    }
    r.with_state(edge.clone())
        .merge(crate::api::authenticated_routes(edge.admin))
        .merge(crate::identity::routes::routes(
            edge.oidc,
            edge.control.tailnet.clone(),
            &edge.server_url,
        ))
}

async fn key(State(edge): State<Edge>) -> Json<oxiscale_noise::KeyResponse> {
    Json(oxiscale_noise::key_response(edge.noise.key.public()))
}

async fn ts2021(State(edge): State<Edge>, req: Request) -> Response {
    let upgrade = oxiscale_noise::upgrade(req, edge.noise.clone());
    if let Some(pending) = upgrade.connection {
        let control = edge.control.clone();
        tokio::spawn(async move {
            let conn = match pending.await {
                Ok(c) => c,
                Err(e) => {
                    info!(error = %e, "ts2021 upgrade did not complete");
                    return;
                }
            };
            debug!(machine = %conn.machine.short(), version = conn.version, "control connection established");
            let mut shutdown = control.shutdown.clone();
            tokio::select! {
                _ = control.clone().serve_connection(conn.machine, conn.stream) => {}
                _ = shutdown.changed() => {}
            }
        });
    }
    upgrade.response.map(Body::new)
}

async fn derp(State(edge): State<Edge>, req: Request) -> Response {
    match edge.derp {
        Some(server) => oxiscale_derp::handle_derp(server, req).await.map(Body::new),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn derp_probe() -> Response {
    oxiscale_derp::probe_response().map(Body::new)
}

async fn generate_204(req: Request) -> Response {
    oxiscale_derp::generate_204(&req).map(Body::new)
}

async fn health(State(edge): State<Edge>) -> Response {
    let ok = edge.control.tailnet.store().ping().await.is_ok();
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({ "status": if ok { "pass" } else { "fail" } });
    (
        status,
        [(header::CONTENT_TYPE, "application/health+json")],
        body.to_string(),
    )
        .into_response()
}

/// Readiness, for a load balancer or an orchestrator: whether new clients should be sent
/// here. Unlike `/health`, it turns 503 as soon as the server starts shutting down.
async fn ready(State(edge): State<Edge>) -> Response {
    let stopping = *edge.control.shutdown.borrow();
    let ok = !stopping && edge.control.tailnet.store().ping().await.is_ok();
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({ "ready": ok, "shutting_down": stopping });
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// headscale's `/version` answer (see `api::meta`).
async fn version() -> Json<serde_json::Value> {
    Json(crate::api::meta::version_body())
}
