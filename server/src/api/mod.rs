//! The admin API: headscale 0.29's `/api/v1` REST API as grpc-gateway serves it (its paths,
//! envelopes, protojson field names and types, and error bodies: see `wire.rs` and
//! `errors.rs`), plus oxiscale's extensions. Served twice: on the local unix socket, where
//! the socket's file mode is the access control (as in headscale: the CLI uses it), and on
//! the main listener, where every request needs a Bearer API key.

mod attributes;
pub mod errors;
mod extensions;
mod keys;
pub mod meta;
mod nodes;
mod policy;
mod users;
pub mod wire;

use std::path::Path;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, delete, get, post};
use tracing::info;

use crate::admin::Admin;
use crate::audit::{self, Actor, ActorKind};
use crate::tailnet::secret::SecretKind;
use errors::{ApiError, Code};

/// The routes, without authentication (callers add it).
pub fn routes(admin: Admin) -> Router {
    Router::new()
        // headscale's routes (its OpenAPI document, `meta::OPENAPI`).
        .route("/api/v1/health", get(meta::health))
        .route(
            "/api/v1/user",
            get(users::list_users).post(users::create_user),
        )
        .route("/api/v1/user/{id}", delete(users::delete_user))
        .route(
            "/api/v1/user/{id}/rename/{new_name}",
            post(users::rename_user),
        )
        .route(
            "/api/v1/preauthkey",
            get(keys::list_preauth_keys)
                .post(keys::create_preauth_key)
                .delete(keys::delete_preauth_key),
        )
        .route("/api/v1/preauthkey/expire", post(keys::expire_preauth_key))
        .route(
            "/api/v1/apikey",
            get(keys::list_api_keys).post(keys::create_api_key),
        )
        .route("/api/v1/apikey/expire", post(keys::expire_api_key))
        .route("/api/v1/apikey/{prefix}", delete(keys::delete_api_key))
        .route("/api/v1/node", get(nodes::list_nodes))
        .route("/api/v1/node/backfillips", post(nodes::backfill_ips))
        .route("/api/v1/node/register", post(nodes::register_node))
        .route(
            "/api/v1/node/{id}",
            get(nodes::get_node).delete(nodes::delete_node),
        )
        .route("/api/v1/node/{id}/expire", post(nodes::expire_node))
        .route(
            "/api/v1/node/{id}/rename/{new_name}",
            post(nodes::rename_node),
        )
        .route("/api/v1/node/{id}/tags", post(nodes::set_tags))
        .route(
            "/api/v1/node/{id}/approve_routes",
            post(nodes::approve_routes),
        )
        .route("/api/v1/auth/register", post(nodes::auth_register))
        .route("/api/v1/auth/approve", post(nodes::auth_approve))
        .route("/api/v1/auth/reject", post(nodes::auth_reject))
        .route("/api/v1/debug/node", post(nodes::debug_create_node))
        .route(
            "/api/v1/policy",
            get(policy::get_policy).put(policy::set_policy),
        )
        .route("/api/v1/policy/check", post(policy::check_policy))
        // oxiscale's extensions.
        .route("/api/v1/node/{id}/approve", post(nodes::approve_node))
        .route("/api/v1/node/{id}/routes", get(nodes::list_routes))
        .route("/api/v1/routes", get(nodes::list_all_routes))
        .route("/api/v1/dns", get(policy::get_dns).put(policy::set_dns))
        .route(
            "/api/v1/console/admin",
            get(extensions::list_console_admins).post(extensions::create_console_admin),
        )
        .route(
            "/api/v1/console/admin/{name}",
            delete(extensions::delete_console_admin),
        )
        .route("/api/v1/audit", get(extensions::export_audit))
        // Tailscale's API v2: device posture attributes.
        .route("/api/v2/device/{id}/attributes", get(attributes::list))
        .route(
            "/api/v2/device/{id}/attributes/{key}",
            post(attributes::set).delete(attributes::delete),
        )
        // grpc-gateway's answer to a path it does not know.
        .route(
            "/api/v1/{*rest}",
            any(|| async { ApiError::not_found("Not Found") }),
        )
        // ... and to a path it knows with another method (its 405 is Unimplemented: 501).
        .method_not_allowed_fallback(|| async {
            ApiError::new(Code::Unimplemented, "Method Not Allowed")
        })
        .with_state(admin)
}

/// The API for the main listener: every `/api/v1` request must carry a valid API key; the
/// OpenAPI document is public, as headscale's is.
pub fn authenticated_routes(admin: Admin) -> Router {
    routes(admin.clone())
        .layer(middleware::from_fn_with_state(admin, require_api_key))
        .route("/swagger/v1/openapiv2.json", get(meta::openapi))
}

async fn require_api_key(State(admin): State<Admin>, req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match presented {
        Some(key) if admin.verify_api_key(key) => {
            // The key's public prefix names it in the audit log (never the secret).
            let prefix = crate::tailnet::secret::parse_presented(SecretKind::Api, key)
                .map_or("?", |(prefix, _)| prefix);
            let actor = Actor::new(ActorKind::ApiKey, format!("API key {prefix}"));
            audit::acting_as(actor, next.run(req)).await
        }
        _ => {
            info!(path = %req.uri().path(), "admin API request without a valid API key");
            ApiError::new(
                Code::Unauthenticated,
                "a valid API key is required (Authorization: Bearer …)",
            )
            .into_response()
        }
    }
}

/// Binds the admin socket with mode `permission`, replacing a stale socket file.
pub fn bind_socket(path: &Path, permission: u32) -> std::io::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    if path.exists() {
        std::fs::remove_file(path)?;
    }
    let listener = tokio::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(permission))?;
    Ok(listener)
}

/// Serves the routes on a bound admin socket until `shutdown` resolves.
pub async fn serve_socket(
    admin: Admin,
    listener: tokio::net::UnixListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // Whoever may open the socket acts as the CLI (its file mode is the access control).
    let cli = routes(admin).layer(middleware::from_fn(|req: Request, next: Next| {
        audit::acting_as(Actor::new(ActorKind::Cli, "admin socket"), next.run(req))
    }));
    axum::serve(listener, cli)
        .with_graceful_shutdown(shutdown)
        .await
}
