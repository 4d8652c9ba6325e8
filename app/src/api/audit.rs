//! Server functions of the audit log.

use leptos::prelude::*;
use leptos::server_fn::codec::Json;

use crate::dto::ConsoleError;
use crate::dto::audit::{AuditQuery, AuditRow};

/// The newest changes matching `query` (auditors and admins; not members).
#[server(prefix = "/console/fn", endpoint = "audit", client = crate::api::ConsoleClient, input = Json)]
pub async fn list_audit(query: AuditQuery) -> Result<Vec<AuditRow>, ConsoleError> {
    crate::backend::use_backend_for_all(crate::api::Permission::ReadTailnet)?
        .audit_log(query, crate::dto::audit::AUDIT_PAGE_ROWS)
        .await
}
