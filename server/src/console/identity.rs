//! The console's identity area (OpenID Connect settings) over the admin service.

use app::backend::BackendFuture;
use app::dto::identity::{IdentitySettings, IdentitySource, IdentityUpdate, ProviderStatus};

use super::{Backend, console_error};
use crate::admin::identity::{OidcSettingsView, OidcSource, OidcStatus, OidcUpdate};

impl app::backend::IdentityBackend for Backend {
    fn identity_settings(&self) -> BackendFuture<'_, IdentitySettings> {
        Box::pin(async move {
            self.admin
                .get_oidc_settings()
                .await
                .map(to_dto)
                .map_err(console_error)
        })
    }

    fn set_identity_settings(&self, u: IdentityUpdate) -> BackendFuture<'_, IdentitySettings> {
        Box::pin(async move {
            let update = OidcUpdate {
                issuer: u.issuer,
                client_id: u.client_id,
                client_secret: u.client_secret,
                scope: u.scopes,
                allowed_domains: u.allowed_domains,
                allowed_users: u.allowed_users,
                allowed_groups: u.allowed_groups,
                email_verified_required: u.email_verified_required,
                use_expiry_from_token: u.use_expiry_from_token,
                expiry: u.expiry,
            };
            self.admin
                .set_oidc_settings(update)
                .await
                .map(to_dto)
                .map_err(console_error)
        })
    }

    fn reset_identity_settings(&self) -> BackendFuture<'_, IdentitySettings> {
        Box::pin(async move {
            self.admin
                .reset_oidc_settings()
                .await
                .map(to_dto)
                .map_err(console_error)
        })
    }
}

fn to_dto(v: OidcSettingsView) -> IdentitySettings {
    IdentitySettings {
        source: match v.source {
            OidcSource::Saved => IdentitySource::Saved,
            OidcSource::ConfigFile => IdentitySource::ConfigFile,
        },
        status: match v.status {
            OidcStatus::Off => ProviderStatus::Off,
            OidcStatus::Waiting => ProviderStatus::Waiting,
            OidcStatus::Ready => ProviderStatus::Ready,
        },
        issuer: v.issuer,
        client_id: v.client_id,
        client_secret_set: v.client_secret_set,
        scopes: v.scope,
        allowed_domains: v.allowed_domains,
        allowed_users: v.allowed_users,
        allowed_groups: v.allowed_groups,
        email_verified_required: v.email_verified_required,
        use_expiry_from_token: v.use_expiry_from_token,
        expiry: v.expiry,
        redirect_uri: v.redirect_uri,
    }
}
