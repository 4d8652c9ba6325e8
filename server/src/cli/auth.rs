//! `oxiscale auth …`: deciding interactive logins by their auth id (the last part of the
//! login URL a client prints).

use clap::Subcommand;
use serde_json::json;

use super::client::AdminClient;
use super::output::Output;
use super::users::resolve_user_id;
use super::views;

#[derive(Subcommand, Debug)]
pub enum AuthCommand {
    /// Approve a pending interactive login as a user's node.
    Register {
        #[arg(long = "auth-id")]
        auth_id: String,
        /// User (id or name).
        #[arg(short = 'u', long = "user")]
        user: String,
    },
    /// Approve a pending re-authentication of a node that is registered already.
    Approve {
        #[arg(long = "auth-id")]
        auth_id: String,
    },
    /// Reject a pending authentication request; the client is told.
    Reject {
        #[arg(long = "auth-id")]
        auth_id: String,
    },
}

pub async fn run(client: &AdminClient, out: &Output, command: AuthCommand) -> anyhow::Result<()> {
    match command {
        AuthCommand::Register { auth_id, user } => {
            let user = resolve_user_id(client, &user).await?;
            let v = client
                .post(
                    "/api/v1/auth/register",
                    json!({ "authId": auth_id, "user": user.to_string() }),
                )
                .await?;
            let shown = views::node(v)?;
            out.shown(&shown, |v| {
                format!(
                    "Node {} registered",
                    v["given_name"].as_str().unwrap_or_default()
                )
            });
        }
        AuthCommand::Approve { auth_id } => {
            let v = client
                .post("/api/v1/auth/approve", json!({ "authId": auth_id }))
                .await?;
            out.headscale(&v, || "Auth request approved".into());
        }
        AuthCommand::Reject { auth_id } => {
            let v = client
                .post("/api/v1/auth/reject", json!({ "authId": auth_id }))
                .await?;
            out.headscale(&v, || "Auth request rejected".into());
        }
    }
    Ok(())
}
