//! Data exchanged between the server functions and the pages. Compiled into both halves, so
//! nothing here may depend on server-only crates.

use leptos::server_fn::codec::JsonEncoding;
use leptos::server_fn::error::{FromServerFnError, ServerFnErrorErr};
use serde::{Deserialize, Serialize};

pub mod audit;
pub mod dns;
pub mod identity;
pub mod policy;
pub mod tailnet;

/// What every console page needs to know about the server it is talking to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsoleConfig {
    /// The URL that clients pass as `--login-server`, e.g. `https://vpn.example.com`.
    pub server_url: String,
}

/// Shown in the join command where the operator must paste a real auth key.
pub const AUTHKEY_PLACEHOLDER: &str = "<key>";

impl ConsoleConfig {
    /// The command a device runs to join this server with the given auth key.
    pub fn join_command(&self, authkey: &str) -> String {
        format!(
            "tailscale up --login-server={} --authkey={authkey}",
            self.server_url
        )
    }
}

/// Splits a list typed by hand (tags, nameservers, domains: one entry per line, or separated
/// by commas or spaces) into its items.
pub fn split_list(text: &str) -> Vec<String> {
    text.split(|c: char| c == ',' || c.is_whitespace())
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Errors a console server function can return to the page.
#[derive(Debug, Clone, PartialEq, thiserror::Error, Serialize, Deserialize)]
pub enum ConsoleError {
    /// The embedding server did not provide a `ConsoleBackend`; a wiring bug, not user error.
    #[error("the console backend is not configured on this server")]
    BackendMissing,
    /// No signed-in session (or it expired): the page should send the admin to sign in.
    #[error("not signed in")]
    SignedOut,
    /// The request was understood and refused (invalid input, conflict); the text says why
    /// and is shown to the admin as is.
    #[error("{0}")]
    Refused(String),
    /// The signed-in person's console role does not allow this; the text says which role.
    #[error("{0}")]
    NotAllowed(String),
    /// The thing asked about does not exist (any more).
    #[error("not found: {0}")]
    NotFound(String),
    /// The server failed; details are in its log.
    #[error("server error: {0}")]
    Internal(String),
    /// Transport, encoding or routing failure of the server function itself.
    #[error("request to the server failed: {0}")]
    Transport(ServerFnErrorErr),
}

impl FromServerFnError for ConsoleError {
    type Encoder = JsonEncoding;

    fn from_server_fn_error(value: ServerFnErrorErr) -> Self {
        ConsoleError::Transport(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_command_names_the_login_server_and_key() {
        let config = ConsoleConfig {
            server_url: "https://vpn.example.com".into(),
        };
        assert_eq!(
            config.join_command(AUTHKEY_PLACEHOLDER),
            "tailscale up --login-server=https://vpn.example.com --authkey=<key>"
        );
    }

    #[test]
    fn lists_split_on_lines_commas_and_spaces() {
        assert_eq!(
            split_list(" 1.1.1.1,\n9.9.9.9  fd7a::1\n\n"),
            vec!["1.1.1.1", "9.9.9.9", "fd7a::1"]
        );
        assert!(split_list(" \n ").is_empty());
    }

    #[test]
    fn console_error_survives_the_wire() {
        let err = ConsoleError::from_server_fn_error(ServerFnErrorErr::Request("timeout".into()));
        let json = serde_json::to_string(&err).unwrap();
        let back: ConsoleError = serde_json::from_str(&json).unwrap();
        assert_eq!(back, err);
        assert_eq!(
            ConsoleError::BackendMissing.to_string(),
            "the console backend is not configured on this server"
        );
    }
}
