//! `oxiscale preauthkeys …` and `oxiscale apikeys …`: headscale's key verbs.

use clap::Subcommand;
use serde_json::json;

use super::client::AdminClient;
use super::output::Output;
use super::users::resolve_user_id;
use super::{path_segment, views};

#[derive(Subcommand, Debug)]
pub enum PreauthCommand {
    /// Create a pre-auth key; the key is shown once.
    #[command(visible_aliases = ["c", "new"])]
    Create {
        /// Owner of nodes registered with the key (id or name); omit for a tags-only key.
        #[arg(short = 'u', long = "user")]
        user: Option<String>,
        #[arg(long)]
        reusable: bool,
        #[arg(long)]
        ephemeral: bool,
        /// Lifetime, e.g. 1h, 30m, 90d.
        #[arg(short = 'e', long = "expiration", default_value = "1h")]
        expiration: String,
        /// Tags for nodes registered with the key (comma-separated, e.g. tag:server).
        #[arg(long = "tags", value_delimiter = ',')]
        tags: Vec<String>,
    },
    /// List pre-auth keys.
    #[command(visible_aliases = ["ls", "show"])]
    List,
    /// Expire a pre-auth key.
    #[command(visible_aliases = ["revoke", "exp", "e"])]
    Expire {
        #[arg(short = 'i', long = "id")]
        id: u64,
    },
    /// Delete a pre-auth key.
    #[command(visible_aliases = ["del", "rm", "d"])]
    Delete {
        #[arg(short = 'i', long = "id")]
        id: u64,
    },
}

#[derive(Subcommand, Debug)]
pub enum ApikeysCommand {
    /// Create an API key; it is shown once.
    #[command(visible_aliases = ["c", "new"])]
    Create {
        #[arg(short = 'e', long = "expiration", default_value = "90d")]
        expiration: String,
    },
    /// List API keys.
    #[command(visible_aliases = ["ls", "show"])]
    List,
    /// Expire an API key.
    #[command(visible_aliases = ["revoke", "exp", "e"])]
    Expire {
        #[arg(short = 'p', long = "prefix")]
        prefix: Option<String>,
        #[arg(short = 'i', long = "id")]
        id: Option<u64>,
    },
    /// Delete an API key.
    #[command(visible_aliases = ["del", "rm", "d"])]
    Delete {
        #[arg(short = 'p', long = "prefix")]
        prefix: Option<String>,
        #[arg(short = 'i', long = "id")]
        id: Option<u64>,
    },
}

pub async fn run_preauth(
    client: &AdminClient,
    out: &Output,
    command: PreauthCommand,
) -> anyhow::Result<()> {
    match command {
        PreauthCommand::Create {
            user,
            reusable,
            ephemeral,
            expiration,
            tags,
        } => {
            let user = match user {
                Some(u) => Some(resolve_user_id(client, &u).await?),
                None => None,
            };
            let tags: Vec<String> = tags.into_iter().filter(|t| !t.is_empty()).collect();
            let v = client
                .post(
                    "/api/v1/preauthkey",
                    json!({ "user": user.map(|u| u.to_string()), "reusable": reusable, "ephemeral": ephemeral, "expiration": expiration, "aclTags": tags }),
                )
                .await?;
            let shown = views::preauth_key(v)?;
            out.shown(&shown, |v| v["key"].as_str().unwrap_or_default().to_owned());
        }
        PreauthCommand::List => {
            let shown = views::preauth_keys(client.get("/api/v1/preauthkey").await?)?;
            out.shown_table(
                &shown,
                &[
                    ("ID", "id"),
                    ("Key", "key"),
                    ("User", "user.name"),
                    ("Reusable", "reusable"),
                    ("Ephemeral", "ephemeral"),
                    ("Used", "used"),
                    ("Expired", "expired"),
                    ("Expiration", "expiration"),
                    ("Tags", "acl_tags"),
                ],
            );
        }
        PreauthCommand::Expire { id } => {
            let v = client
                .post("/api/v1/preauthkey/expire", json!({ "id": id.to_string() }))
                .await?;
            out.headscale(&v, || "Key expired".into());
        }
        PreauthCommand::Delete { id } => {
            let v = client
                .delete(&format!("/api/v1/preauthkey?id={id}"))
                .await?;
            out.headscale(&v, || "Key deleted".into());
        }
    }
    Ok(())
}

pub async fn run_apikeys(
    client: &AdminClient,
    out: &Output,
    command: ApikeysCommand,
) -> anyhow::Result<()> {
    match command {
        ApikeysCommand::Create { expiration } => {
            let created = client
                .post("/api/v1/apikey", json!({ "expiration": expiration }))
                .await?;
            let Some(secret) = created["apiKey"].as_str() else {
                anyhow::bail!("the server's answer has no apiKey: {created}");
            };
            // headscale prints the key alone, as a JSON string under -o json.
            out.headscale(secret, || secret.to_owned());
        }
        ApikeysCommand::List => {
            let shown = views::api_keys(client.get("/api/v1/apikey").await?)?;
            out.shown_table(
                &shown,
                &[
                    ("ID", "id"),
                    ("Prefix", "prefix"),
                    ("Expiration", "expiration"),
                    ("Expired", "expired"),
                    ("Created", "created_at"),
                    ("Last seen", "last_seen"),
                ],
            );
        }
        ApikeysCommand::Expire { prefix, id } => {
            if prefix.is_none() && id.is_none() {
                anyhow::bail!("give --prefix or --id");
            }
            let v = client
                .post(
                    "/api/v1/apikey/expire",
                    json!({ "prefix": prefix, "id": id.map(|i| i.to_string()) }),
                )
                .await?;
            out.headscale(&v, || "Key expired".into());
        }
        ApikeysCommand::Delete { prefix, id } => {
            let path = match (id, prefix) {
                (Some(id), _) => format!("/api/v1/apikey/-?id={id}"),
                (None, Some(prefix)) => format!("/api/v1/apikey/{}", path_segment(&prefix)),
                (None, None) => anyhow::bail!("give --prefix or --id"),
            };
            let v = client.delete(&path).await?;
            out.headscale(&v, || "Key deleted".into());
        }
    }
    Ok(())
}
