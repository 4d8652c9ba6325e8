//! DNS settings: what the console asks of the server for this area.

use super::BackendFuture;
use crate::dto::dns::DnsSettings;

/// DNS settings as the server provides them.
pub trait DnsBackend: Send + Sync {
    /// The settings in force.
    fn dns_settings(&self) -> BackendFuture<'_, DnsSettings>;
    /// Validates, stores and applies new settings (every connected node gets them at once);
    /// returns them in canonical form. Refused settings change nothing.
    fn set_dns_settings(&self, settings: DnsSettings) -> BackendFuture<'_, DnsSettings>;
}
