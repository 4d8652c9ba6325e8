//! Access controls: what the console asks of the server for this area.

/// Access controls as the server provides them.
pub trait PolicyBackend: Send + Sync {}
