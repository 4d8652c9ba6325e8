//! `oidc.*`: sign-in through the organisation's OpenID Connect provider, with headscale's
//! keys and meanings. OpenID Connect is on when `oidc.issuer` is set.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{ConfigError, HumanDuration};

#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OidcConfig {
    /// Stop at start when the provider cannot be discovered (else retry in the background).
    pub only_start_if_oidc_is_available: bool,
    /// The provider's issuer URL; discovery reads `<issuer>/.well-known/openid-configuration`.
    pub issuer: Option<String>,
    pub client_id: Option<String>,
    /// Never printed: `configtest` shows it as `<set>`.
    #[serde(serialize_with = "redacted")]
    pub client_secret: Option<String>,
    /// A file holding the secret; `${VAR}` in the path is taken from the environment
    /// (systemd's `${CREDENTIALS_DIRECTORY}`).
    pub client_secret_path: Option<String>,
    pub scope: Vec<String>,
    /// Extra query parameters of the authorization request (`domain_hint`, `prompt`, …).
    pub extra_params: BTreeMap<String, String>,
    /// Email domains allowed to sign in (empty: any).
    pub allowed_domains: Vec<String>,
    /// Email addresses allowed to sign in (empty: any).
    pub allowed_users: Vec<String>,
    /// Groups (the `groups` claim) of which a person must be in one (empty: any).
    pub allowed_groups: Vec<String>,
    /// Refuse people whose provider has not verified their email.
    pub email_verified_required: bool,
    pub pkce: PkceConfig,
    /// Key lifetime of nodes registered through the provider (headscale before 0.28);
    /// unset: `node.expiry`.
    pub expiry: Option<HumanDuration>,
    /// The node key expires when the ID token does.
    pub use_expiry_from_token: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PkceConfig {
    pub enabled: bool,
    pub method: PkceMethod,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
pub enum PkceMethod {
    #[default]
    S256,
    #[serde(rename = "plain")]
    Plain,
}

impl Default for OidcConfig {
    fn default() -> Self {
        OidcConfig {
            only_start_if_oidc_is_available: true,
            issuer: None,
            client_id: None,
            client_secret: None,
            client_secret_path: None,
            scope: vec!["openid".into(), "profile".into(), "email".into()],
            extra_params: BTreeMap::new(),
            allowed_domains: Vec::new(),
            allowed_users: Vec::new(),
            allowed_groups: Vec::new(),
            email_verified_required: true,
            pkce: PkceConfig::default(),
            expiry: None,
            use_expiry_from_token: false,
        }
    }
}

impl Default for PkceConfig {
    /// On, unlike headscale: providers that do not know PKCE ignore its parameters
    /// (RFC 7636 §5), and it stops a stolen authorization code from being redeemed.
    fn default() -> Self {
        PkceConfig {
            enabled: true,
            method: PkceMethod::S256,
        }
    }
}

/// `console.roles`: which console role a person who signs in through the provider gets,
/// from the groups the provider puts them in. The highest role any of their groups maps to
/// wins; everyone else gets `default`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsoleRolesConfig {
    pub owner: Vec<String>,
    pub admin: Vec<String>,
    pub network_admin: Vec<String>,
    pub it_admin: Vec<String>,
    pub auditor: Vec<String>,
    /// `member` (their own machines and keys), another role, or `none` (no console access).
    pub default: String,
}

impl Default for ConsoleRolesConfig {
    fn default() -> Self {
        ConsoleRolesConfig {
            owner: Vec::new(),
            admin: Vec::new(),
            network_admin: Vec::new(),
            it_admin: Vec::new(),
            auditor: Vec::new(),
            default: "member".into(),
        }
    }
}

impl ConsoleRolesConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.default != "none" && app::api::Role::parse(&self.default).is_none() {
            return Err(ConfigError::Invalid {
                key: "console.roles.default",
                message: format!(
                    "{:?} is not a role: member, auditor, it_admin, network_admin, admin, owner or none",
                    self.default
                ),
            });
        }
        Ok(())
    }

    /// The console role of a person in `groups`; `None`: no console access.
    pub fn role_for(&self, groups: &[String]) -> Option<app::api::Role> {
        use app::api::Role;
        let in_any = |mapped: &[String]| groups.iter().any(|g| mapped.contains(g));
        [
            (Role::Owner, &self.owner),
            (Role::Admin, &self.admin),
            (Role::NetworkAdmin, &self.network_admin),
            (Role::ItAdmin, &self.it_admin),
            (Role::Auditor, &self.auditor),
        ]
        .into_iter()
        .find(|(_, mapped)| in_any(mapped))
        .map(|(role, _)| role)
        .or_else(|| Role::parse(&self.default))
    }
}

/// Debug output is the serialised form, where the secret is `<set>`: a config printed in
/// a log or a panic message never carries it.
impl std::fmt::Debug for OidcConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = serde_json::to_string(self).map_err(|_| std::fmt::Error)?;
        write!(f, "OidcConfig {shown}")
    }
}

pub(super) fn redacted<S: serde::Serializer>(
    value: &Option<String>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(_) => s.serialize_some("<set>"),
        None => s.serialize_none(),
    }
}

