//! Configuration: headscale's `config.yaml` keys and meanings, so an existing file works;
//! every key can be overridden from the environment as `OXISCALE_<KEY PATH>` (dots become
//! underscores: `dns.base_domain` → `OXISCALE_DNS_BASE_DOMAIN`); defaults that need no file.
//!
//! headscale's own file, search path and `HEADSCALE_*` variables work too (`headscale`).
//! A key oxiscale does not know, or a headscale key for something it does not do, is named
//! in a warning and never stops the server; an unknown `OXISCALE_*` variable is an error.

pub mod duration;
pub mod headscale;
pub mod limits;
pub mod oidc;
pub mod sections;
pub mod tls;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};
use serde_norway::Value;

pub use duration::HumanDuration;
pub use headscale::ConfigNotice;
pub use limits::LimitsConfig;
pub use oidc::OidcConfig;
pub use sections::*;
pub use tls::{AcmeSettings, ChallengeType, TlsSource};

/// Environment variables with the prefix that are not configuration keys.
const NON_CONFIG_ENV: &[&str] = &["OXISCALE_CONFIG"];
/// Prefixes of environment variables owned by test harnesses, never read by the server.
const HARNESS_ENV_PREFIXES: &[&str] = &[
    "OXISCALE_E2E_",
    "OXISCALE_TEST_",
    "OXISCALE_BIN",
    "OXISCALE_POLICY_GOLDEN",
];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error(
        "environment variable {var} is not a configuration key (did you mean one of: {suggestions})"
    )]
    UnknownEnv { var: String, suggestions: String },
    #[error("environment variable {var}: {message}")]
    BadEnv { var: String, message: String },
    #[error("invalid configuration: {key}: {message}")]
    Invalid { key: &'static str, message: String },
    /// Keys headscale itself refuses, in headscale's words.
    #[error("{0}")]
    Removed(String),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The URL clients use to reach this server (their `--login-server`).
    pub server_url: String,
    pub listen_addr: SocketAddr,
    /// Where the database, keys and socket live unless their own keys say otherwise.
    pub data_dir: PathBuf,
    /// The local admin socket the CLI talks to.
    pub unix_socket: Option<PathBuf>,
    pub unix_socket_permission: String,
    pub noise: NoiseConfig,
    pub prefixes: PrefixesConfig,
    pub derp: DerpConfig,
    pub dns: DnsConfig,
    pub database: DatabaseConfig,
    pub node: NodeConfig,
    pub log: LogConfig,
    pub policy: PolicyConfig,
    /// The web console (oxiscale's own keys).
    pub console: ConsoleConfig,
    /// Sign-in through an OpenID Connect provider (devices and, later, the console).
    pub oidc: OidcConfig,
    /// Bounds on client connections (oxiscale's own keys).
    pub limits: LimitsConfig,
    /// HTTPS on the main listener from a PEM certificate chain and its key (`tls`).
    pub tls_cert_path: Option<PathBuf>,
    pub tls_key_path: Option<PathBuf>,
    /// HTTPS with a certificate from ACME (`tls_letsencrypt_hostname`; see `tls_source`).
    pub acme_url: Option<String>,
    pub acme_email: Option<String>,
    pub tls_letsencrypt_hostname: Option<String>,
    pub tls_letsencrypt_cache_dir: Option<String>,
    pub tls_letsencrypt_challenge_type: Option<String>,
    pub tls_letsencrypt_listen: Option<String>,
    /// oxiscale's own, for tests against a private ACME server (pebble): a PEM CA trusted,
    /// besides the public roots, for the connection to acme_url.
    pub acme_ca_file: Option<PathBuf>,
    // headscale keys accepted for compatibility and not acted on yet (see `ignored_keys`).
    pub metrics_listen_addr: Option<String>,
    pub grpc_listen_addr: Option<String>,
    pub grpc_allow_insecure: Option<bool>,
    pub disable_check_updates: Option<bool>,
    pub logtail: Option<Value>,
    pub taildrop: Option<Value>,
    pub trusted_proxies: Option<Vec<String>>,
    pub tuning: Option<Value>,
    pub auto_update: Option<Value>,
    /// The CLI against a server elsewhere, over the REST API (headscale's `cli.*` keys).
    pub cli: CliConfig,
    /// What a person should know about this config (unknown keys, renamed ones); filled by
    /// [`Config::load`].
    #[serde(skip)]
    pub notices: Vec<ConfigNotice>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            server_url: "http://127.0.0.1:8080".into(),
            listen_addr: "127.0.0.1:8080".parse().expect("valid literal"),
            data_dir: PathBuf::from("./data"),
            unix_socket: None,
            unix_socket_permission: "0770".into(),
            noise: NoiseConfig::default(),
            prefixes: PrefixesConfig::default(),
            derp: DerpConfig::default(),
            dns: DnsConfig::default(),
            database: DatabaseConfig::default(),
            node: NodeConfig::default(),
            log: LogConfig::default(),
            policy: PolicyConfig::default(),
            console: ConsoleConfig::default(),
            oidc: OidcConfig::default(),
            limits: LimitsConfig::default(),
            metrics_listen_addr: None,
            grpc_listen_addr: None,
            grpc_allow_insecure: None,
            disable_check_updates: None,
            tls_cert_path: None,
            tls_key_path: None,
            acme_url: None,
            acme_email: None,
            tls_letsencrypt_hostname: None,
            tls_letsencrypt_cache_dir: None,
            tls_letsencrypt_challenge_type: None,
            tls_letsencrypt_listen: None,
            acme_ca_file: None,
            logtail: None,
            taildrop: None,
            trusted_proxies: None,
            tuning: None,
            auto_update: None,
            cli: CliConfig::default(),
            notices: Vec::new(),
        }
    }
}

