//! Server functions of the dns area.

use leptos::prelude::*;

use crate::dto::ConsoleError;
use crate::dto::dns::DnsSettings;

/// The DNS settings in force.
#[server(prefix = "/console/fn", endpoint = "dns/get", client = crate::api::ConsoleClient)]
pub async fn get_dns() -> Result<DnsSettings, ConsoleError> {
    crate::backend::use_backend_for_all(crate::api::Permission::ReadDns)?
        .dns_settings()
        .await
}

/// Saves and applies new DNS settings; answers with what is now in force.
#[server(prefix = "/console/fn", endpoint = "dns/set", client = crate::api::ConsoleClient, input = leptos::server_fn::codec::Json)]
pub async fn set_dns(settings: DnsSettings) -> Result<DnsSettings, ConsoleError> {
    crate::backend::use_backend_for_all(crate::api::Permission::WriteDns)?
        .set_dns_settings(settings)
        .await
}
