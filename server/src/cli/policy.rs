//! `oxiscale policy …` and `oxiscale dns …`: the access policy and the DNS settings.

use std::path::{Path, PathBuf};

use clap::Subcommand;
use serde_json::{Value, json};

use super::client::AdminClient;
use super::output::Output;
use super::views;

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

pub async fn run_policy(
    client: &AdminClient,
    out: &Output,
    command: PolicyCommand,
) -> anyhow::Result<()> {
    match command {
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
    }
    Ok(())
}

pub async fn run_dns(
    client: &AdminClient,
    out: &Output,
    command: DnsCommand,
) -> anyhow::Result<()> {
    let v = match command {
        DnsCommand::Get => client.get("/api/v1/dns").await?,
        DnsCommand::Set { file } => {
            let settings = read_dns_file(&file)?;
            client.put("/api/v1/dns", json!(settings)).await?
        }
    };
    out.value(&v, |v| {
        serde_json::to_string_pretty(v).expect("JSON values print")
    });
    Ok(())
}

fn read_policy_file(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("reading the policy file {}: {e}", path.display()))
}

/// Reads a `dns set` file; a misspelt or missing field is named here, with its line, before
/// anything is sent.
fn read_dns_file(path: &Path) -> anyhow::Result<crate::tailnet::dns::DnsSettings> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("reading the DNS settings file {}: {e}", path.display()))?;
    serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("DNS settings file {}: {e}", path.display()))
}

/// `policy check --topology`: validates and reports without a server.
pub fn check_offline(policy: &Path, topology: &Path) -> anyhow::Result<Value> {
    let text = read_policy_file(policy)?;
    let topo_text = std::fs::read_to_string(topology)
        .map_err(|e| anyhow::anyhow!("reading the topology file {}: {e}", topology.display()))?;
    let topo: Value = serde_json::from_str(&topo_text)
        .map_err(|e| anyhow::anyhow!("topology file {}: {e}", topology.display()))?;
    crate::policy::check_offline(&text, &topo).map_err(|e| anyhow::anyhow!("{e}"))
}