impl Config {
    /// Loads the file (if any), applies `OXISCALE_*` overrides from `env`, and validates.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let text = match path {
            Some(path) => std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?,
            None => String::new(),
        };
        Self::from_yaml(&text, path, env)
    }

    /// [`Config::load`] with the file's text already read (no file or environment access;
    /// the fuzz target uses it). `path` names the file in errors and anchors relative paths.
    pub fn from_yaml(
        text: &str,
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let origin = path
            .map(Path::to_owned)
            .unwrap_or_else(|| PathBuf::from("<defaults and environment>"));
        let mut tree = if text.trim().is_empty() {
            Value::Mapping(Default::default())
        } else {
            serde_norway::from_str::<Value>(text).map_err(|e| ConfigError::Parse {
                path: origin.clone(),
                message: e.to_string(),
            })?
        };
        if tree.is_null() {
            tree = Value::Mapping(Default::default());
        }
        let known = known_paths();
        let mut notices = headscale::upgrade(&mut tree, &known).map_err(|e| match e {
            ConfigError::Removed(message) => ConfigError::Parse {
                path: origin.clone(),
                message,
            },
            other => other,
        })?;
        apply_env(&mut tree, env, &known, &mut notices)?;
        let mut config: Config =
            serde_norway::from_value(tree).map_err(|e| ConfigError::Parse {
                path: origin,
                message: e.to_string(),
            })?;
        if let Some(dir) = path.and_then(Path::parent) {
            config.resolve_paths_against(dir);
        }
        config.validate()?;
        notices.extend(
            config
                .ignored_keys()
                .into_iter()
                .map(|key| ConfigNotice::NotActedOn { key: key.into() }),
        );
        config.notices = notices;
        Ok(config)
    }

    /// headscale reads relative file paths in its config from the config file's directory,
    /// not the working directory; so does oxiscale, for the same keys.
    fn resolve_paths_against(&mut self, dir: &Path) {
        let resolve = |p: &mut Option<PathBuf>| {
            if let Some(path) = p
                && path.is_relative()
                && !path.as_os_str().is_empty()
            {
                *path = dir.join(&*path);
            }
        };
        resolve(&mut self.noise.private_key_path);
        resolve(&mut self.derp.server.private_key_path);
        resolve(&mut self.database.sqlite.path);
        resolve(&mut self.policy.path);
        resolve(&mut self.dns.extra_records_path);
        resolve(&mut self.tls_cert_path);
        resolve(&mut self.tls_key_path);
        resolve(&mut self.acme_ca_file);
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let url =
            http::Uri::try_from(self.server_url.as_str()).map_err(|e| ConfigError::Invalid {
                key: "server_url",
                message: format!("{:?} is not a URL: {e}", self.server_url),
            })?;
        if !matches!(url.scheme_str(), Some("http" | "https")) || url.host().is_none() {
            return Err(ConfigError::Invalid {
                key: "server_url",
                message: format!(
                    "{:?} must start with http:// or https:// and name a host",
                    self.server_url
                ),
            });
        }
        if self.dns.magic_dns && self.dns.base_domain.trim().is_empty() {
            return Err(ConfigError::Invalid {
                key: "dns.base_domain",
                message: "required when dns.magic_dns is on".into(),
            });
        }
        if let Some(host) = url.host() {
            let base = self.dns.base_domain.trim_end_matches('.');
            if !base.is_empty() && (host == base || host.ends_with(&format!(".{base}"))) {
                return Err(ConfigError::Invalid {
                    key: "dns.base_domain",
                    message: format!("{base:?} must not be the server_url host or a suffix of it"),
                });
            }
        }
        if self.prefixes.v4.is_none() && self.prefixes.v6.is_none() {
            return Err(ConfigError::Invalid {
                key: "prefixes",
                message: "at least one of v4 and v6 is needed".into(),
            });
        }
        let cgnat: Ipv4Net = "100.64.0.0/10".parse().expect("valid literal");
        if let Some(v4) = self.prefixes.v4
            && !cgnat.contains(&v4)
        {
            return Err(ConfigError::Invalid {
                key: "prefixes.v4",
                message: format!("{v4} is not inside {cgnat}"),
            });
        }
        let ula: Ipv6Net = "fd7a:115c:a1e0::/48".parse().expect("valid literal");
        if let Some(v6) = self.prefixes.v6
            && !ula.contains(&v6)
        {
            return Err(ConfigError::Invalid {
                key: "prefixes.v6",
                message: format!("{v6} is not inside {ula}"),
            });
        }
        if self.database.db_type == DatabaseType::Postgres {
            return Err(ConfigError::Invalid {
                key: "database.type",
                message: "postgres is not supported by this build yet; use sqlite".into(),
            });
        }
        for url in &self.derp.urls {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(ConfigError::Invalid {
                    key: "derp.urls",
                    message: format!("{url:?} is not an http(s) URL"),
                });
            }
        }
        if self.node.ephemeral.inactivity_timeout.is_zero() {
            return Err(ConfigError::Invalid {
                key: "node.ephemeral.inactivity_timeout",
                message: "must be greater than zero".into(),
            });
        }
        self.tls_source()?;
        self.trusted_proxy_nets()?;
        self.limits.validate()?;
        self.oidc.validate()?;
        self.console.roles.validate()?;
        u32::from_str_radix(&self.unix_socket_permission, 8).map_err(|_| ConfigError::Invalid {
            key: "unix_socket_permission",
            message: format!(
                "{:?} is not an octal mode such as 0770",
                self.unix_socket_permission
            ),
        })?;
        Ok(())
    }

    /// `trusted_proxies` (headscale's key): reverse proxies whose `X-Forwarded-For` names the
    /// client; networks (`10.0.0.0/8`) or single addresses.
    pub fn trusted_proxy_nets(&self) -> Result<Vec<ipnet::IpNet>, ConfigError> {
        self.trusted_proxies
            .iter()
            .flatten()
            .map(|e| {
                let e = e.trim();
                e.parse::<ipnet::IpNet>()
                    .or_else(|_| e.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| ConfigError::Invalid {
                        key: "trusted_proxies",
                        message: format!("{e:?} is not an address or a network (10.0.0.0/8)"),
                    })
            })
            .collect()
    }

    /// headscale keys in this config that ask for something oxiscale does not do (yet).
    /// A key left at headscale's example value (`logtail.enabled: false`) asks for nothing
    /// and is not named; nor are tuning knobs of headscale's own internals (`tuning`,
    /// `database.gorm`) or settings of features only used with another one (`acme_*` and
    /// `tls_letsencrypt_*` without `tls_letsencrypt_hostname`).
    pub fn ignored_keys(&self) -> Vec<&'static str> {
        fn flag(section: &Option<Value>, key: &str) -> Option<bool> {
            section.as_ref()?.get(key)?.as_bool()
        }
        let mut keys = Vec::new();
        let remote_grpc = self.grpc_listen_addr.as_deref().is_some_and(|a| {
            !(a.starts_with("127.") || a.starts_with("localhost:") || a.starts_with("[::1]"))
        });
        if remote_grpc {
            keys.push("grpc_listen_addr");
        }
        if flag(&self.logtail, "enabled") == Some(true) {
            keys.push("logtail.enabled");
        }
        if flag(&self.taildrop, "enabled") == Some(false) {
            keys.push("taildrop.enabled");
        }
        if flag(&self.auto_update, "enabled") == Some(true) {
            keys.push("auto_update.enabled");
        }
        keys
    }

    fn in_data_dir(&self, configured: &Option<PathBuf>, default_name: &str) -> PathBuf {
        configured
            .clone()
            .unwrap_or_else(|| self.data_dir.join(default_name))
    }

    pub fn noise_key_path(&self) -> PathBuf {
        self.in_data_dir(&self.noise.private_key_path, "noise_private.key")
    }

    pub fn derp_key_path(&self) -> PathBuf {
        self.in_data_dir(
            &self.derp.server.private_key_path,
            "derp_server_private.key",
        )
    }

    pub fn sqlite_path(&self) -> PathBuf {
        self.in_data_dir(&self.database.sqlite.path, "db.sqlite")
    }

    pub fn socket_path(&self) -> PathBuf {
        self.in_data_dir(&self.unix_socket, "oxiscale.sock")
    }

    /// The host clients dial, from server_url.
    pub fn server_host(&self) -> String {
        http::Uri::try_from(self.server_url.as_str())
            .ok()
            .and_then(|u| u.host().map(|h| h.trim_matches(['[', ']']).to_owned()))
            .unwrap_or_else(|| "127.0.0.1".into())
    }

    /// The port clients dial, from server_url (scheme default if absent).
    pub fn server_port(&self) -> u16 {
        let uri = http::Uri::try_from(self.server_url.as_str()).ok();
        uri.as_ref().and_then(|u| u.port_u16()).unwrap_or(
            if uri
                .and_then(|u| u.scheme_str().map(|s| s == "https"))
                .unwrap_or(false)
            {
                443
            } else {
                80
            },
        )
    }

    /// The config as YAML with resolved paths, for `configtest` and the console.
    pub fn to_yaml(&self) -> String {
        serde_norway::to_string(self).unwrap_or_default()
    }
}

