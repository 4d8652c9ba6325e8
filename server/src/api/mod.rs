//! The admin API: JSON over HTTP with headscale's `/api/v1` paths. Served twice: on the
//! local unix socket, where the socket's file mode is the access control (as in headscale:
//! the CLI uses it), and on the main listener, where every request needs a Bearer API key.

use std::path::Path;

use axum::extract::{Path as UrlPath, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use tracing::{info, warn};

use crate::admin::{
    Admin, AdminError, CompleteRegistration, CreateApiKey, CreatePreAuthKey, CreateUser,
    ExpireNode, KeySelector, PolicyBody,
};
use crate::audit::{self, Actor, ActorKind};
use crate::console::auth::{AccountError, Accounts, AdminAccount};
use crate::policy::{PolicyStoreError, PolicyView};
use crate::tailnet::TailnetError;
use crate::tailnet::dns::DnsSettings;
use crate::tailnet::secret::SecretKind;

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let status = match &self {
            AdminError::BadRequest(_) | AdminError::Tailnet(TailnetError::Invalid(_)) => {
                StatusCode::BAD_REQUEST
            }
            AdminError::Tailnet(TailnetError::NotFound { .. }) => StatusCode::NOT_FOUND,
            AdminError::Tailnet(TailnetError::Conflict(_)) => StatusCode::CONFLICT,
            AdminError::Tailnet(TailnetError::Addresses(_)) => StatusCode::SERVICE_UNAVAILABLE,
            AdminError::Tailnet(TailnetError::Storage(_)) => StatusCode::INTERNAL_SERVER_ERROR,
            AdminError::PolicyInvalid(_)
            | AdminError::Policy(PolicyStoreError::Invalid(_))
            | AdminError::Policy(PolicyStoreError::InvalidFile { .. }) => StatusCode::BAD_REQUEST,
            AdminError::Policy(PolicyStoreError::FileMode(_)) => StatusCode::CONFLICT,
            AdminError::Policy(PolicyStoreError::Tailnet(_))
            | AdminError::Policy(PolicyStoreError::Read { .. })
            | AdminError::Policy(PolicyStoreError::Store(_)) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status.is_server_error() {
            warn!(error = %self, "admin request failed");
        }
        // A refused policy also says where, for editors that can jump there.
        let position = match &self {
            AdminError::PolicyInvalid(e)
            | AdminError::Policy(PolicyStoreError::Invalid(e))
            | AdminError::Policy(PolicyStoreError::InvalidFile { source: e, .. }) => {
                Some((e.line, e.column))
            }
            _ => None,
        };
        let mut body = serde_json::json!({ "error": self.to_string() });
        if let Some((line, column)) = position {
            body["line"] = serde_json::json!(line);
            body["column"] = serde_json::json!(column);
        }
        (status, Json(body)).into_response()
    }
}

type ApiResult<T> = Result<Json<T>, AdminError>;

/// The routes, without authentication (callers add it).
pub fn routes(admin: Admin) -> Router {
    Router::new()
        .route("/api/v1/user", get(list_users).post(create_user))
        .route("/api/v1/user/{id}", delete(delete_user))
        .route("/api/v1/user/{id}/rename/{new_name}", post(rename_user))
        .route(
            "/api/v1/preauthkey",
            get(list_preauth_keys)
                .post(create_preauth_key)
                .delete(delete_preauth_key),
        )
        .route("/api/v1/preauthkey/expire", post(expire_preauth_key))
        .route("/api/v1/apikey", get(list_api_keys).post(create_api_key))
        .route("/api/v1/apikey/expire", post(expire_api_key))
        .route("/api/v1/apikey/{prefix}", delete(delete_api_key))
        .route("/api/v1/node", get(list_nodes))
        .route("/api/v1/node/backfillips", post(backfill_ips))
        .route("/api/v1/node/{id}", get(get_node).delete(delete_node))
        .route("/api/v1/node/{id}/expire", post(expire_node))
        .route("/api/v1/node/{id}/approve", post(approve_node))
        .route("/api/v1/node/{id}/rename/{new_name}", post(rename_node))
        .route("/api/v1/node/{id}/tags", post(set_tags))
        .route("/api/v1/node/{id}/approve_routes", post(approve_routes))
        .route("/api/v1/node/{id}/routes", get(list_routes))
        .route("/api/v1/routes", get(list_all_routes))
        .route("/api/v1/auth/register", post(complete_registration))
        .route("/api/v1/policy", get(get_policy).put(set_policy))
        .route("/api/v1/policy/check", post(check_policy))
        .route("/api/v1/dns", get(get_dns).put(set_dns))
        .route(
            "/api/v1/console/admin",
            get(list_console_admins).post(create_console_admin),
        )
        .route("/api/v1/console/admin/{name}", delete(delete_console_admin))
        .route("/api/v1/audit", get(export_audit))
        .with_state(admin)
}

