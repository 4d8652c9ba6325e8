//! The audit log: what the console asks of the server for this area.

use super::BackendFuture;
use crate::dto::audit::{AuditQuery, AuditRow};

pub trait AuditBackend: Send + Sync {
    /// The newest changes that match `query`, at most `limit`.
    fn audit_log(&self, query: AuditQuery, limit: u32) -> BackendFuture<'_, Vec<AuditRow>>;
}