/// Every leaf key path that the config knows, e.g. `dns.nameservers.global`.
fn known_paths() -> Vec<String> {
    fn walk(prefix: &str, value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Mapping(map) if !map.is_empty() && prefix != "dns.nameservers.split" => {
                for (k, v) in map {
                    if let Some(k) = k.as_str() {
                        let path = if prefix.is_empty() {
                            k.to_owned()
                        } else {
                            format!("{prefix}.{k}")
                        };
                        walk(&path, v, out);
                    }
                }
            }
            _ => out.push(prefix.to_owned()),
        }
    }
    let defaults = serde_norway::to_value(Config::default()).expect("config serialises");
    let mut out = Vec::new();
    walk("", &defaults, &mut out);
    out
}

fn env_name(path: &str) -> String {
    format!("OXISCALE_{}", path.replace('.', "_").to_uppercase())
}

/// Applies `HEADSCALE_<KEY>` then `OXISCALE_<KEY>` variables (oxiscale's win over headscale's,
/// both over the file). An unknown `OXISCALE_` variable is an error; an unknown `HEADSCALE_`
/// one is named in a notice, as headscale itself ignores them.
fn apply_env(
    tree: &mut Value,
    env: impl IntoIterator<Item = (String, String)>,
    paths: &[String],
    notices: &mut Vec<ConfigNotice>,
) -> Result<(), ConfigError> {
    type Vars = Vec<(String, String)>;
    let (mut headscale, mut vars): (Vars, Vars) = env
        .into_iter()
        .filter(|(k, _)| k.starts_with("OXISCALE_") || k.starts_with("HEADSCALE_"))
        .partition(|(k, _)| k.starts_with("HEADSCALE_"));
    headscale.sort();
    for (var, raw) in headscale {
        if headscale::is_headscale_non_config_env(&var) {
            continue;
        }
        let name = var.replacen("HEADSCALE_", "OXISCALE_", 1);
        match paths.iter().find(|p| env_name(p) == name) {
            Some(path) => set_path(tree, path, env_value(&var, &raw)?),
            None => notices.push(ConfigNotice::Unknown {
                key: var,
                suggestion: None,
            }),
        }
    }
    vars.sort();
    for (var, raw) in vars {
        if NON_CONFIG_ENV.contains(&var.as_str())
            || HARNESS_ENV_PREFIXES.iter().any(|p| var.starts_with(p))
        {
            continue;
        }
        let Some(path) = paths.iter().find(|p| env_name(p) == var) else {
            let stem = var.trim_start_matches("OXISCALE_").to_lowercase();
            let mut close: Vec<String> = paths
                .iter()
                .filter(|p| {
                    p.replace('.', "_").contains(&stem) || stem.contains(&p.replace('.', "_"))
                })
                .map(|p| env_name(p))
                .collect();
            close.truncate(5);
            if close.is_empty() {
                close.push("see README.md, Configuration".into());
            }
            return Err(ConfigError::UnknownEnv {
                var,
                suggestions: close.join(", "),
            });
        };
        set_path(tree, path, env_value(&var, &raw)?);
    }
    Ok(())
}

