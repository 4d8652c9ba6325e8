//! Server functions: the only way the browser half reaches the server. Each one fetches the
//! backend from context, so it runs identically during SSR and over HTTP.

use leptos::prelude::*;

use crate::dto::{ConsoleConfig, ConsoleError};

pub mod dns;
pub mod policy;
pub mod tailnet;

/// URL prefix of every console server function. Kept out of `/api`, which belongs to the
/// server's own HTTP API.
pub const SERVER_FN_PREFIX: &str = "/console/fn";

/// The HTTP client behind every console server function: name it in each `#[server]` as
/// `client = crate::api::ConsoleClient`, so that whatever every request must carry (the CSRF
/// token) is added in one place.
pub type ConsoleClient = leptos::server_fn::client::browser::BrowserClient;

/// The server's public settings the console shows (join command and the like).
#[server(prefix = "/console/fn", endpoint = "config", client = ConsoleClient)]
pub async fn get_console_config() -> Result<ConsoleConfig, ConsoleError> {
    let backend = crate::backend::use_backend()?;
    Ok(ConsoleConfig {
        server_url: backend.server_url(),
    })
}
