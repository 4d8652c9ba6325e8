//! OpenID Connect settings at run time: read, validate, discover, store, and put in force for
//! the next sign-in, without a restart.
//!
//! - Saved settings (the `settings` row [`OIDC_SETTING_KEY`], JSON) win over the config
//!   file's `oidc.*` keys they cover: issuer, client id and secret, scopes, the restrictions
//!   and the key expiry. PKCE, `extra_params` and `only_start_if_oidc_is_available` stay the
//!   file's. A saved empty issuer means OpenID Connect is off, whatever the file says;
//!   [`Admin::reset_oidc_settings`] forgets the saved settings (the file's are in force again).
//! - A save discovers the new provider first and changes nothing when that fails.
//! - The client secret is write-only: stored as given (it must be sent to the provider, so it
//!   cannot be hashed), never logged, never in the audit log, never in a view. Saving without
//!   one keeps the secret in force.
//! - An issuer that cannot be discovered at start stops the server, or, with
//!   `oidc.only_start_if_oidc_is_available: false`, is retried in the background (5 s
//!   doubling to 5 min) until it answers or the settings are replaced.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, watch};
use tracing::{info, warn};

use super::{Admin, AdminError};
use crate::config::{Config, HumanDuration, OidcConfig};
use crate::identity::{DiscoveryError, Oidc, OidcHandle, Provider};
use crate::store::{Store, StoreError};
use crate::tailnet::TailnetError;

/// Key of the saved settings in the `settings` table.
pub const OIDC_SETTING_KEY: &str = "oidc";
/// First wait before discovery is tried again after a failure at start; doubles each time.
const RETRY_FIRST: Duration = Duration::from_secs(5);
/// The longest wait between two tries.
const RETRY_MAX: Duration = Duration::from_secs(300);
/// How a secret appears in the audit log.
const MASK: &str = "<set>";
const MASK_CHANGED: &str = "<changed>";

/// What an administrator saved. Not `Debug`: it holds the client secret.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct SavedOidc {
    /// Empty: OpenID Connect is off.
    pub issuer: String,
    pub client_id: String,
    /// `None`: the config file's secret (`client_secret` or `client_secret_path`).
    pub client_secret: Option<String>,
    pub scope: Vec<String>,
    pub allowed_domains: Vec<String>,
    pub allowed_users: Vec<String>,
    pub allowed_groups: Vec<String>,
    pub email_verified_required: bool,
    pub use_expiry_from_token: bool,
    /// `None`: `node.expiry`; zero: never.
    pub expiry: Option<HumanDuration>,
}

impl Default for SavedOidc {
    fn default() -> Self {
        let d = OidcConfig::default();
        SavedOidc {
            issuer: String::new(),
            client_id: String::new(),
            client_secret: None,
            scope: d.scope,
            allowed_domains: Vec::new(),
            allowed_users: Vec::new(),
            allowed_groups: Vec::new(),
            email_verified_required: d.email_verified_required,
            use_expiry_from_token: false,
            expiry: None,
        }
    }
}

/// New settings as an administrator typed them.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct OidcUpdate {
    /// Empty: turn OpenID Connect off.
    pub issuer: String,
    pub client_id: String,
    /// Empty: keep the secret in force.
    pub client_secret: String,
    pub scope: Vec<String>,
    pub allowed_domains: Vec<String>,
    pub allowed_users: Vec<String>,
    pub allowed_groups: Vec<String>,
    pub email_verified_required: bool,
    pub use_expiry_from_token: bool,
    /// A duration (`180d`), `0` for never, or empty for `node.expiry`.
    pub expiry: String,
}

/// Where the settings in force come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OidcSource {
    /// Saved by an administrator (the database).
    Saved,
    /// The config file's `oidc.*` (or the environment's).
    ConfigFile,
}

/// Whether sign-in through the provider works now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OidcStatus {
    Off,
    /// Configured, not discovered yet; the server keeps trying.
    Waiting,
    Ready,
}

/// The settings in force as an administrator may see them: never the secret, only whether
/// there is one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OidcSettingsView {
    pub source: OidcSource,
    pub status: OidcStatus,
    pub issuer: String,
    pub client_id: String,
    pub client_secret_set: bool,
    pub scope: Vec<String>,
    pub allowed_domains: Vec<String>,
    pub allowed_users: Vec<String>,
    pub allowed_groups: Vec<String>,
    pub email_verified_required: bool,
    pub use_expiry_from_token: bool,
    /// Empty: `node.expiry`.
    pub expiry: String,
    /// What to register at the provider as the redirect URI.
    pub redirect_uri: String,
}