impl OidcConfig {
    pub fn enabled(&self) -> bool {
        self.issuer.as_deref().is_some_and(|i| !i.trim().is_empty())
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !self.enabled() {
            return Ok(());
        }
        let issuer = self.issuer.as_deref().unwrap_or_default();
        if !(issuer.starts_with("https://") || issuer.starts_with("http://")) {
            return Err(ConfigError::Invalid {
                key: "oidc.issuer",
                message: format!("{issuer:?} is not an http(s) URL"),
            });
        }
        if self.client_id.as_deref().is_none_or(str::is_empty) {
            return Err(ConfigError::Invalid {
                key: "oidc.client_id",
                message: "required when oidc.issuer is set".into(),
            });
        }
        if self.client_secret.is_some() && self.client_secret_path.is_some() {
            return Err(ConfigError::Invalid {
                key: "oidc.client_secret_path",
                message: "set either oidc.client_secret or oidc.client_secret_path, not both"
                    .into(),
            });
        }
        if !self.scope.iter().any(|s| s == "openid") {
            return Err(ConfigError::Invalid {
                key: "oidc.scope",
                message: "must include \"openid\"".into(),
            });
        }
        Ok(())
    }

    /// The client secret, read from `client_secret_path` when that is how it is given.
    pub fn secret(&self) -> Result<Option<String>, ConfigError> {
        if let Some(secret) = &self.client_secret {
            return Ok(Some(secret.clone()));
        }
        let Some(path) = &self.client_secret_path else {
            return Ok(None);
        };
        let path = PathBuf::from(expand_env(path, |name| std::env::var(name).ok()));
        let text = std::fs::read_to_string(&path).map_err(|e| ConfigError::Invalid {
            key: "oidc.client_secret_path",
            message: format!("cannot read {}: {e}", path.display()),
        })?;
        Ok(Some(text.trim().to_owned()))
    }
}

/// Replaces `${NAME}` with `lookup(NAME)` (empty when unset), as headscale does for
/// `client_secret_path`.
fn expand_env(text: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        match rest[start + 2..].find('}') {
            Some(len) => {
                let name = &rest[start + 2..start + 2 + len];
                out.push_str(&lookup(name).unwrap_or_default());
                rest = &rest[start + 3 + len..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_paths_take_variables_from_the_environment() {
        let lookup =
            |name: &str| (name == "CREDENTIALS_DIRECTORY").then(|| "/run/creds".to_owned());
        assert_eq!(
            expand_env("${CREDENTIALS_DIRECTORY}/oidc", lookup),
            "/run/creds/oidc"
        );
        assert_eq!(expand_env("/etc/${UNSET}x", lookup), "/etc/x");
        assert_eq!(expand_env("/plain/${open", lookup), "/plain/${open");
    }

    #[test]
    fn an_issuer_needs_a_client_id_and_openid_scope() {
        let mut c = OidcConfig {
            issuer: Some("https://id.example.com".into()),
            ..OidcConfig::default()
        };
        assert!(matches!(
            c.validate(),
            Err(ConfigError::Invalid {
                key: "oidc.client_id",
                ..
            })
        ));
        c.client_id = Some("oxiscale".into());
        assert!(c.validate().is_ok());
        c.scope = vec!["email".into()];
        assert!(matches!(
            c.validate(),
            Err(ConfigError::Invalid {
                key: "oidc.scope",
                ..
            })
        ));
    }

    #[test]
    fn a_headscale_oidc_section_loads_and_the_environment_overrides_it() {
        let dir =
            std::env::temp_dir().join(format!("oxiscale-oidc-config-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.yaml");
        std::fs::write(
            &path,
            "oidc:\n  only_start_if_oidc_is_available: false\n  issuer: https://sso.example.com\n\
             \x20 client_id: headscale\n  client_secret_path: ${CREDENTIALS_DIRECTORY}/oidc\n\
             \x20 scope: [openid, profile, email, groups]\n  extra_params:\n    domain_hint: example.com\n\
             \x20 allowed_domains: [example.com]\n  allowed_groups: [/headscale]\n\
             \x20 email_verified_required: false\n  pkce:\n    enabled: true\n    method: S256\n\
             \x20 expiry: 180d\n  use_expiry_from_token: false\n",
        )
        .unwrap();
        let env = [
            ("OXISCALE_OIDC_CLIENT_ID", "from-env"),
            ("OXISCALE_OIDC_ALLOWED_USERS", "[alice@example.com]"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let c = super::super::Config::load(Some(&path), env).unwrap().oidc;
        std::fs::remove_dir_all(&dir).ok();
        assert!(c.enabled() && !c.only_start_if_oidc_is_available);
        assert_eq!(c.client_id.as_deref(), Some("from-env"));
        assert_eq!(c.allowed_users, vec!["alice@example.com"]);
        assert_eq!(c.allowed_groups, vec!["/headscale"]);
        assert_eq!(c.extra_params["domain_hint"], "example.com");
        assert_eq!(c.pkce.method, PkceMethod::S256);
        assert_eq!(c.expiry.unwrap().0.as_secs(), 180 * 86_400);
        assert!(!c.email_verified_required);
    }

    #[test]
    fn the_highest_mapped_role_wins_and_the_rest_get_the_default() {
        use app::api::Role;
        let roles = ConsoleRolesConfig {
            admin: vec!["ops".into()],
            auditor: vec!["audit".into(), "ops".into()],
            ..ConsoleRolesConfig::default()
        };
        let g = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        assert_eq!(roles.role_for(&g(&["audit", "ops"])), Some(Role::Admin));
        assert_eq!(roles.role_for(&g(&["audit"])), Some(Role::Auditor));
        assert_eq!(roles.role_for(&g(&["sales"])), Some(Role::Member));
        let closed = ConsoleRolesConfig {
            default: "none".into(),
            ..roles
        };
        assert_eq!(closed.role_for(&g(&["sales"])), None);
        assert!(closed.validate().is_ok());
        let bad = ConsoleRolesConfig {
            default: "root".into(),
            ..ConsoleRolesConfig::default()
        };
        assert!(bad.validate().is_err());
    }
}
