//! The seam between the console and the coordination server (server half only).
//!
//! The server crate implements [`ConsoleBackend`] over its state and database and hands an
//! `Arc<dyn ConsoleBackend>` to [`crate::ssr::console_router`], which provides it as Leptos
//! context to every page render and server function. The console never reaches into the
//! server's internals any other way, so it can be tested with a fake backend.

use std::sync::Arc;

use leptos::prelude::use_context;

use crate::dto::ConsoleError;

/// Everything the console asks of the server. Methods grow with the console; async ones will
/// return boxed futures so the trait stays object-safe.
pub trait ConsoleBackend: Send + Sync + 'static {
    /// The public URL of this server, as clients must pass it to `--login-server`.
    fn server_url(&self) -> String;
}

/// The backend provided by `console_router`, for use inside server functions and renders.
pub fn use_backend() -> Result<Arc<dyn ConsoleBackend>, ConsoleError> {
    use_context::<Arc<dyn ConsoleBackend>>().ok_or(ConsoleError::BackendMissing)
}
