//! The `oxiscale` command line: `serve`, and headscale's admin verbs and flags, which talk
//! to the running server over its local socket.

mod client;
mod output;
mod views;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::{Value, json};

use crate::config::{Config, LogFormat};
use client::AdminClient;
use output::Output;

#[derive(Parser, Debug)]
#[command(
    name = "oxiscale",
    version,
    about = "A self-hosted Tailscale coordination server with its admin console built in"
)]
pub struct Cli {
    /// Configuration file (headscale's config.yaml keys; HEADSCALE_CONFIG works too). Without
    /// one, the first of /etc/oxiscale, ~/.oxiscale, /etc/headscale, ~/.headscale and the
    /// working directory that holds a config.yaml (.yml, .json) is read; with none, defaults
    /// and OXISCALE_* (or HEADSCALE_*) environment variables apply.
    #[arg(short = 'c', long = "config", env = "OXISCALE_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Human, global = true)]
    pub output: Format,
    /// Do not ask for confirmation.
    #[arg(long, global = true)]
    pub force: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    #[value(name = "")]
    Human,
    Json,
    #[value(name = "json-line")]
    JsonLine,
    Yaml,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the server.
    Serve,
    /// Check the configuration and print it with defaults filled in.
    Configtest,
    /// Print the version.
    Version,
    /// Manage users.
    #[command(subcommand, visible_alias = "user")]
    Users(UsersCommand),
    /// Manage pre-authentication keys.
    #[command(subcommand, visible_aliases = ["preauthkey", "authkey", "pre"])]
    Preauthkeys(PreauthCommand),
    /// Manage nodes (machines).
    #[command(subcommand, visible_alias = "node")]
    Nodes(NodesCommand),
    /// Manage API keys for the REST API.
    #[command(subcommand, visible_aliases = ["apikey", "api"])]
    Apikeys(ApikeysCommand),
    /// Approve interactive logins.
    #[command(subcommand)]
    Auth(AuthCommand),
    /// Show, replace or check the access policy.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Show or replace the DNS settings (MagicDNS, nameservers, split DNS, extra records).
    #[command(subcommand)]
    Dns(DnsCommand),
    /// Manage the administrators who sign in to the web console.
    #[command(subcommand, visible_alias = "admin")]
    Admins(AdminsCommand),
    /// The audit log of administrative changes.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Take over another server's database (offline: with both servers stopped).
    #[command(subcommand)]
    Import(ImportCommand),
    /// Write the tailnet into another server's database format (offline: with oxiscale
    /// stopped).
    #[command(subcommand)]
    Export(ExportCommand),
}

