//! The sections of the configuration below its top level (`noise`, `prefixes`, `derp`,
//! `dns`, `database`, `node`, `log`, `console`, `cli`, `policy`) with their defaults.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};
use serde_norway::Value;

use super::{HumanDuration, oidc};

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct NoiseConfig {
    pub private_key_path: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PrefixesConfig {
    pub v4: Option<Ipv4Net>,
    pub v6: Option<Ipv6Net>,
    pub allocation: Allocation,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Allocation {
    #[default]
    Sequential,
    Random,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DerpConfig {
    pub server: DerpServerConfig,
    /// Remote DERP maps (JSON) merged into the map.
    pub urls: Vec<String>,
    /// Local DERP map files (YAML or JSON) merged into the map.
    pub paths: Vec<PathBuf>,
    /// Re-fetch `urls` every `update_frequency`.
    pub auto_update_enabled: bool,
    pub update_frequency: HumanDuration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DerpServerConfig {
    pub enabled: bool,
    pub region_id: i64,
    pub region_code: String,
    pub region_name: String,
    /// Only nodes known to this server may use the embedded relay.
    pub verify_clients: bool,
    pub stun_listen_addr: SocketAddr,
    pub private_key_path: Option<PathBuf>,
    pub automatically_add_embedded_derp_region: bool,
    /// Public addresses to put in the DERP map instead of the server_url host.
    pub ipv4: Option<String>,
    pub ipv6: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DnsConfig {
    pub magic_dns: bool,
    pub base_domain: String,
    pub override_local_dns: bool,
    pub nameservers: NameserversConfig,
    pub search_domains: Vec<String>,
    pub extra_records: Vec<ExtraRecord>,
    pub extra_records_path: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct NameserversConfig {
    pub global: Vec<String>,
    /// Domain → resolvers (split DNS).
    pub split: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ExtraRecord {
    pub name: String,
    #[serde(rename = "type", default = "default_record_type")]
    pub record_type: String,
    pub value: String,
}

fn default_record_type() -> String {
    "A".into()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    #[serde(rename = "type")]
    pub db_type: DatabaseType,
    pub debug: bool,
    pub sqlite: SqliteConfig,
    pub postgres: Option<Value>,
    pub gorm: Option<Value>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum DatabaseType {
    #[default]
    #[serde(alias = "sqlite3")]
    Sqlite,
    Postgres,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SqliteConfig {
    pub path: Option<PathBuf>,
    pub write_ahead_log: bool,
    pub wal_autocheckpoint: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[derive(Default)]
pub struct NodeConfig {
    /// Default key expiry of user-owned nodes; `0` = never.
    pub expiry: HumanDuration,
    /// A newly registered node is held (nobody's peer, seeing none) until an administrator
    /// approves it. Nodes registered before it was turned on stay approved.
    pub approval_required: bool,
    /// A node may set its own `custom:*` posture attributes (`/machine/set-device-attr`).
    /// Off: a posture is then vouched for only by an administrator or an integration through
    /// the API, never by the device it judges.
    pub attributes_from_device: bool,
    pub ephemeral: EphemeralConfig,
    pub routes: Option<Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EphemeralConfig {
    /// How long an ephemeral node may stay disconnected before it is deleted.
    pub inactivity_timeout: HumanDuration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub level: String,
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct ConsoleConfig {
    /// The built browser half (`scripts/build-site.sh` output); found next to the binary
    /// or in `target/site` when unset.
    pub site_root: Option<PathBuf>,
    /// Console roles of people who sign in through the identity provider.
    pub roles: oidc::ConsoleRolesConfig,
}

/// Remote mode of the CLI: with an address, commands go to that server's REST API with the
/// API key instead of the local admin socket.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CliConfig {
    /// The server's URL (`https://vpn.example.com`); a bare `host:port`, as headscale's
    /// gRPC address is written, means `https://host:port`.
    pub address: Option<String>,
    /// Never printed: `configtest` shows it as `<set>`.
    #[serde(serialize_with = "oidc::redacted")]
    pub api_key: Option<String>,
    pub timeout: HumanDuration,
    /// Accept a certificate that does not verify (a test server's own).
    pub insecure: bool,
}

impl Default for CliConfig {
    fn default() -> Self {
        CliConfig {
            address: None,
            api_key: None,
            timeout: HumanDuration(std::time::Duration::from_secs(5)),
            insecure: false,
        }
    }
}

/// As for `OidcConfig`: the serialised form, with the API key as `<set>`.
impl std::fmt::Debug for CliConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = serde_json::to_string(self).map_err(|_| std::fmt::Error)?;
        write!(f, "CliConfig {shown}")
    }
}

impl CliConfig {
    /// The base URL of the remote server, when remote mode is asked for.
    pub fn base_url(&self) -> Option<String> {
        let address = self.address.as_deref()?.trim();
        if address.is_empty() {
            return None;
        }
        let url = if address.contains("://") {
            address.to_owned()
        } else {
            format!("https://{address}")
        };
        Some(url.trim_end_matches('/').to_owned())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    pub mode: PolicyMode,
    /// The HuJSON policy file (file mode). Empty: no policy, everyone may reach everyone.
    pub path: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum PolicyMode {
    #[default]
    File,
    Database,
}

impl Default for PrefixesConfig {
    fn default() -> Self {
        PrefixesConfig {
            v4: Some("100.64.0.0/10".parse().expect("valid literal")),
            v6: Some("fd7a:115c:a1e0::/48".parse().expect("valid literal")),
            allocation: Allocation::Sequential,
        }
    }
}

impl Default for DerpConfig {
    fn default() -> Self {
        DerpConfig {
            server: DerpServerConfig::default(),
            urls: Vec::new(),
            paths: Vec::new(),
            auto_update_enabled: true,
            update_frequency: HumanDuration(std::time::Duration::from_secs(3 * 3600)),
        }
    }
}

impl Default for DerpServerConfig {
    fn default() -> Self {
        DerpServerConfig {
            enabled: true,
            region_id: 999,
            region_code: "oxiscale".into(),
            region_name: "oxiscale embedded DERP".into(),
            verify_clients: true,
            stun_listen_addr: "0.0.0.0:3478".parse().expect("valid literal"),
            private_key_path: None,
            automatically_add_embedded_derp_region: true,
            ipv4: None,
            ipv6: None,
        }
    }
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            magic_dns: true,
            base_domain: "tailnet.internal".into(),
            override_local_dns: false,
            nameservers: NameserversConfig::default(),
            search_domains: Vec::new(),
            extra_records: Vec::new(),
            extra_records_path: None,
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            db_type: DatabaseType::Sqlite,
            debug: false,
            sqlite: SqliteConfig::default(),
            postgres: None,
            gorm: None,
        }
    }
}

impl Default for SqliteConfig {
    fn default() -> Self {
        SqliteConfig {
            path: None,
            write_ahead_log: true,
            wal_autocheckpoint: 1000,
        }
    }
}

impl Default for EphemeralConfig {
    fn default() -> Self {
        EphemeralConfig {
            inactivity_timeout: HumanDuration(std::time::Duration::from_secs(120)),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}
