//! The console's dns area over the admin service.

use app::backend::BackendFuture;
use app::dto::ConsoleError;
use app::dto::dns::{DnsSettings, ExtraRecord, SplitDns};

use super::{Backend, console_error};
use crate::tailnet::dns as tailnet_dns;

impl app::backend::DnsBackend for Backend {
    fn dns_settings(&self) -> BackendFuture<'_, DnsSettings> {
        Box::pin(async move { Ok(to_dto(self.admin.get_dns().await)) })
    }

    fn set_dns_settings(&self, settings: DnsSettings) -> BackendFuture<'_, DnsSettings> {
        Box::pin(async move {
            let settings = from_dto(settings)?;
            self.admin
                .set_dns(settings)
                .await
                .map(to_dto)
                .map_err(console_error)
        })
    }
}

fn to_dto(s: tailnet_dns::DnsSettings) -> DnsSettings {
    DnsSettings {
        magic_dns: s.magic_dns,
        base_domain: s.base_domain,
        override_local_dns: s.override_local_dns,
        nameservers: s.nameservers,
        split_dns: s
            .split
            .into_iter()
            .map(|(domain, nameservers)| SplitDns {
                domain,
                nameservers,
            })
            .collect(),
        search_domains: s.search_domains,
        extra_records: s
            .extra_records
            .into_iter()
            .map(|r| ExtraRecord {
                name: r.name,
                record_type: r.record_type,
                value: r.value,
            })
            .collect(),
    }
}

fn from_dto(s: DnsSettings) -> Result<tailnet_dns::DnsSettings, ConsoleError> {
    let mut split = std::collections::BTreeMap::new();
    for entry in s.split_dns {
        let key = entry.domain.trim().trim_matches('.').to_ascii_lowercase();
        if split.insert(key, entry.nameservers).is_some() {
            return Err(ConsoleError::Refused(format!(
                "split DNS: {:?} appears twice",
                entry.domain.trim()
            )));
        }
    }
    Ok(tailnet_dns::DnsSettings {
        magic_dns: s.magic_dns,
        base_domain: s.base_domain,
        override_local_dns: s.override_local_dns,
        nameservers: s.nameservers,
        split,
        search_domains: s.search_domains,
        extra_records: s
            .extra_records
            .into_iter()
            .map(|r| tailnet_dns::ExtraRecord {
                name: r.name,
                record_type: r.record_type,
                value: r.value,
            })
            .collect(),
    })
}