/// Owns the OpenID Connect settings in force and the provider handle every sign-in reads.
pub struct IdentityService {
    file: OidcConfig,
    server_url: String,
    store: Store,
    handle: OidcHandle,
    /// The saved settings (`None`: the file's are in force); the lock also serialises saves.
    saved: Mutex<Option<SavedOidc>>,
    /// Bumped when the settings are replaced: a background retry of older settings stops.
    generation: AtomicU64,
    shutdown: watch::Receiver<bool>,
}

impl IdentityService {
    /// Reads the saved settings, discovers the provider in force and returns the service.
    /// An undiscoverable provider stops the server (the error names the issuer) unless
    /// `oidc.only_start_if_oidc_is_available` is off: then it is retried in the background.
    pub async fn start(
        config: &Config,
        store: Store,
        shutdown: watch::Receiver<bool>,
    ) -> anyhow::Result<Arc<IdentityService>> {
        let saved = load_saved(&store).await?;
        let service = Arc::new(IdentityService {
            file: config.oidc.clone(),
            server_url: config.server_url.clone(),
            store,
            handle: OidcHandle::default(),
            saved: Mutex::new(saved.clone()),
            generation: AtomicU64::new(0),
            shutdown,
        });
        let effective = service.effective(saved.as_ref());
        if !effective.enabled() {
            return Ok(service);
        }
        match Oidc::discover(&effective, &service.server_url).await {
            Ok(oidc) => service.handle.set(Provider::Ready(Arc::new(oidc))),
            Err(e) if !service.file.only_start_if_oidc_is_available => {
                warn!(error = %e, retry_in_s = RETRY_FIRST.as_secs(), "OpenID Connect is not available yet; machines without a key wait for an administrator until it is (oidc.only_start_if_oidc_is_available is off, so the server keeps trying)");
                service.handle.set(Provider::Waiting {
                    issuer: effective.issuer.clone().unwrap_or_default(),
                });
                service.spawn_retry(effective, 0);
            }
            Err(e) => {
                let whose = if saved.is_some() {
                    "OpenID Connect (settings saved in the console; set oidc.only_start_if_oidc_is_available: false to start without it and fix them there)"
                } else {
                    "OpenID Connect (oidc.*)"
                };
                return Err(anyhow::Error::new(e).context(whose));
            }
        }
        Ok(service)
    }

    /// The provider handle that sign-ins read.
    pub fn handle(&self) -> OidcHandle {
        self.handle.clone()
    }

    /// The `oidc.*` configuration in force with `saved` over the file's.
    fn effective(&self, saved: Option<&SavedOidc>) -> OidcConfig {
        let Some(s) = saved else {
            return self.file.clone();
        };
        let (client_secret, client_secret_path) = match &s.client_secret {
            Some(secret) => (Some(secret.clone()), None),
            None => (
                self.file.client_secret.clone(),
                self.file.client_secret_path.clone(),
            ),
        };
        OidcConfig {
            issuer: (!s.issuer.is_empty()).then(|| s.issuer.clone()),
            client_id: Some(s.client_id.clone()),
            client_secret,
            client_secret_path,
            scope: s.scope.clone(),
            allowed_domains: s.allowed_domains.clone(),
            allowed_users: s.allowed_users.clone(),
            allowed_groups: s.allowed_groups.clone(),
            email_verified_required: s.email_verified_required,
            use_expiry_from_token: s.use_expiry_from_token,
            expiry: s.expiry,
            ..self.file.clone()
        }
    }

    fn view(&self, saved: Option<&SavedOidc>) -> OidcSettingsView {
        let c = self.effective(saved);
        let status = match self.handle.provider() {
            Provider::Off => OidcStatus::Off,
            Provider::Waiting { .. } => OidcStatus::Waiting,
            Provider::Ready(_) => OidcStatus::Ready,
        };
        OidcSettingsView {
            source: if saved.is_some() {
                OidcSource::Saved
            } else {
                OidcSource::ConfigFile
            },
            status,
            issuer: c.issuer.clone().unwrap_or_default(),
            client_id: c.client_id.clone().unwrap_or_default(),
            client_secret_set: c.client_secret.is_some() || c.client_secret_path.is_some(),
            scope: c.scope.clone(),
            allowed_domains: c.allowed_domains.clone(),
            allowed_users: c.allowed_users.clone(),
            allowed_groups: c.allowed_groups.clone(),
            email_verified_required: c.email_verified_required,
            use_expiry_from_token: c.use_expiry_from_token,
            expiry: c.expiry.map(|d| d.to_string()).unwrap_or_default(),
            redirect_uri: format!("{}/oidc/callback", self.server_url.trim_end_matches('/')),
        }
    }