/// The API for the main listener: every request must carry a valid API key.
pub fn authenticated_routes(admin: Admin) -> Router {
    routes(admin.clone()).layer(middleware::from_fn_with_state(admin, require_api_key))
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
            let prefix = crate::tailnet::secret::prefix_of(SecretKind::Api, key).unwrap_or("?");
            let actor = Actor::new(ActorKind::ApiKey, format!("API key {prefix}"));
            audit::acting_as(actor, next.run(req)).await
        }
        _ => {
            info!(path = %req.uri().path(), "admin API request without a valid API key");
            (StatusCode::UNAUTHORIZED, Json(serde_json::json!({ "error": "a valid API key is required (Authorization: Bearer …)" })))
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

async fn list_users(State(a): State<Admin>) -> ApiResult<Vec<crate::admin::dto::UserView>> {
    Ok(Json(a.list_users()))
}

async fn create_user(
    State(a): State<Admin>,
    Json(req): Json<CreateUser>,
) -> ApiResult<crate::admin::dto::UserView> {
    Ok(Json(a.create_user(req).await?))
}

async fn delete_user(
    State(a): State<Admin>,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<serde_json::Value> {
    let id = a.resolve_user(&id)?;
    a.delete_user(id).await?;
    Ok(Json(serde_json::json!({})))
}

async fn rename_user(
    State(a): State<Admin>,
    UrlPath((id, new_name)): UrlPath<(String, String)>,
) -> ApiResult<crate::admin::dto::UserView> {
    let id = a.resolve_user(&id)?;
    Ok(Json(a.rename_user(id, new_name).await?))
}

async fn list_preauth_keys(
    State(a): State<Admin>,
) -> ApiResult<Vec<crate::admin::dto::PreAuthKeyView>> {
    Ok(Json(a.list_preauth_keys()))
}

async fn create_preauth_key(
    State(a): State<Admin>,
    Json(req): Json<CreatePreAuthKey>,
) -> ApiResult<crate::admin::dto::PreAuthKeyView> {
    Ok(Json(a.create_preauth_key(req).await?))
}

#[derive(Deserialize)]
struct IdBody {
    id: u64,
}

async fn expire_preauth_key(
    State(a): State<Admin>,
    Json(req): Json<IdBody>,
) -> ApiResult<crate::admin::dto::PreAuthKeyView> {
    Ok(Json(a.expire_preauth_key(req.id).await?))
}

async fn delete_preauth_key(
    State(a): State<Admin>,
    Query(req): Query<IdBody>,
) -> ApiResult<serde_json::Value> {
    a.delete_preauth_key(req.id).await?;
    Ok(Json(serde_json::json!({})))
}

async fn list_api_keys(State(a): State<Admin>) -> ApiResult<Vec<crate::admin::dto::ApiKeyView>> {
    Ok(Json(a.list_api_keys()))
}

async fn create_api_key(
    State(a): State<Admin>,
    Json(req): Json<CreateApiKey>,
) -> ApiResult<crate::admin::dto::ApiKeyView> {
    Ok(Json(a.create_api_key(req).await?))
}

async fn expire_api_key(
    State(a): State<Admin>,
    Json(req): Json<KeySelector>,
) -> ApiResult<crate::admin::dto::ApiKeyView> {
    Ok(Json(a.expire_api_key(req).await?))
}

async fn delete_api_key(
    State(a): State<Admin>,
    UrlPath(prefix): UrlPath<String>,
) -> ApiResult<serde_json::Value> {
    let sel = match prefix.parse::<u64>() {
        Ok(id) => KeySelector {
            id: Some(id),
            prefix: None,
        },
        Err(_) => KeySelector {
            id: None,
            prefix: Some(prefix),
        },
    };
    a.delete_api_key(sel).await?;
    Ok(Json(serde_json::json!({})))
}

#[derive(Deserialize)]
struct NodeFilter {
    user: Option<String>,
}

async fn list_nodes(
    State(a): State<Admin>,
    Query(f): Query<NodeFilter>,
) -> ApiResult<Vec<crate::admin::dto::NodeView>> {
    let user = f
        .user
        .as_deref()
        .filter(|u| !u.is_empty())
        .map(|u| a.resolve_user(u))
        .transpose()?;
    Ok(Json(a.list_nodes(user)))
}

async fn get_node(
    State(a): State<Admin>,
    UrlPath(id): UrlPath<u64>,
) -> ApiResult<crate::admin::dto::NodeView> {
    Ok(Json(a.node(id)?))
}

async fn delete_node(
    State(a): State<Admin>,
    UrlPath(id): UrlPath<u64>,
) -> ApiResult<crate::admin::dto::NodeView> {
    Ok(Json(a.delete_node(id).await?))
}

/// headscale's query form of a node expiry: `?expiry=<RFC 3339>` or `?disableExpiry=true`.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ExpireQuery {
    expiry: Option<String>,
    disable_expiry: Option<bool>,
}

async fn expire_node(
    State(a): State<Admin>,
    UrlPath(id): UrlPath<u64>,
    Query(query): Query<ExpireQuery>,
    body: Option<Json<ExpireNode>>,
) -> ApiResult<crate::admin::dto::NodeView> {
    // What the query asks for wins over the body: headscale's clients send only the query,
    // and reading neither once expired nodes that were meant never to expire.
    let mut req = body.map(|b| b.0).unwrap_or_default();
    if let Some(disable) = query.disable_expiry {
        req.disable = disable;
    }
    if query.expiry.is_some() {
        req.at = query.expiry;
    }
    Ok(Json(a.expire_node(id, req).await?))
}

async fn approve_node(
    State(a): State<Admin>,
    UrlPath(id): UrlPath<u64>,
) -> ApiResult<crate::admin::dto::NodeView> {
    Ok(Json(a.approve_node(id).await?))
}

async fn rename_node(
    State(a): State<Admin>,
    UrlPath((id, new_name)): UrlPath<(u64, String)>,
) -> ApiResult<crate::admin::dto::NodeView> {
    Ok(Json(a.rename_node(id, new_name).await?))
}

#[derive(Deserialize)]
struct TagsBody {
    tags: Vec<String>,
}

async fn set_tags(
    State(a): State<Admin>,
    UrlPath(id): UrlPath<u64>,
    Json(b): Json<TagsBody>,
) -> ApiResult<crate::admin::dto::NodeView> {
    Ok(Json(a.set_tags(id, b.tags).await?))
}

#[derive(Deserialize)]
struct RoutesBody {
    routes: Vec<String>,
}

async fn approve_routes(
    State(a): State<Admin>,
    UrlPath(id): UrlPath<u64>,
    Json(b): Json<RoutesBody>,
) -> ApiResult<crate::admin::dto::NodeView> {
    Ok(Json(a.approve_routes(id, b.routes).await?))
}

async fn list_routes(
    State(a): State<Admin>,
    UrlPath(id): UrlPath<u64>,
) -> ApiResult<Vec<crate::admin::dto::RoutesView>> {
    Ok(Json(a.list_routes(Some(id))?))
}

async fn list_all_routes(State(a): State<Admin>) -> ApiResult<Vec<crate::admin::dto::RoutesView>> {
    Ok(Json(a.list_routes(None)?))
}

async fn backfill_ips(State(a): State<Admin>) -> ApiResult<serde_json::Value> {
    let changed = a.backfill_ips().await?;
    Ok(Json(serde_json::json!({ "changed": changed })))
}

async fn complete_registration(
    State(a): State<Admin>,
    Json(req): Json<CompleteRegistration>,
) -> ApiResult<crate::admin::dto::NodeView> {
    Ok(Json(a.complete_registration(req).await?))
}

async fn get_policy(State(a): State<Admin>) -> ApiResult<PolicyView> {
    Ok(Json(a.get_policy().await))
}

async fn set_policy(State(a): State<Admin>, Json(b): Json<PolicyBody>) -> ApiResult<PolicyView> {
    Ok(Json(a.set_policy(b.policy).await?))
}

/// The report of a policy compiled against the live tailnet (golden `expect` shape).
async fn check_policy(
    State(a): State<Admin>,
    Json(b): Json<PolicyBody>,
) -> ApiResult<serde_json::Value> {
    Ok(Json(a.check_policy(&b.policy)?))
}

async fn get_dns(State(a): State<Admin>) -> ApiResult<DnsSettings> {
    Ok(Json(a.get_dns().await))
}

/// Validates, stores and puts the settings in force; answers with their canonical form.
async fn set_dns(State(a): State<Admin>, Json(b): Json<DnsSettings>) -> ApiResult<DnsSettings> {
    Ok(Json(a.set_dns(b).await?))
}

// Console administrators (the accounts that sign in to the web console).

impl IntoResponse for AccountError {
    fn into_response(self) -> Response {
        let status = match &self {
            AccountError::InvalidName(_)
            | AccountError::WeakPassword
            | AccountError::BadSetupToken
            | AccountError::UnknownRole(_)
            | AccountError::MemberAccount => StatusCode::BAD_REQUEST,
            AccountError::Exists(_) | AccountError::SetupDone => StatusCode::CONFLICT,
            AccountError::NotFound(_) => StatusCode::NOT_FOUND,
            AccountError::Hash(_) | AccountError::Sql(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status.is_server_error() {
            warn!(error = %self, "console administrator request failed");
        }
        (
            status,
            Json(serde_json::json!({ "error": self.to_string() })),
        )
            .into_response()
    }
}

fn console_accounts(a: &Admin) -> Accounts {
    Accounts::new(a.tailnet().store().pool().clone())
}

#[derive(Deserialize)]
struct CreateConsoleAdmin {
    name: String,
    password: String,
    /// `owner` when absent.
    #[serde(default)]
    role: Option<String>,
}

async fn list_console_admins(
    State(a): State<Admin>,
) -> Result<Json<Vec<AdminAccount>>, AccountError> {
    Ok(Json(console_accounts(&a).list().await?))
}

async fn create_console_admin(
    State(a): State<Admin>,
    Json(req): Json<CreateConsoleAdmin>,
) -> Result<Json<AdminAccount>, AccountError> {
    let role = match req.role.as_deref() {
        None | Some("") => app::api::Role::Owner,
        Some(r) => {
            app::api::Role::parse(r).ok_or_else(|| AccountError::UnknownRole(r.to_owned()))?
        }
    };
    let account = console_accounts(&a)
        .create(&req.name, &req.password, role)
        .await?;
    info!(admin = %account.name, "console administrator created");
    record(
        &a,
        "console_admin.create",
        &format!("console administrator {}", account.name),
        None,
        serde_json::to_value(&account).ok(),
    )
    .await;
    Ok(Json(account))
}

/// Records a change made here rather than through the admin service.
async fn record(
    a: &Admin,
    action: &str,
    target: &str,
    before: Option<serde_json::Value>,
    after: Option<serde_json::Value>,
) {
    if let Err(e) = a.audit().record(action, target, before, after).await {
        warn!(error = %e, action, "a change could not be written to the audit log");
    }
}

/// `GET /api/v1/audit`: the audit log as JSON lines, oldest first (`actor`, `action` prefix,
/// `target`, `since` (RFC 3339) and `limit` filter it).
async fn export_audit(
    State(a): State<Admin>,
    Query(filter): Query<audit::AuditFilter>,
) -> Response {
    match a.audit().list(&filter).await {
        Ok(entries) => (
            [(axum::http::header::CONTENT_TYPE, "application/jsonl")],
            audit::json_lines(&entries),
        )
            .into_response(),
        Err(e @ audit::AuditError::BadSince(_)) => (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({ "error": e.to_string() })),
        )
            .into_response(),
        Err(e) => {
            warn!(error = %e, "the audit log could not be read");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(serde_json::json!({ "error": "the audit log could not be read" })),
            )
                .into_response()
        }
    }
}

async fn delete_console_admin(
    State(a): State<Admin>,
    UrlPath(name): UrlPath<String>,
) -> Result<Json<serde_json::Value>, AccountError> {
    console_accounts(&a).delete(&name).await?;
    record(
        &a,
        "console_admin.delete",
        &format!("console administrator {name}"),
        None,
        None,
    )
    .await;
    info!(admin = %name, "console administrator deleted; their sessions end with their next request");
    Ok(Json(serde_json::json!({})))
}
