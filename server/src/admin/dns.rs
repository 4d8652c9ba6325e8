//! DNS settings at run time: read, validate, store, and push to every connected node at
//! once, without a restart.

use std::sync::Arc;

use tokio::sync::Mutex;
use tracing::{info, warn};

use super::{Admin, AdminError};
use crate::config::Config;
use crate::control::ControlPlane;
use crate::store::{Store, StoreError};
use crate::tailnet::dns::{DNS_SETTING_KEY, DnsSettings};
use crate::tailnet::{Change, DbOp, TailnetError};

/// The settings in force at start: the stored ones if an administrator saved some, else the
/// config file's. Stored settings that no longer read are reported and the file's are used,
/// so a bad row cannot keep the server down.
pub async fn effective_settings(store: &Store, config: &Config) -> Result<DnsSettings, StoreError> {
    let from_file = DnsSettings::from_config(&config.dns);
    let Some(text) = store.setting(DNS_SETTING_KEY).await? else {
        return Ok(from_file);
    };
    match serde_json::from_str::<DnsSettings>(&text) {
        Ok(stored) => {
            info!("DNS settings from the database (saved by an administrator) are in force");
            Ok(stored)
        }
        Err(e) => {
            warn!(error = %e, "stored DNS settings do not read; using the config file's dns settings");
            Ok(from_file)
        }
    }
}

/// Owns the DNS settings in force.
pub struct DnsService {
    control: Arc<ControlPlane>,
    server_host: String,
    /// The settings in force; the lock also serialises saves.
    current: Mutex<DnsSettings>,
}

impl DnsService {
    pub fn new(config: &Config, control: Arc<ControlPlane>, current: DnsSettings) -> Arc<Self> {
        Arc::new(DnsService {
            control,
            server_host: config.server_host(),
            current: Mutex::new(current),
        })
    }
}

impl Admin {
    /// The settings in force (the console's DNS page).
    pub async fn get_dns(&self) -> DnsSettings {
        self.dns.current.lock().await.clone()
    }

    /// Validates `settings`, stores them, and puts them in force: every connected node gets
    /// the new `DNSConfig` (and, when the base domain changed, its new names) in its map
    /// stream. Refused settings change nothing.
    pub async fn set_dns(&self, settings: DnsSettings) -> Result<DnsSettings, AdminError> {
        let service = &self.dns;
        let settings = settings
            .validated(&service.server_host)
            .map_err(|e| AdminError::BadRequest(e.to_string()))?;
        let mut current = service.current.lock().await;
        let json = serde_json::to_string(&settings)
            .map_err(|e| AdminError::BadRequest(format!("encoding DNS settings: {e}")))?;
        let control = service.control.clone();
        let previous = current.clone();
        let applied = settings.clone();
        let result = self
            .tailnet
            .mutate(move |state, fx| {
                // Inside the writer, before anything is announced: a stream that wakes up for
                // `DnsConfig` must already find the new settings in the map configuration.
                control.update_map_config(|c| c.set_dns(&applied));
                state.set_dns_names(fx, &applied);
                fx.write(DbOp::PutSetting(DNS_SETTING_KEY.into(), json));
                Ok::<_, TailnetError>(())
            })
            .await;
        if let Err(e) = result {
            // Not stored: the maps go back to what is in force.
            service.control.update_map_config(|c| c.set_dns(&previous));
            self.tailnet.broadcast(&[Change::DnsConfig]);
            return Err(e.into());
        }
        info!(
            magic_dns = settings.magic_dns,
            base_domain = %settings.base_domain,
            "DNS settings saved and sent to connected nodes"
        );
        *current = settings.clone();
        drop(current);
        self.record(
            "dns.set",
            "dns",
            super::to_json(&previous),
            super::to_json(&settings),
        )
        .await;
        Ok(settings)
    }
}
