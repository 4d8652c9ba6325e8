//! Data of the identity area (the OpenID Connect provider people sign in with), exchanged
//! between its server functions and its page.

use serde::{Deserialize, Serialize};

/// Where the settings in force come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum IdentitySource {
    /// Saved in the console (the database): they win over the config file.
    Saved,
    /// The config file's `oidc.*` keys (or the environment's).
    ConfigFile,
}

/// Whether sign-in through the provider works now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProviderStatus {
    /// OpenID Connect is off.
    Off,
    /// Configured, but the provider could not be reached yet; the server keeps trying.
    Waiting,
    /// Discovered: sign-in through it works.
    Ready,
}

/// The settings in force as the page shows them. The client secret never leaves the server:
/// only whether there is one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentitySettings {
    pub source: IdentitySource,
    pub status: ProviderStatus,
    /// Empty: OpenID Connect is off.
    pub issuer: String,
    pub client_id: String,
    pub client_secret_set: bool,
    pub scopes: Vec<String>,
    pub allowed_domains: Vec<String>,
    pub allowed_users: Vec<String>,
    pub allowed_groups: Vec<String>,
    pub email_verified_required: bool,
    pub use_expiry_from_token: bool,
    /// A duration (`180d`), `0` for never, or empty for the server's default node expiry.
    pub expiry: String,
    /// What to register at the provider as this server's redirect URI.
    pub redirect_uri: String,
}

/// New settings as typed on the page. An empty `client_secret` keeps the secret in force; an
/// empty `issuer` turns OpenID Connect off.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityUpdate {
    pub issuer: String,
    pub client_id: String,
    pub client_secret: String,
    pub scopes: Vec<String>,
    pub allowed_domains: Vec<String>,
    pub allowed_users: Vec<String>,
    pub allowed_groups: Vec<String>,
    pub email_verified_required: bool,
    pub use_expiry_from_token: bool,
    pub expiry: String,
}

/// Never prints the secret, only whether one was typed.
impl std::fmt::Debug for IdentityUpdate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityUpdate")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &if self.client_secret.is_empty() {
                    "<keep>"
                } else {
                    "<new>"
                },
            )
            .field("scopes", &self.scopes)
            .field("allowed_domains", &self.allowed_domains)
            .field("allowed_users", &self.allowed_users)
            .field("allowed_groups", &self.allowed_groups)
            .field("email_verified_required", &self.email_verified_required)
            .field("use_expiry_from_token", &self.use_expiry_from_token)
            .field("expiry", &self.expiry)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_update_never_prints_its_secret() {
        let update = IdentityUpdate {
            client_secret: "hunter2".into(),
            ..IdentityUpdate::default()
        };
        let printed = format!("{update:?}");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(printed.contains("<new>"), "{printed}");
    }
}
