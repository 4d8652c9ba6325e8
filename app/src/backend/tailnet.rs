//! Machines, users and keys: what the console asks of the server for this area.

/// Machines, users and keys as the server provides them.
pub trait TailnetBackend: Send + Sync {}
