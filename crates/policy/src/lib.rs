//! Tailscale's policy language (HuJSON ACLs, grants, SSH rules, autoApprovers, tests)
//! compiled to per-node packet filters, peer sets and SSH policies the way Tailscale's hosted
//! control plane does it, checked against captures of the hosted service
//! (`shared/policy-golden`).
//!
//! Sans-IO and clock-free: the crate also builds for `wasm32-unknown-unknown`, so the console
//! can validate a policy in the browser.
//!
//! ```
//! use oxiscale_policy::{Policy, Topology};
//! let p = Policy::parse(r#"{ "acls": [ {"action": "accept", "src": ["*"], "dst": ["*:*"]}, ] }"#).unwrap();
//! let compiled = p.compile(&Topology::default()).unwrap();
//! assert!(compiled.peers(1).is_empty());
//! ```
//!
//! No policy at all means allow-all: use [`Compiled::allow_all`], which is what
//! `Policy::parse("{}")` compiles to as well (no `acls` and no `grants` section).

mod compile;
mod grant;
mod hujson;
mod ipset;
mod policy;
mod posture;
mod report;
mod ssh;
mod testeval;

pub use compile::{Compiled, PeerView};
pub use ipset::IpSet;
pub use posture::{AttrValue, Attributes, node_attributes};
pub use report::{report, topology_from_json};

use ipnet::IpNet;
use std::net::{Ipv4Addr, Ipv6Addr};

pub type NodeId = u64;
pub type UserId = u64;

/// A HuJSON document (comments, trailing commas) as plain JSON, parsed by the same parser
/// as policies, so it reads exactly what [`Policy::parse`] reads.
pub fn hujson_to_json(text: &str) -> Result<serde_json::Value, PolicyError> {
    Ok(hujson::parse(text)?.to_json())
}

/// Where checked actions (`"action": "check"`) send the node when no control URL is given.
pub const DEFAULT_CONTROL_URL: &str = "https://unused";

/// A policy that parsed and passed every check that does not need the tailnet.
#[derive(Debug, Clone)]
pub struct Policy {
    doc: policy::PolicyDoc,
}

/// The users and nodes a policy is resolved against.
#[derive(Debug, Clone, Default)]
pub struct Topology {
    pub users: Vec<User>,
    pub nodes: Vec<Node>,
}

#[derive(Debug, Clone, Default)]
pub struct User {
    pub id: UserId,
    pub name: String,
    /// May be empty.
    pub email: String,
    /// The groups the person's identity provider asserted (`idpgroup:<name>`).
    pub idp_groups: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Node {
    pub id: NodeId,
    pub name: String,
    /// `None` for a tagged node: its tags own it.
    pub user: Option<UserId>,
    pub tags: Vec<String>,
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
    /// Routes the node advertises (`Hostinfo.RoutableIPs`).
    pub routable_ips: Vec<IpNet>,
    /// Routes an admin or autoApprovers approved; only approved ∩ advertised routes count.
    pub approved_routes: Vec<IpNet>,
    pub stable_id: String,
    /// Posture attributes: `node:*` from the client, `custom:*` set through the API.
    pub attributes: Attributes,
}

impl Node {
    pub fn is_tagged(&self) -> bool {
        !self.tags.is_empty() || self.user.is_none()
    }
}

/// Who asks to put a tag on a node: a logged-in user, or a pre-auth key carrying tags.
#[derive(Debug, Clone)]
pub enum TagRequester {
    User(UserId),
    Tags(Vec<String>),
}

/// A rejected policy: where (when known) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct PolicyError {
    pub line: Option<u32>,
    pub column: Option<u32>,
    pub message: String,
}

impl std::fmt::Display for PolicyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, "line {l}, column {c}: {}", self.message),
            _ => f.write_str(&self.message),
        }
    }
}

impl PolicyError {
    pub(crate) fn at(line: u32, col: u32, msg: impl Into<String>) -> Self {
        PolicyError {
            line: Some(line),
            column: Some(col),
            message: msg.into(),
        }
    }
    pub(crate) fn msg(msg: impl Into<String>) -> Self {
        PolicyError {
            line: None,
            column: None,
            message: msg.into(),
        }
    }
}

impl Policy {
    /// Parses HuJSON and checks the document's structure and internal references.
    pub fn parse(text: &str) -> Result<Policy, PolicyError> {
        Ok(Policy {
            doc: policy::PolicyDoc::parse(text)?,
        })
    }

    /// Resolves the policy against a tailnet and evaluates its `tests` and `sshTests`; a
    /// failing test rejects the policy, as the hosted service does.
    pub fn compile(&self, topo: &Topology) -> Result<Compiled, PolicyError> {
        self.compile_with_url(topo, DEFAULT_CONTROL_URL)
    }

    /// [`Policy::compile`] with the server's public URL, used in SSH `check` actions.
    pub fn compile_with_url(
        &self,
        topo: &Topology,
        control_url: &str,
    ) -> Result<Compiled, PolicyError> {
        let c = compile::compile(&self.doc, topo, control_url)?;
        testeval::run_tests(&self.doc, topo, &c)?;
        Ok(c)
    }

    /// [`Policy::compile_with_url`] without evaluating `tests`/`sshTests`. Tests judge a policy
    /// when it is saved, as the hosted service does; a server recompiling an accepted policy
    /// because its tailnet changed uses this, so a renamed user cannot switch access off.
    pub fn compile_untested(
        &self,
        topo: &Topology,
        control_url: &str,
    ) -> Result<Compiled, PolicyError> {
        compile::compile(&self.doc, topo, control_url)
    }

    /// The `checkPeriod` of each `ssh` rule in check mode, in nanoseconds: `None` when the
    /// rule names none (the service's default applies), `Some(0)` for `"always"`.
    pub fn ssh_check_periods(&self) -> Vec<Option<i64>> {
        self.doc
            .ssh
            .iter()
            .flatten()
            .filter(|r| r.action == policy::SshActionKind::Check)
            .map(|r| r.check_period)
            .collect()
    }

    /// Whether the policy defines `postures`: only then do node attributes matter to it.
    pub fn defines_postures(&self) -> bool {
        !self.doc.postures.is_empty()
    }

    /// Whether `tagOwners` defines `tag` (only defined tags may be put on nodes).
    pub fn defines_tag(&self, tag: &str) -> bool {
        self.doc.tag_owners.contains_key(tag)
    }

    /// Routes of `node` (from its `routable_ips`) that `autoApprovers` approve. Exit routes
    /// (`0.0.0.0/0`, `::/0`) are approved only through `exitNode`.
    pub fn auto_approved_routes(&self, topo: &Topology, node: NodeId) -> Vec<IpNet> {
        compile::auto_approved_routes(&self.doc, topo, node)
    }

    /// Whether `requester` may apply `tag` under `tagOwners` (tags may own tags).
    pub fn may_apply_tag(&self, topo: &Topology, requester: &TagRequester, tag: &str) -> bool {
        compile::may_apply_tag(&self.doc, topo, requester, tag)
    }
}
