//! `oxiscale admins …` and `oxiscale audit …`: the console's administrators and the audit
//! log of administrative changes.

use clap::Subcommand;
use serde_json::{Value, json};

use super::client::AdminClient;
use super::output::{self, Output};
use super::{confirm, path_segment};

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Print the audit log as JSON lines, oldest first.
    Export {
        /// Only changes by actors whose name contains this.
        #[arg(long)]
        actor: Option<String>,
        /// Only actions that start with this (`node.` for every machine change).
        #[arg(long)]
        action: Option<String>,
        /// Only targets that contain this.
        #[arg(long)]
        target: Option<String>,
        /// Only changes at or after this RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum AdminsCommand {
    /// Create a console administrator. The password is read from standard input, so it
    /// never appears in the process list or the shell history.
    #[command(visible_aliases = ["c", "new"])]
    Create {
        name: String,
        /// Read the password from standard input (one line; the final newline is dropped).
        #[arg(long = "password-stdin")]
        password_stdin: bool,
        /// owner (default), admin, network_admin, it_admin or auditor.
        #[arg(long, default_value = "owner")]
        role: String,
    },
    /// List console administrators.
    #[command(visible_aliases = ["ls", "show"])]
    List,
    /// Delete a console administrator; their open sessions end.
    #[command(visible_aliases = ["del", "rm"])]
    Delete { name: String },
}

pub async fn run_admins(
    client: &AdminClient,
    out: &Output,
    force: bool,
    command: AdminsCommand,
) -> anyhow::Result<()> {
    match command {
        AdminsCommand::Create {
            name,
            password_stdin,
            role,
        } => {
            if !password_stdin {
                anyhow::bail!(
                    "give the password on standard input with --password-stdin, e.g. `printf %s \"$PASSWORD\" | oxiscale admins create {} --password-stdin`",
                    path_segment(&name)
                );
            }
            let password = read_password(std::io::stdin().lock())?;
            let v = client
                .post(
                    "/api/v1/console/admin",
                    json!({ "name": name, "password": password, "role": role }),
                )
                .await?;
            out.value(&v, |v| {
                format!(
                    "Console administrator {} created",
                    v["name"].as_str().unwrap_or_default()
                )
            });
        }
        AdminsCommand::List => {
            let v = client.get("/api/v1/console/admin").await?;
            out.table(
                &v,
                &[
                    ("ID", "id"),
                    ("Name", "name"),
                    ("Role", "role"),
                    ("Created", "created_at"),
                    ("Last sign-in", "last_login"),
                ],
            );
        }
        AdminsCommand::Delete { name } => {
            confirm(force, &format!("Delete console administrator {name}?"))?;
            let v = client
                .delete(&format!("/api/v1/console/admin/{}", path_segment(&name)))
                .await?;
            out.value(&v, |_| "Console administrator deleted".into());
        }
    }
    Ok(())
}

pub async fn run_audit(client: &AdminClient, command: AuditCommand) -> anyhow::Result<()> {
    match command {
        AuditCommand::Export {
            actor,
            action,
            target,
            since,
        } => {
            let query: String = form_urlencoded::Serializer::new(String::new())
                .extend_pairs(
                    [
                        ("actor", actor),
                        ("action", action),
                        ("target", target),
                        ("since", since),
                    ]
                    .into_iter()
                    .filter_map(|(k, v)| v.map(|v| (k, v))),
                )
                .finish();
            // JSON lines are not one JSON value: a single entry parses as one, more come
            // back as text; either way they are printed as lines.
            match client.get(&format!("/api/v1/audit?{query}")).await? {
                Value::String(lines) => output::print_out(lines),
                Value::Null => {}
                entry => output::print_line(entry),
            }
        }
    }
    Ok(())
}

/// The password from `--password-stdin`: the first line, without its line ending.
fn read_password(mut input: impl std::io::BufRead) -> anyhow::Result<String> {
    let mut line = String::new();
    input.read_line(&mut line)?;
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.is_empty() {
        anyhow::bail!("no password on standard input");
    }
    Ok(password.to_owned())
}