/// A variable's value, read as YAML so that `true`, `30s`, `[a, b]` and `{k: v}` all work.
fn env_value(var: &str, raw: &str) -> Result<Value, ConfigError> {
    if raw.is_empty() {
        return Ok(Value::Null);
    }
    serde_norway::from_str(raw).map_err(|e| ConfigError::BadEnv {
        var: var.to_owned(),
        message: e.to_string(),
    })
}

fn set_path(tree: &mut Value, path: &str, value: Value) {
    let mut node = tree;
    let parts: Vec<&str> = path.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        if !node.is_mapping() {
            *node = Value::Mapping(Default::default());
        }
        let map = node.as_mapping_mut().expect("just made a mapping");
        let key = Value::String((*part).to_owned());
        if i == parts.len() - 1 {
            map.insert(key, value);
            return;
        }
        node = map
            .entry(key)
            .or_insert_with(|| Value::Mapping(Default::default()));
    }
}

/// The value at a dotted key path, if every section on the way is a mapping.
fn get_path<'a>(tree: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.')
        .try_fold(tree, |node, part| node.as_mapping()?.get(part))
}

/// Takes the value at a dotted key path out of the tree.
fn remove_path(tree: &mut Value, path: &str) -> Option<Value> {
    let (parent, leaf) = match path.rsplit_once('.') {
        Some((parent, leaf)) => (
            parent
                .split('.')
                .try_fold(tree, |node, part| node.as_mapping_mut()?.get_mut(part))?,
            leaf,
        ),
        None => (tree, path),
    };
    parent.as_mapping_mut()?.remove(leaf)
}

#[cfg(test)]
mod tests;
