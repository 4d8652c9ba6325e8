//! The identity provider's settings: what the console asks of the server for this area.

use super::BackendFuture;
use crate::dto::identity::{IdentitySettings, IdentityUpdate};

/// OpenID Connect settings as the server provides them.
pub trait IdentityBackend: Send + Sync {
    /// The settings in force (never the client secret).
    fn identity_settings(&self) -> BackendFuture<'_, IdentitySettings>;
    /// Validates the settings, discovers their provider and only then stores them and puts
    /// them in force for the next sign-in; refused settings change nothing.
    fn set_identity_settings(&self, update: IdentityUpdate) -> BackendFuture<'_, IdentitySettings>;
    /// Forgets the saved settings: the config file's are in force again.
    fn reset_identity_settings(&self) -> BackendFuture<'_, IdentitySettings>;
}
