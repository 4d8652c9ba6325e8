//! oxiscale's own routes beside headscale's: the console administrators and the audit log.

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tracing::{info, warn};

use super::errors::{ApiError, Code, WireJson, WireQuery};
use crate::admin::Admin;
use crate::audit;
use crate::console::auth::{AccountError, Accounts, AdminAccount};

fn console_accounts(a: &Admin) -> Accounts {
    Accounts::new(a.tailnet().store().pool().clone())
}

#[derive(Deserialize)]
pub struct CreateConsoleAdmin {
    name: String,
    password: String,
    /// `owner` when absent.
    #[serde(default)]
    role: Option<String>,
}

pub async fn list_console_admins(
    State(a): State<Admin>,
) -> Result<Json<Vec<AdminAccount>>, ApiError> {
    Ok(Json(console_accounts(&a).list().await?))
}

pub async fn create_console_admin(
    State(a): State<Admin>,
    WireJson(req): WireJson<CreateConsoleAdmin>,
) -> Result<Json<AdminAccount>, ApiError> {
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

pub async fn delete_console_admin(
    State(a): State<Admin>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
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
pub async fn export_audit(
    State(a): State<Admin>,
    WireQuery(filter): WireQuery<audit::AuditFilter>,
) -> Response {
    match a.audit().list(&filter).await {
        Ok(entries) => (
            [(axum::http::header::CONTENT_TYPE, "application/jsonl")],
            audit::json_lines(&entries),
        )
            .into_response(),
        Err(e @ audit::AuditError::BadSince(_)) => ApiError::invalid(e.to_string()).into_response(),
        Err(e) => {
            warn!(error = %e, "the audit log could not be read");
            ApiError::new(Code::Internal, "the audit log could not be read").into_response()
        }
    }
}
