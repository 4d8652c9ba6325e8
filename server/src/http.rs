//! The main HTTP listener: the Tailscale control endpoints (`/key`, `/ts2021`), the embedded
//! relay (`/derp`, probes), the admin API, health, and the console.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router};
use oxiscale_derp::DerpServer;
use oxiscale_noise::ServerConfig as NoiseConfig;
use tracing::{debug, info};

use crate::admin::Admin;
use crate::control::ControlPlane;
use crate::identity::Oidc;

#[derive(Clone)]
pub struct Edge {
    pub control: Arc<ControlPlane>,
    pub noise: Arc<NoiseConfig>,
    pub derp: Option<Arc<DerpServer>>,
    pub admin: Admin,
    pub server_url: String,
    /// Device sign-in through the OpenID Connect provider, when one is configured.
    pub oidc: Option<Arc<Oidc>>,
}

pub fn router(edge: Edge) -> Router {
    let mut r = Router::new()
        .route("/key", get(key))
        .route("/ts2021", any(ts2021))
        .route("/health", get(health))
        .route("/version", get(version))
        .route(
            "/robots.txt",
            get(|| async { "User-agent: *\nDisallow: /\n" }),
        );
    // Without a provider, a login link says how an administrator approves the machine.
    if edge.oidc.is_none() {
        r = r.route("/register/{auth_id}", get(register_page));
    }
    if edge.derp.is_some() {
        r = r
            .route("/derp", any(derp))
            .route("/derp/probe", any(derp_probe))
            .route("/derp/latency-check", any(derp_probe))
            .route("/generate_204", any(generate_204));
    }
    let mut router = r
        .with_state(edge.clone())
        .merge(crate::api::authenticated_routes(edge.admin));
    if let Some(oidc) = edge.oidc {
        router = router.merge(crate::identity::routes::routes(
            oidc,
            edge.control.tailnet.clone(),
            &edge.server_url,
        ));
    }
    router
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

async fn version() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "version": env!("CARGO_PKG_VERSION"), "name": "oxiscale" }))
}

/// Where an interactive login's AuthURL leads: says how an administrator approves it.
async fn register_page(State(edge): State<Edge>, Path(auth_id): Path<String>) -> Response {
    let pending = edge.control.tailnet.read(|s| {
        s.pending_login(&auth_id)
            .map(|p| (p.hostinfo.hostname.clone(), p.machine.short()))
    });
    let Some((hostname, machine)) = pending else {
        return (StatusCode::NOT_FOUND, Html("<!doctype html><title>oxiscale</title><p>This login link is unknown or has expired. Run <code>tailscale up</code> again.</p>".to_owned())).into_response();
    };
    let escape = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
         <title>Approve this machine · oxiscale</title></head><body><main>\
         <h1>Approve this machine</h1><p>The machine <strong>{}</strong> ({}) asks to join the tailnet at {}.</p>\
         <p>An administrator approves it with:</p><pre><code>oxiscale auth register --auth-id {} --user &lt;USER&gt;</code></pre>\
         </main></body></html>",
        escape(&hostname),
        escape(&machine),
        escape(&edge.server_url),
        escape(&auth_id)
    ))
    .into_response()
}