    /// Discovers the provider `config` names (nothing when OpenID Connect is off there).
    async fn discover(&self, config: &OidcConfig) -> Result<Provider, AdminError> {
        if !config.enabled() {
            return Ok(Provider::Off);
        }
        match Oidc::discover(config, &self.server_url).await {
            Ok(oidc) => Ok(Provider::Ready(Arc::new(oidc))),
            Err(DiscoveryError::Issuer { issuer, message }) => {
                warn!(issuer, error = %message, "new OpenID Connect settings refused: the provider could not be discovered");
                Err(AdminError::BadRequest(format!(
                    "the identity provider {issuer} could not be discovered ({message}); nothing was changed"
                )))
            }
            Err(e @ DiscoveryError::Secret(_)) => {
                Err(AdminError::BadRequest(format!("{e}; nothing was changed")))
            }
        }
    }

    /// Tries discovery again, waiting 5 s, then twice as long each time up to 5 min, until it
    /// succeeds, the settings are replaced (`generation` moves on) or the server stops.
    fn spawn_retry(self: &Arc<Self>, config: OidcConfig, generation: u64) {
        let service = self.clone();
        let mut shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            let issuer = config.issuer.clone().unwrap_or_default();
            let mut wait = RETRY_FIRST;
            let mut attempt = 1u32;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.changed() => return,
                }
                if service.generation.load(Ordering::SeqCst) != generation {
                    return;
                }
                attempt += 1;
                match Oidc::discover(&config, &service.server_url).await {
                    Ok(oidc) => {
                        // Under the settings lock: a save that started meanwhile wins.
                        let _saved = service.saved.lock().await;
                        if service.generation.load(Ordering::SeqCst) == generation {
                            service.handle.set(Provider::Ready(Arc::new(oidc)));
                            info!(
                                issuer,
                                attempt,
                                "OpenID Connect is available now; sign-in through the provider works"
                            );
                        }
                        return;
                    }
                    Err(e) => {
                        wait = (wait * 2).min(RETRY_MAX);
                        warn!(error = %e, attempt, retry_in_s = wait.as_secs(), "OpenID Connect is still not available");
                    }
                }
            }
        });
    }

    /// Stores `saved` (`None`: forget it) and puts `provider` in force.
    async fn put_in_force(
        &self,
        slot: &mut Option<SavedOidc>,
        saved: Option<SavedOidc>,
        provider: Provider,
    ) -> Result<(), AdminError> {
        let stored = match &saved {
            Some(s) => {
                let json = serde_json::to_string(s).map_err(|e| {
                    AdminError::BadRequest(format!("encoding the OpenID Connect settings: {e}"))
                })?;
                self.store.put_setting(OIDC_SETTING_KEY, &json).await
            }
            None => self.store.delete_setting(OIDC_SETTING_KEY).await,
        };
        stored.map_err(|e| AdminError::Tailnet(TailnetError::Storage(e.to_string())))?;
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.handle.set(provider);
        *slot = saved;
        Ok(())
    }
}

/// The saved settings, if any. A row that no longer reads is reported and the config file's
/// settings are used, so a bad row cannot keep the server down.
async fn load_saved(store: &Store) -> Result<Option<SavedOidc>, StoreError> {
    let Some(text) = store.setting(OIDC_SETTING_KEY).await? else {
        return Ok(None);
    };
    match serde_json::from_str::<SavedOidc>(&text) {
        Ok(saved) => {
            info!(
                issuer = %saved.issuer,
                "OpenID Connect settings from the database (saved by an administrator) are in force"
            );
            Ok(Some(saved))
        }
        Err(e) => {
            warn!(error = %e, "stored OpenID Connect settings do not read; using the config file's oidc settings");
            Ok(None)
        }
    }
}

/// Whether `url` is an acceptable issuer: https, or http to this machine only.
fn check_issuer(issuer: &str) -> Result<(), String> {
    use openidconnect::url::{Host, Url};
    let url = Url::parse(issuer).map_err(|e| format!("issuer {issuer:?} is not a URL: {e}"))?;
    let loopback = match url.host() {
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        Some(Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => return Err(format!("issuer {issuer:?} names no host")),
    };
    match url.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        "http" => Err(format!(
            "issuer {issuer:?} must be an https URL (plain http only for a provider on this machine: localhost, 127.0.0.1, ::1)"
        )),
        other => Err(format!(
            "issuer {issuer:?} must be an https URL, not {other}:"
        )),
    }
}

