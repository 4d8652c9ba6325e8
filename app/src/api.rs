//! Server functions: the only way the browser half reaches the server. Each one fetches the
//! backend from context, so it runs identically during SSR and over HTTP.

use leptos::prelude::*;

use crate::dto::{ConsoleConfig, ConsoleError};

/// URL prefix of every console server function. Kept out of `/api`, which belongs to the
/// server's own HTTP API.
pub const SERVER_FN_PREFIX: &str = "/console/fn";

/// The server's public settings the console shows (join command and the like).
#[server(prefix = "/console/fn", endpoint = "config")]
pub async fn get_console_config() -> Result<ConsoleConfig, ConsoleError> {
    let backend = crate::backend::use_backend()?;
    Ok(ConsoleConfig {
        server_url: backend.server_url(),
    })
}
