//! The console's audit log area over the server's audit log.

use app::backend::{AuditBackend, BackendFuture};
use app::dto::ConsoleError;
use app::dto::audit::{AuditQuery, AuditRow};

use super::Backend;
use crate::audit::{AuditEntry, AuditFilter};

fn row(e: AuditEntry) -> AuditRow {
    let pretty = |v: Option<serde_json::Value>| {
        v.map(|v| serde_json::to_string_pretty(&v).unwrap_or_default())
            .unwrap_or_default()
    };
    AuditRow {
        id: e.id,
        at: crate::admin::dto::rfc3339(e.at),
        actor_kind: e.actor.kind.as_str().to_owned(),
        actor: e.actor.name,
        action: e.action,
        target: e.target,
        before: pretty(e.before),
        after: pretty(e.after),
    }
}

impl AuditBackend for Backend {
    fn audit_log(&self, query: AuditQuery, limit: u32) -> BackendFuture<'_, Vec<AuditRow>> {
        Box::pin(async move {
            let some = |s: String| Some(s.trim().to_owned()).filter(|s| !s.is_empty());
            let filter = AuditFilter {
                actor: some(query.actor),
                action: some(query.action),
                target: some(query.target),
                since: None,
                limit: Some(limit),
            };
            let entries = self.admin.audit().list(&filter).await.map_err(|e| {
                tracing::error!(error = %e, "console: the audit log could not be read");
                ConsoleError::Internal("the audit log could not be read".into())
            })?;
            Ok(entries.into_iter().map(row).collect())
        })
    }
}