/// Trimmed, without empty entries or repeats, in the order given.
fn clean_list(items: &[String], lower: bool) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for item in items {
        let item = item.trim();
        let item = if lower {
            item.to_lowercase()
        } else {
            item.to_owned()
        };
        if !item.is_empty() && !out.contains(&item) {
            out.push(item);
        }
    }
    out
}

impl OidcUpdate {
    /// Checks every field and returns what to save; `current` supplies the secret when none
    /// was typed.
    fn validated(self, current: Option<&SavedOidc>) -> Result<SavedOidc, AdminError> {
        let bad = AdminError::BadRequest;
        let issuer = self.issuer.trim().to_owned();
        let client_id = self.client_id.trim().to_owned();
        let scope = clean_list(&self.scope, false);
        let expiry = match self.expiry.trim() {
            "" => None,
            text => Some(
                HumanDuration::parse(text)
                    .map_err(|e| bad(format!("key expiry: {e} (e.g. 180d, or 0 for never)")))?,
            ),
        };
        if !issuer.is_empty() {
            check_issuer(&issuer).map_err(bad)?;
            if client_id.is_empty() {
                return Err(bad("a client id is required with an issuer".into()));
            }
            if !scope.iter().any(|s| s == "openid") {
                return Err(bad("the scopes must include \"openid\"".into()));
            }
        }
        let typed = self.client_secret.trim();
        let client_secret = if typed.is_empty() {
            current.and_then(|c| c.client_secret.clone())
        } else {
            Some(typed.to_owned())
        };
        Ok(SavedOidc {
            issuer,
            client_id,
            client_secret,
            scope,
            allowed_domains: clean_list(&self.allowed_domains, true)
                .into_iter()
                .map(|d| d.trim_start_matches('@').to_owned())
                .collect(),
            allowed_users: clean_list(&self.allowed_users, true),
            allowed_groups: clean_list(&self.allowed_groups, false),
            email_verified_required: self.email_verified_required,
            use_expiry_from_token: self.use_expiry_from_token,
            expiry,
        })
    }
}

/// The view as the audit log records it: the secret masked (`<changed>` when a new one was
/// saved), where the settings came from.
fn audit_json(view: &OidcSettingsView, secret_changed: bool) -> Option<serde_json::Value> {
    let secret = match (view.client_secret_set, secret_changed) {
        (_, true) => serde_json::Value::String(MASK_CHANGED.into()),
        (true, false) => serde_json::Value::String(MASK.into()),
        (false, false) => serde_json::Value::Null,
    };
    Some(serde_json::json!({
        "source": view.source,
        "issuer": view.issuer,
        "client_id": view.client_id,
        "client_secret": secret,
        "scope": view.scope,
        "allowed_domains": view.allowed_domains,
        "allowed_users": view.allowed_users,
        "allowed_groups": view.allowed_groups,
        "email_verified_required": view.email_verified_required,
        "use_expiry_from_token": view.use_expiry_from_token,
        "expiry": view.expiry,
    }))
}

impl Admin {
    fn identity_service(&self) -> Result<&Arc<IdentityService>, AdminError> {
        self.identity.as_ref().ok_or_else(|| {
            AdminError::BadRequest(
                "OpenID Connect settings are not available on this server".into(),
            )
        })
    }

    /// The OpenID Connect settings in force (the console's Identity page); never the secret.
    pub async fn get_oidc_settings(&self) -> Result<OidcSettingsView, AdminError> {
        let service = self.identity_service()?;
        let saved = service.saved.lock().await;
        Ok(service.view(saved.as_ref()))
    }

    /// Validates `update`, discovers its provider, and only then stores it and puts it in
    /// force for the next sign-in. Refused settings (a bad field, a provider that cannot be
    /// discovered) change nothing; the error names the field or the issuer.
    pub async fn set_oidc_settings(
        &self,
        update: OidcUpdate,
    ) -> Result<OidcSettingsView, AdminError> {
        let service = self.identity_service()?;
        let mut saved = service.saved.lock().await;
        let before = service.view(saved.as_ref());
        let new = update.validated(saved.as_ref())?;
        let secret_changed = new.client_secret.is_some()
            && new.client_secret != saved.as_ref().and_then(|s| s.client_secret.clone());
        let provider = service.discover(&service.effective(Some(&new))).await?;
        let issuer = new.issuer.clone();
        service
            .put_in_force(&mut saved, Some(new), provider)
            .await?;
        let after = service.view(saved.as_ref());
        drop(saved);
        if issuer.is_empty() {
            info!("OpenID Connect turned off from the console");
        } else {
            info!(
                issuer,
                "OpenID Connect settings saved; the next sign-in uses them"
            );
        }
        self.record(
            "oidc.set",
            "oidc",
            audit_json(&before, false),
            audit_json(&after, secret_changed),
        )
        .await;
        Ok(after)
    }

