//! The audit log as the console shows it.

use serde::{Deserialize, Serialize};

/// Which entries to show; every field is optional (empty: no filter).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditQuery {
    /// Part of the actor's name.
    pub actor: String,
    /// The start of the action (`node.` for every machine change).
    pub action: String,
    /// Part of the target (`node 7`, `user alice`).
    pub target: String,
}

/// One administrative change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRow {
    pub id: u64,
    /// RFC 3339.
    pub at: String,
    /// How the actor proved who they are: `local_admin`, `sso`, `api_key`, `cli`, `server`.
    pub actor_kind: String,
    pub actor: String,
    pub action: String,
    pub target: String,
    /// The thing before and after, as pretty JSON (secrets masked); empty when none.
    pub before: String,
    pub after: String,
}

/// The most rows the console shows at once (the CLI and API export everything).
pub const AUDIT_PAGE_ROWS: u32 = 500;
