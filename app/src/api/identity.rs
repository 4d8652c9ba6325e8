//! Server functions of the identity area (owners and admins only: these settings decide who
//! may sign in at all).

use leptos::prelude::*;

use crate::dto::ConsoleError;
use crate::dto::identity::{IdentitySettings, IdentityUpdate};

/// The OpenID Connect settings in force, without the client secret.
#[server(prefix = "/console/fn", endpoint = "identity/get", client = crate::api::ConsoleClient)]
pub async fn get_identity() -> Result<IdentitySettings, ConsoleError> {
    crate::backend::use_backend_for_all(crate::api::Permission::ManageIdentity)?
        .identity_settings()
        .await
}

/// Saves new settings once their provider is discovered; answers with what is now in force.
#[server(prefix = "/console/fn", endpoint = "identity/set", client = crate::api::ConsoleClient, input = leptos::server_fn::codec::Json)]
pub async fn set_identity(settings: IdentityUpdate) -> Result<IdentitySettings, ConsoleError> {
    crate::backend::use_backend_for_all(crate::api::Permission::ManageIdentity)?
        .set_identity_settings(settings)
        .await
}

/// Forgets the saved settings (the config file's are in force again).
#[server(prefix = "/console/fn", endpoint = "identity/reset", client = crate::api::ConsoleClient)]
pub async fn reset_identity() -> Result<IdentitySettings, ConsoleError> {
    crate::backend::use_backend_for_all(crate::api::Permission::ManageIdentity)?
        .reset_identity_settings()
        .await
}