    /// Forgets the saved settings: the config file's are in force again, once their provider
    /// is discovered (if it cannot be, nothing changes).
    pub async fn reset_oidc_settings(&self) -> Result<OidcSettingsView, AdminError> {
        let service = self.identity_service()?;
        let mut saved = service.saved.lock().await;
        if saved.is_none() {
            return Ok(service.view(None));
        }
        let before = service.view(saved.as_ref());
        let provider = service.discover(&service.effective(None)).await?;
        service.put_in_force(&mut saved, None, provider).await?;
        let after = service.view(None);
        drop(saved);
        info!("saved OpenID Connect settings forgotten; the config file's are in force");
        self.record(
            "oidc.reset",
            "oidc",
            audit_json(&before, false),
            audit_json(&after, false),
        )
        .await;
        Ok(after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issuers_are_https_or_loopback_http() {
        assert!(check_issuer("https://id.example.com/realms/x").is_ok());
        assert!(check_issuer("http://127.0.0.1:18490").is_ok());
        assert!(check_issuer("http://localhost:5556/dex").is_ok());
        assert!(check_issuer("http://[::1]:8080").is_ok());
        for bad in [
            "http://id.example.com",
            "http://10.0.0.1",
            "ftp://id.example.com",
            "id.example.com",
            "",
        ] {
            assert!(check_issuer(bad).is_err(), "{bad}");
        }
        assert!(
            check_issuer("http://id.example.com")
                .unwrap_err()
                .contains("id.example.com")
        );
    }

    fn update(issuer: &str) -> OidcUpdate {
        OidcUpdate {
            issuer: issuer.into(),
            client_id: " oxiscale ".into(),
            scope: vec!["openid".into(), " email ".into(), "email".into(), "".into()],
            allowed_domains: vec!["@Example.COM".into()],
            allowed_users: vec!["Alice@Example.com".into()],
            allowed_groups: vec!["/Ops".into()],
            expiry: "180d".into(),
            ..OidcUpdate::default()
        }
    }

    #[test]
    fn an_update_is_checked_and_put_in_canonical_form() {
        let saved = update("https://id.example.com").validated(None).unwrap();
        assert_eq!(saved.client_id, "oxiscale");
        assert_eq!(saved.scope, vec!["openid", "email"]);
        assert_eq!(saved.allowed_domains, vec!["example.com"]);
        assert_eq!(saved.allowed_users, vec!["alice@example.com"]);
        assert_eq!(saved.allowed_groups, vec!["/Ops"], "groups keep their case");
        assert_eq!(
            saved.expiry,
            Some(HumanDuration(Duration::from_secs(180 * 86_400)))
        );
        assert_eq!(saved.client_secret, None);

        let no_client = OidcUpdate {
            client_id: " ".into(),
            ..update("https://id.example.com")
        };
        assert!(no_client.validated(None).is_err());
        let no_openid = OidcUpdate {
            scope: vec!["email".into()],
            ..update("https://id.example.com")
        };
        assert!(no_openid.validated(None).is_err());
        let bad_expiry = OidcUpdate {
            expiry: "soon".into(),
            ..update("https://id.example.com")
        };
        let err = bad_expiry.validated(None).err().unwrap().to_string();
        assert!(err.contains("soon"), "{err}");
        // Off: the rest is kept as typed, unchecked but for the expiry.
        let off = OidcUpdate {
            client_id: String::new(),
            ..update("")
        };
        assert!(off.validated(None).unwrap().issuer.is_empty());
    }

    #[test]
    fn an_empty_secret_keeps_the_saved_one_and_a_typed_one_replaces_it() {
        let current = SavedOidc {
            client_secret: Some("old".into()),
            ..SavedOidc::default()
        };
        let kept = update("https://id.example.com")
            .validated(Some(&current))
            .unwrap();
        assert_eq!(kept.client_secret.as_deref(), Some("old"));
        let replaced = OidcUpdate {
            client_secret: " new\n".into(),
            ..update("https://id.example.com")
        }
        .validated(Some(&current))
        .unwrap();
        assert_eq!(replaced.client_secret.as_deref(), Some("new"));
    }
}