#[derive(Subcommand, Debug)]
pub enum ExportCommand {
    /// Write users, nodes, keys headscale can check and the policy into a new SQLite
    /// database in headscale 0.29's schema: the way back to headscale. Clients keep their
    /// sessions when headscale gets oxiscale's Noise key (noise_private.key).
    Headscale {
        /// The database file to create; it must not exist.
        #[arg(long = "to", value_name = "FILE")]
        to: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
pub enum ImportCommand {
    /// Import a headscale SQLite database (0.23 or later) into oxiscale's configured
    /// database, which must hold no users or nodes yet (`--force` replaces them). The
    /// headscale file is never written: it is copied to `<file>.backup-<timestamp>` first.
    Headscale {
        /// headscale's database file (database.sqlite.path in its config).
        #[arg(long = "from", value_name = "FILE")]
        from: PathBuf,
        /// headscale's Noise private key (noise.private_key_path), copied to oxiscale's so
        /// clients reconnect without logging in again.
        #[arg(long = "noise-key", value_name = "FILE")]
        noise_key: Option<PathBuf>,
    },
}

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

#[derive(Subcommand, Debug)]
pub enum PolicyCommand {
    /// Print the policy in force.
    Get,
    /// Replace the policy (database mode); refused with line and column when invalid.
    Set {
        /// The HuJSON policy file.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// Validate a policy and show, per node, its filter, its peers and its SSH policy.
    /// With --topology no server is needed; without, it is checked against the live tailnet.
    Check {
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// A tailnet description in the golden cases' `topology` format (or a whole case).
        #[arg(short = 't', long = "topology")]
        topology: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
pub enum DnsCommand {
    /// Print the DNS settings in force, as JSON in the shape `dns set` reads.
    Get,
    /// Replace the DNS settings and send them to every connected node at once. Refused
    /// settings (naming the field) change nothing.
    Set {
        /// A JSON file in the shape `dns get` prints.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
}

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
pub enum NodesCommand {
    /// List nodes.
    #[command(visible_aliases = ["ls", "show"])]
    List {
        #[arg(short = 'u', long = "user")]
        user: Option<String>,
    },
    /// Expire a node's key now or at a time, or disable its expiry.
    #[command(visible_aliases = ["logout", "exp", "e"])]
    Expire {
        #[arg(short = 'i', long = "identifier")]
        id: u64,
        /// RFC 3339 time (default: now).
        #[arg(short = 'e', long = "expiry")]
        expiry: Option<String>,
        /// Never expire.
        #[arg(short = 'd', long = "disable")]
        disable: bool,
    },
    /// Let a node that waits for approval (`node.approval_required`) into the tailnet.
    Approve {
        #[arg(short = 'i', long = "identifier")]
        id: u64,
    },
    /// Give a node a new MagicDNS name.
    Rename {
        #[arg(short = 'i', long = "identifier")]
        id: u64,
        new_name: String,
    },
    /// Delete a node.
    #[command(visible_alias = "del")]
    Delete {
        #[arg(short = 'i', long = "identifier")]
        id: u64,
    },
    /// Set a node's tags (a tagged node is owned by its tags).
    #[command(visible_aliases = ["tags", "t"])]
    Tag {
        #[arg(short = 'i', long = "identifier")]
        id: u64,
        #[arg(short = 't', long = "tags", value_delimiter = ',')]
        tags: Vec<String>,
    },
    /// Show advertised, approved and served routes.
    #[command(visible_aliases = ["lsr", "routes"])]
    ListRoutes {
        #[arg(short = 'i', long = "identifier")]
        id: Option<u64>,
    },
    /// Set the approved routes of a node (empty removes all).
    ApproveRoutes {
        #[arg(short = 'i', long = "identifier")]
        id: u64,
        #[arg(
            short = 'r',
            long = "routes",
            value_delimiter = ',',
            default_value = ""
        )]
        routes: Vec<String>,
    },
    /// Give nodes addresses for the configured prefixes they lack.
    Backfillips,
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
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let path = cli
        .config
        .clone()
        .or_else(|| std::env::var_os("HEADSCALE_CONFIG").map(PathBuf::from))
        .or_else(|| {
            let home = std::env::var_os("HOME").map(PathBuf::from);
            crate::config::headscale::find_config_file(home.as_deref(), Path::is_file)
        });
    let config = match Config::load(path.as_deref(), std::env::vars()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("oxiscale: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match cli.command {
        Command::Serve => {
            init_logging(&config);
            match &path {
                Some(path) => tracing::info!(file = %path.display(), "configuration read"),
                None => tracing::info!("no configuration file: defaults and environment"),
            }
            match runtime.block_on(crate::serve::run(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("oxiscale: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Configtest => {
            output::print_line(config.to_yaml());
            for notice in &config.notices {
                eprintln!("warning: {notice}");
            }
            eprintln!("configuration is valid");
            ExitCode::SUCCESS
        }
        Command::Version => {
            let out = Output::new(cli.output);
            out.value(&json!({ "version": env!("CARGO_PKG_VERSION") }), |_| {
                env!("CARGO_PKG_VERSION").to_owned()
            });
            ExitCode::SUCCESS
        }
        Command::Policy(PolicyCommand::Check {
            file,
            topology: Some(topology),
        }) => {
            let out = Output::new(cli.output);
            match check_offline(&file, &topology) {
                Ok(report) => {
                    out.value(&report, |r| {
                        serde_json::to_string_pretty(r).expect("JSON values print")
                    });
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    out.error(&e);
                    ExitCode::FAILURE
                }
            }
        }
        Command::Import(ImportCommand::Headscale { from, noise_key }) => {
            let out = Output::new(cli.output);
            let opts = crate::import::headscale::ImportOptions {
                from,
                noise_key,
                force: cli.force,
            };
            match runtime.block_on(crate::import::headscale::import(&config, &opts)) {
                Ok(summary) => {
                    let value = serde_json::to_value(&summary).expect("plain data serialises");
                    out.value(&value, |_| summary.to_text().trim_end().to_owned());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    out.error(&anyhow::anyhow!("import refused: {e}"));
                    ExitCode::FAILURE
                }
            }
        }
        Command::Export(ExportCommand::Headscale { to }) => {
            let out = Output::new(cli.output);
            match runtime.block_on(crate::export::headscale::export(&config, &to)) {
                Ok(summary) => {
                    let value = serde_json::to_value(&summary).expect("plain data serialises");
                    out.value(&value, |_| summary.to_text().trim_end().to_owned());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    out.error(&anyhow::anyhow!("export refused: {e}"));
                    ExitCode::FAILURE
                }
            }
        }
        command => {
            let client = match config.cli.base_url() {
                Some(base) => {
                    match AdminClient::remote(base, config.cli.api_key.clone(), &config.cli) {
                        Ok(client) => client,
                        Err(e) => {
                            Output::new(cli.output).error(&e.into());
                            return ExitCode::FAILURE;
                        }
                    }
                }
                None => AdminClient::new(&config.socket_path()),
            };
            let out = Output::new(cli.output);
            match runtime.block_on(admin_command(&client, &out, cli.force, command)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    out.error(&e);
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn init_logging(config: &Config) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(format!(
            "{},sqlx=warn,tower_http=info,hyper=info,h2=info",
            config.log.level
        ))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// Gives each node of a list an `approval` cell for people: "pending approval" while it
/// waits for an administrator. Programs read `approved` (`-o json`).
fn with_approval_state(nodes: &mut Value) {
    for node in nodes.as_array_mut().into_iter().flatten() {
        let state = match node["approved"].as_bool() {
            Some(false) => "pending approval",
            _ => "approved",
        };
        node["approval"] = json!(state);
    }
}

fn user_path(client_value: &str) -> String {
    // Names travel in the path: keep them to the characters user names may have.
    client_value
        .chars()
        .filter(|c| c.is_alphanumeric() || "-_.@+".contains(*c))
        .collect()
}

fn select_user(sel: &UserSelector) -> anyhow::Result<String> {
    match (&sel.id, &sel.name) {
        (Some(id), _) => Ok(id.to_string()),
        (None, Some(name)) => Ok(user_path(name)),
        (None, None) => anyhow::bail!("give the user with --identifier/-i or --name/-n"),
    }
}

fn confirm(force: bool, question: &str) -> anyhow::Result<()> {
    use std::io::{BufRead, IsTerminal, Write};
    if force || !std::io::stdin().is_terminal() {
        return Ok(());
    }
    print!("{question} [y/N] ");
    std::io::stdout().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    if matches!(line.trim(), "y" | "Y" | "yes") {
        Ok(())
    } else {
        anyhow::bail!("cancelled")
    }
}

async fn admin_command(
    client: &AdminClient,
    out: &Output,
    force: bool,
    command: Command,
) -> anyhow::Result<()> {
    match command {
        Command::Users(cmd) => match cmd {
            UsersCommand::Create {
                name,
                display_name,
                email,
            } => {
                let v = client
                    .post(
                        "/api/v1/user",
                        json!({ "name": name, "displayName": display_name, "email": email }),
                    )
                    .await?;
                let v = views::user(v)?;
                out.value(&v, |v| {
                    format!("User created: {}", v["name"].as_str().unwrap_or_default())
                });
            }
            UsersCommand::List { filter, email } => {
                let v = views::users(client.get("/api/v1/user").await?)?;
                let filtered: Vec<Value> = v
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|u| filter.id.is_none_or(|id| u["id"] == id))
                    .filter(|u| filter.name.as_ref().is_none_or(|n| u["name"] == n.as_str()))
                    .filter(|u| email.as_ref().is_none_or(|e| u["email"] == e.as_str()))
                    .cloned()
                    .collect();
                out.table(
                    &Value::Array(filtered),
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
                        &format!("/api/v1/user/{id}/rename/{}", user_path(&new_name)),
                        json!({}),
                    )
                    .await?;
                let v = views::user(v)?;
                out.value(&v, |v| {
                    format!("User renamed to {}", v["name"].as_str().unwrap_or_default())
                });
            }
            UsersCommand::Destroy { user } => {
                let id = select_user(&user)?;
                confirm(force, &format!("Delete user {id}?"))?;
                let v = client.delete(&format!("/api/v1/user/{id}")).await?;
                out.value(&v, |_| "User destroyed".into());
            }
        },
        Command::Preauthkeys(cmd) => match cmd {
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
                let v = views::preauth_key(v)?;
                out.value(&v, |v| v["key"].as_str().unwrap_or_default().to_owned());
            }
            PreauthCommand::List => {
                let v = Value::Array(views::preauth_keys(
                    client.get("/api/v1/preauthkey").await?,
                )?);
                out.table(
                    &v,
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
                client
                    .post("/api/v1/preauthkey/expire", json!({ "id": id.to_string() }))
                    .await?;
                // The API answers `{}`; the CLI shows the key as it is now.
                let keys = views::preauth_keys(client.get("/api/v1/preauthkey").await?)?;
                let v = views::find_by_id(keys, id, "pre-auth key")?;
                out.value(&v, |_| "Key expired".into());
            }
            PreauthCommand::Delete { id } => {
                let v = client
                    .delete(&format!("/api/v1/preauthkey?id={id}"))
                    .await?;
                out.value(&v, |_| "Key deleted".into());
            }
        },
        Command::Nodes(cmd) => match cmd {
            NodesCommand::List { user } => {
                let path = match user {
                    Some(u) => format!("/api/v1/node?user={}", user_path(&u)),
                    None => "/api/v1/node".into(),
                };
                let mut v = views::nodes(client.get(&path).await?)?;
                if out.is_human() {
                    with_approval_state(&mut v);
                }
                out.table(
                    &v,
                    &[
                        ("ID", "id"),
                        ("Hostname", "name"),
                        ("Name", "given_name"),
                        ("User", "user.name"),
                        ("Tags", "tags"),
                        ("IP addresses", "ip_addresses"),
                        ("Online", "online"),
                        ("Last seen", "last_seen"),
                        ("Expired", "expired"),
                        ("Approval", "approval"),
                    ],
                );
            }
            NodesCommand::Approve { id } => {
                let v = client
                    .post(&format!("/api/v1/node/{id}/approve"), json!({}))
                    .await?;
                let v = views::node(v)?;
                out.value(&v, |v| {
                    format!(
                        "Node {} approved",
                        v["given_name"].as_str().unwrap_or_default()
                    )
                });
            }
            NodesCommand::Expire {
                id,
                expiry,
                disable,
            } => {
                let mut query = form_urlencoded::Serializer::new(String::new());
                if disable {
                    query.append_pair("disableExpiry", "true");
                }
                if let Some(expiry) = &expiry {
                    query.append_pair("expiry", expiry);
                }
                let v = client
                    .post(
                        &format!("/api/v1/node/{id}/expire?{}", query.finish()),
                        json!({}),
                    )
                    .await?;
                let v = views::node(v)?;
                out.value(&v, |v| {
                    if disable {
                        format!(
                            "Node {} will not expire",
                            v["given_name"].as_str().unwrap_or_default()
                        )
                    } else {
                        format!(
                            "Node {} expires {}",
                            v["given_name"].as_str().unwrap_or_default(),
                            v["expiry"].as_str().unwrap_or("now")
                        )
                    }
                });
            }
            NodesCommand::Rename { id, new_name } => {
                let v = client
                    .post(
                        &format!("/api/v1/node/{id}/rename/{}", user_path(&new_name)),
                        json!({}),
                    )
                    .await?;
                let v = views::node(v)?;
                out.value(&v, |v| {
                    format!(
                        "Node renamed to {}",
                        v["given_name"].as_str().unwrap_or_default()
                    )
                });
            }
            NodesCommand::Delete { id } => {
                confirm(force, &format!("Delete node {id}?"))?;
                // The API answers `{}`; the CLI shows the node as it was.
                let v = views::node(client.get(&format!("/api/v1/node/{id}")).await?)?;
                client.delete(&format!("/api/v1/node/{id}")).await?;
                out.value(&v, |_| "Node deleted".into());
            }
            NodesCommand::Tag { id, tags } => {
                let tags: Vec<String> = tags.into_iter().filter(|t| !t.is_empty()).collect();
                let v = client
                    .post(&format!("/api/v1/node/{id}/tags"), json!({ "tags": tags }))
                    .await?;
                let v = views::node(v)?;
                out.value(&v, |v| format!("Node tags: {}", v["tags"]));
            }
            NodesCommand::ListRoutes { id } => {
                let path = match id {
                    Some(id) => format!("/api/v1/node/{id}/routes"),
                    None => "/api/v1/routes".into(),
                };
                let v = views::routes(client.get(&path).await?)?;
                out.table(
                    &v,
                    &[
                        ("ID", "id"),
                        ("Name", "name"),
                        ("Approved", "approved_routes"),
                        ("Available", "available_routes"),
                        ("Serving (primary)", "subnet_routes"),
                    ],
                );
            }
            NodesCommand::ApproveRoutes { id, routes } => {
                let routes: Vec<String> = routes.into_iter().filter(|r| !r.is_empty()).collect();
                let v = client
                    .post(
                        &format!("/api/v1/node/{id}/approve_routes"),
                        json!({ "routes": routes }),
                    )
                    .await?;
                let v = views::node(v)?;
                out.value(&v, |v| format!("Approved routes: {}", v["approved_routes"]));
            }
            NodesCommand::Backfillips => {
                confirm(force, "Give every node the addresses it lacks?")?;
                let v = client
                    .post("/api/v1/node/backfillips?confirmed=true", json!({}))
                    .await?;
                let v = views::backfill(v)?;
                out.value(&v, |v| format!("Nodes changed: {}", v["changed"]));
            }
        },
        Command::Apikeys(cmd) => match cmd {
            ApikeysCommand::Create { expiration } => {
                let created = client
                    .post("/api/v1/apikey", json!({ "expiration": expiration }))
                    .await?;
                let secret = created["apiKey"].as_str().unwrap_or_default().to_owned();
                // The API answers with the key alone; the CLI shows it with its details.
                let keys = views::api_keys(client.get("/api/v1/apikey").await?, Some(&secret))?;
                let v = keys
                    .into_iter()
                    .find(|k| k["key"] == secret.as_str())
                    .ok_or_else(|| anyhow::anyhow!("the new API key is not listed"))?;
                out.value(&v, |v| v["key"].as_str().unwrap_or_default().to_owned());
            }
            ApikeysCommand::List => {
                let v = Value::Array(views::api_keys(client.get("/api/v1/apikey").await?, None)?);
                out.table(
                    &v,
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
                client
                    .post(
                        "/api/v1/apikey/expire",
                        json!({ "prefix": prefix, "id": id.map(|i| i.to_string()) }),
                    )
                    .await?;
                // The API answers `{}`; the CLI shows the key as it is now.
                let keys = views::api_keys(client.get("/api/v1/apikey").await?, None)?;
                let v = keys
                    .into_iter()
                    .find(|k| match (&prefix, id) {
                        (_, Some(id)) => k["id"].as_u64() == Some(id),
                        (Some(p), None) => k["prefix"] == p.as_str(),
                        (None, None) => false,
                    })
                    .ok_or_else(|| anyhow::anyhow!("the expired API key is not listed"))?;
                out.value(&v, |_| "Key expired".into());
            }
            ApikeysCommand::Delete { prefix, id } => {
                let path = match (id, prefix) {
                    (Some(id), _) => format!("/api/v1/apikey/-?id={id}"),
                    (None, Some(prefix)) => format!("/api/v1/apikey/{}", user_path(&prefix)),
                    (None, None) => anyhow::bail!("give --prefix or --id"),
                };
                let v = client.delete(&path).await?;
                out.value(&v, |_| "Key deleted".into());
            }
        },
        Command::Auth(AuthCommand::Register { auth_id, user }) => {
            let user = resolve_user_id(client, &user).await?;
            let v = client
                .post(
                    "/api/v1/auth/register",
                    json!({ "authId": auth_id, "user": user.to_string() }),
                )
                .await?;
            let v = views::node(v)?;
            out.value(&v, |v| {
                format!(
                    "Node {} registered",
                    v["given_name"].as_str().unwrap_or_default()
                )
            });
        }
        Command::Policy(cmd) => match cmd {
            PolicyCommand::Get => {
                let v = views::policy(client.get("/api/v1/policy").await?)?;
                out.value(&v, |v| match v["policy"].as_str() {
                    Some(text) => text.to_owned(),
                    None => "no policy: every node may reach every other node".into(),
                });
            }
            PolicyCommand::Set { file } => {
                let text = read_policy_file(&file)?;
                let v = client
                    .put("/api/v1/policy", json!({ "policy": text }))
                    .await?;
                let v = views::policy(v)?;
                out.value(&v, |_| "Policy updated".into());
            }
            PolicyCommand::Check { file, topology } => {
                debug_assert!(topology.is_none(), "offline checks are handled before");
                let text = read_policy_file(&file)?;
                // Structural errors need no server.
                oxiscale_policy::Policy::parse(&text).map_err(|e| anyhow::anyhow!("{e}"))?;
                let v = client
                    .post("/api/v1/policy/check", json!({ "policy": text }))
                    .await?["report"]
                    .take();
                out.value(&v, |v| {
                    serde_json::to_string_pretty(v).expect("JSON values print")
                });
            }
        },
        Command::Dns(cmd) => {
            let v = match cmd {
                DnsCommand::Get => client.get("/api/v1/dns").await?,
                DnsCommand::Set { file } => {
                    let settings = read_dns_file(&file)?;
                    client.put("/api/v1/dns", json!(settings)).await?
                }
            };
            out.value(&v, |v| {
                serde_json::to_string_pretty(v).expect("JSON values print")
            });
        }
        Command::Audit(AuditCommand::Export {
            actor,
            action,
            target,
            since,
        }) => {
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
        Command::Admins(cmd) => match cmd {
            AdminsCommand::Create {
                name,
                password_stdin,
                role,
            } => {
                if !password_stdin {
                    anyhow::bail!(
                        "give the password on standard input with --password-stdin, e.g. `printf %s \"$PASSWORD\" | oxiscale admins create {} --password-stdin`",
                        user_path(&name)
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
                    .delete(&format!("/api/v1/console/admin/{}", user_path(&name)))
                    .await?;
                out.value(&v, |_| "Console administrator deleted".into());
            }
        },
        Command::Serve
        | Command::Configtest
        | Command::Version
        | Command::Import(_)
        | Command::Export(_) => {
            unreachable!("handled before connecting")
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

async fn resolve_user_id(client: &AdminClient, user: &str) -> anyhow::Result<u64> {
    let users = views::users(client.get("/api/v1/user").await?)?;
    users
        .as_array()
        .into_iter()
        .flatten()
        .find(|u| u["name"] == user || u["id"].as_u64().is_some_and(|id| id.to_string() == user))
        .and_then(|u| u["id"].as_u64())
        .ok_or_else(|| anyhow::anyhow!("user {user:?} not found"))
}

fn read_policy_file(path: &std::path::Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("reading the policy file {}: {e}", path.display()))
}

/// Reads a `dns set` file; a misspelt or missing field is named here, with its line, before
/// anything is sent.
fn read_dns_file(path: &std::path::Path) -> anyhow::Result<crate::tailnet::dns::DnsSettings> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("reading the DNS settings file {}: {e}", path.display()))?;
    serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("DNS settings file {}: {e}", path.display()))
}

/// `policy check --topology`: validates and reports without a server.
fn check_offline(policy: &std::path::Path, topology: &std::path::Path) -> anyhow::Result<Value> {
    let text = read_policy_file(policy)?;
    let topo_text = std::fs::read_to_string(topology)
        .map_err(|e| anyhow::anyhow!("reading the topology file {}: {e}", topology.display()))?;
    let topo: Value = serde_json::from_str(&topo_text)
        .map_err(|e| anyhow::anyhow!("topology file {}: {e}", topology.display()))?;
    crate::policy::check_offline(&text, &topo).map_err(|e| anyhow::anyhow!("{e}"))
}
