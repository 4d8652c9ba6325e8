//! The `oxiscale` command line: `serve`, and headscale's admin verbs and flags, which talk
//! to the running server over its local socket (or, in remote mode, its REST API). One
//! module per noun; `-o json` prints what headscale 0.29 prints (`headscale_json`).

mod admins;
mod auth;
mod client;
mod headscale_json;
mod keys;
mod nodes;
mod output;
mod policy;
mod users;
mod views;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use serde_json::json;

use crate::config::{Config, LogFormat};
use admins::{AdminsCommand, AuditCommand};
use auth::AuthCommand;
use client::AdminClient;
use keys::{ApikeysCommand, PreauthCommand};
use nodes::NodesCommand;
use output::Output;
use policy::{DnsCommand, PolicyCommand};
use users::UsersCommand;

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
    /// Copy the database (consistently, also while the server runs) and the server's keys
    /// into a new or empty directory.
    Backup {
        #[arg(long = "to", value_name = "DIR")]
        to: PathBuf,
    },
    /// Put a backup in place of the database and keys (with the server stopped); what it
    /// replaces is kept beside it as `<file>.before-restore-<time>`.
    Restore {
        #[arg(long = "from", value_name = "DIR")]
        from: PathBuf,
    },
    /// Check that the server answers and reaches its database; exits 1 when it does not.
    Health,
    /// Generate keys.
    #[command(subcommand, visible_alias = "gen")]
    Generate(GenerateCommand),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Subcommand, Debug)]
pub enum GenerateCommand {
    /// Generate a private key for the server (`privkey:<hex>`, the key files' format).
    PrivateKey,
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
            match policy::check_offline(&file, &topology) {
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
        Command::Backup { to } => {
            let out = Output::new(cli.output);
            match runtime.block_on(crate::backup::backup(&config, &to)) {
                Ok(manifest) => {
                    let value = serde_json::to_value(&manifest).expect("plain data serialises");
                    out.value(&value, |_| {
                        format!(
                            "backup written to {}: {}",
                            to.display(),
                            manifest.files.join(", ")
                        )
                    });
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    out.error(&anyhow::anyhow!("backup failed: {e}"));
                    ExitCode::FAILURE
                }
            }
        }
        Command::Restore { from } => {
            let out = Output::new(cli.output);
            match runtime.block_on(crate::backup::restore(&config, &from)) {
                Ok(restored) => {
                    let value = serde_json::to_value(&restored).expect("plain data serialises");
                    out.value(&value, |_| {
                        let mut text = format!(
                            "restored the backup of {} (oxiscale {}) from {}",
                            restored.backup_of.created_at,
                            restored.backup_of.oxiscale_version,
                            from.display()
                        );
                        for (file, kept) in &restored.replaced {
                            text.push_str(&format!(
                                "\n  {} was kept as {}",
                                file.display(),
                                kept.display()
                            ));
                        }
                        text
                    });
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    out.error(&anyhow::anyhow!("restore refused: {e}"));
                    ExitCode::FAILURE
                }
            }
        }
        Command::Generate(GenerateCommand::PrivateKey) => {
            let key = crate::keys::key_text(&crate::keys::new_private_key());
            Output::new(cli.output).headscale(&json!({ "private_key": key }), || key.clone());
            ExitCode::SUCCESS
        }
        Command::Completion { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "oxiscale", &mut script);
            output::print_out(String::from_utf8_lossy(&script));
            ExitCode::SUCCESS
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

/// A name as a URL path segment.
fn path_segment(client_value: &str) -> String {
    // Names travel in the path: keep them to the characters user names may have.
    client_value
        .chars()
        .filter(|c| c.is_alphanumeric() || "-_.@+".contains(*c))
        .collect()
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
        Command::Users(cmd) => users::run(client, out, force, cmd).await,
        Command::Preauthkeys(cmd) => keys::run_preauth(client, out, cmd).await,
        Command::Apikeys(cmd) => keys::run_apikeys(client, out, cmd).await,
        Command::Nodes(cmd) => nodes::run(client, out, force, cmd).await,
        Command::Auth(cmd) => auth::run(client, out, cmd).await,
        Command::Policy(cmd) => policy::run_policy(client, out, cmd).await,
        Command::Dns(cmd) => policy::run_dns(client, out, cmd).await,
        Command::Admins(cmd) => admins::run_admins(client, out, force, cmd).await,
        Command::Audit(cmd) => admins::run_audit(client, cmd).await,
        Command::Health => {
            let v = client.get("/api/v1/health").await?;
            let health = headscale_json::Health {
                database_connectivity: v["databaseConnectivity"] == true,
            };
            out.headscale(&health, || {
                if health.database_connectivity {
                    "healthy: the server answers and reaches its database".into()
                } else {
                    "unhealthy: the server answers but cannot reach its database".into()
                }
            });
            if !health.database_connectivity {
                anyhow::bail!("the server cannot reach its database");
            }
            Ok(())
        }
        Command::Serve
        | Command::Configtest
        | Command::Version
        | Command::Import(_)
        | Command::Export(_)
        | Command::Backup { .. }
        | Command::Restore { .. }
        | Command::Generate(_)
        | Command::Completion { .. } => {
            unreachable!("handled before connecting")
        }
    }
}
