//! `oxiscale users …`: headscale's user verbs.

use clap::{Args, Subcommand};
use serde_json::json;

use super::client::AdminClient;
use super::output::Output;
use super::{confirm, path_segment, views};

#[derive(Args, Debug)]
pub struct UserSelector {
    /// User id.
    #[arg(short = 'i', long = "identifier")]
    pub id: Option<u64>,
    /// User name.
    #[arg(short = 'n', long = "name")]
    pub name: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum UsersCommand {
    /// Create a user.
    #[command(visible_aliases = ["c", "new"])]
    Create {
        name: String,
        #[arg(short = 'd', long = "display-name", default_value = "")]
        display_name: String,
        #[arg(short = 'e', long = "email", default_value = "")]
        email: String,
        /// Profile picture URL (http or https).
        #[arg(short = 'p', long = "picture-url", default_value = "")]
        picture_url: String,
    },
    /// List users.
    #[command(visible_aliases = ["ls", "show"])]
    List {
        #[command(flatten)]
        filter: UserSelector,
        #[arg(short = 'e', long = "email")]
        email: Option<String>,
    },
    /// Rename a user.
    #[command(visible_alias = "mv")]
    Rename {
        #[command(flatten)]
        user: UserSelector,
        #[arg(short = 'r', long = "new-name")]
        new_name: String,
    },
    /// Delete a user (who must own no nodes).
    #[command(visible_alias = "delete")]
    Destroy {
        #[command(flatten)]
        user: UserSelector,
    },
}

pub async fn run(
    client: &AdminClient,
    out: &Output,
    force: bool,
    command: UsersCommand,
) -> anyhow::Result<()> {
    match command {
        UsersCommand::Create {
            name,
            display_name,
            email,
            picture_url,
        } => {
            let v = client
                .post(
                    "/api/v1/user",
                    json!({ "name": name, "displayName": display_name, "email": email, "pictureUrl": picture_url }),
                )
                .await?;
            let shown = views::user(v)?;
            out.shown(&shown, |v| {
                format!("User created: {}", v["name"].as_str().unwrap_or_default())
            });
        }
        UsersCommand::List { filter, email } => {
            let shown = views::users(client.get("/api/v1/user").await?, |u| {
                filter.id.is_none_or(|id| u.id == id)
                    && filter.name.as_ref().is_none_or(|n| &u.name == n)
                    && email.as_ref().is_none_or(|e| &u.email == e)
            })?;
            out.shown_table(
                &shown,
                &[
                    ("ID", "id"),
                    ("Name", "name"),
                    ("Display name", "display_name"),
                    ("Email", "email"),
                    ("Created", "created_at"),
                ],
            );
        }
        UsersCommand::Rename { user, new_name } => {
            let id = select_user(&user)?;
            let v = client
                .post(
                    &format!("/api/v1/user/{id}/rename/{}", path_segment(&new_name)),
                    json!({}),
                )
                .await?;
            let shown = views::user(v)?;
            out.shown(&shown, |v| {
                format!("User renamed to {}", v["name"].as_str().unwrap_or_default())
            });
        }
        UsersCommand::Destroy { user } => {
            let id = select_user(&user)?;
            confirm(force, &format!("Delete user {id}?"))?;
            let v = client.delete(&format!("/api/v1/user/{id}")).await?;
            out.headscale(&v, || "User destroyed".into());
        }
    }
    Ok(())
}

fn select_user(sel: &UserSelector) -> anyhow::Result<String> {
    match (&sel.id, &sel.name) {
        (Some(id), _) => Ok(id.to_string()),
        (None, Some(name)) => Ok(path_segment(name)),
        (None, None) => anyhow::bail!("give the user with --identifier/-i or --name/-n"),
    }
}

/// The id of a user given by id or name.
pub async fn resolve_user_id(client: &AdminClient, user: &str) -> anyhow::Result<u64> {
    let shown = views::users(client.get("/api/v1/user").await?, |u| {
        u.name == user || u.id.to_string() == user
    })?;
    shown
        .human
        .as_array()
        .and_then(|users| users.first())
        .and_then(|u| u["id"].as_u64())
        .ok_or_else(|| anyhow::anyhow!("user {user:?} not found"))
}
