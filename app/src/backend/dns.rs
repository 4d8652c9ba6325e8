//! DNS settings: what the console asks of the server for this area.

/// DNS settings as the server provides them.
pub trait DnsBackend: Send + Sync {}
