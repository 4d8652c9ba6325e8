//! The seam between the console and the coordination server (server half only).
//!
//! The server crate implements [`ConsoleBackend`] over its state and database and hands an
//! `Arc<dyn ConsoleBackend>` to [`crate::ssr::console_router`], which provides it as Leptos
//! context to every page render and server function. The console never reaches into the
//! server's internals any other way, so it can be tested with a fake backend.
//!
//! One sub-trait per area of the console (machines/users/keys, access controls, DNS,
//! identity), each in its own file, so the areas grow independently.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use leptos::prelude::use_context;

use crate::api::{Permission, Scope};
use crate::dto::ConsoleError;

mod audit;
mod dns;
mod identity;
mod policy;
mod tailnet;

pub use audit::AuditBackend;
pub use dns::DnsBackend;
pub use identity::IdentityBackend;
pub use policy::PolicyBackend;
pub use tailnet::TailnetBackend;

/// What an async backend method returns. Boxed so the traits stay object-safe.
pub type BackendFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, ConsoleError>> + Send + 'a>>;

/// Everything the console asks of the server.
pub trait ConsoleBackend:
    TailnetBackend + PolicyBackend + DnsBackend + IdentityBackend + AuditBackend + Send + Sync + 'static
{
    /// The public URL of this server, as clients must pass it to `--login-server`.
    fn server_url(&self) -> String;
}

/// The backend provided by `console_router`, for use inside server functions and renders,
/// and only for a signed-in person whose role allows `permission` (for everyone's things,
/// or, for a member, for their own: the returned [`Scope`] says which). The server's auth
/// middleware already refuses signed-out requests; checking again here, the one door to the
/// tailnet's data, means a route wired without that middleware still serves nothing.
pub fn use_backend(
    permission: Permission,
) -> Result<(Arc<dyn ConsoleBackend>, Scope), ConsoleError> {
    let scope = crate::api::current_admin()?.scope(permission)?;
    let backend = use_context::<Arc<dyn ConsoleBackend>>().ok_or(ConsoleError::BackendMissing)?;
    Ok((backend, scope))
}

/// [`use_backend`] for actions only a role grants (never "their own").
pub fn use_backend_for_all(
    permission: Permission,
) -> Result<Arc<dyn ConsoleBackend>, ConsoleError> {
    crate::api::current_admin()?.require(permission)?;
    use_context::<Arc<dyn ConsoleBackend>>().ok_or(ConsoleError::BackendMissing)
}
