//! The authoritative in-memory tailnet and every rule that changes it.
//!
//! Methods here are synchronous and do no I/O: each mutation changes memory and records, in
//! [`Effects`], the rows to persist and the changes to announce. The [`super::Tailnet`]
//! actor commits the rows before it replies or announces anything, so a client is never
//! told something that is not on disk. Validation happens before the first change to
//! memory, so a refused mutation leaves the state as it was.
//!
//! The rules are split by concern, one `impl State` block each: `users`, `keys`
//! (pre-auth and API keys), `registration`, `logins` (pending interactive logins),
//! `presence` (map requests, online), `node_admin`, `routes` (approval, HA
//! primaries), `policy` and `validate` (names, URLs, tags). This file holds the state
//! itself, its construction and the read-only queries.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use fixedbitset::FixedBitSet;
use ipnet::IpNet;
use oxiscale_policy::Policy;
use oxiscale_tailcfg::{FilterRule, MachinePublic, NodePublic, SshPolicy};
use time::OffsetDateTime;

use super::access::{Access, PeerRoutes};
use super::addresses::{AddressPool, AllocError};
use super::effects::{Change, DbOp, Effects};
use super::model::{ApiKey, KeyId, Node, NodeId, PreAuthKey, User, UserId};
use super::nodes::NodeTable;

mod attributes;
mod identity;
mod keys;
mod logins;
mod node_admin;
mod policy;
mod presence;
mod registration;
mod routes;
mod users;
mod validate;

pub use identity::ProviderProfile;
pub use keys::PreAuthKeySpec;
pub use logins::{MAX_PENDING_LOGINS, PENDING_LOGIN_TTL, PendingLogin};
pub use policy::{CompiledPolicy, PolicyCompile};
pub use registration::{KeyExpiry, RegisterOutcome};

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum TailnetError {
    #[error("{what} {id} not found")]
    NotFound { what: &'static str, id: String },
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Addresses(#[from] AllocError),
    #[error("the database refused the change: {0}")]
    Storage(String),
    /// The change failed inside the server (a rule panicked); nothing of it was kept.
    #[error("the server could not apply the change: {0}")]
    Internal(String),
}

fn not_found(what: &'static str, id: impl ToString) -> TailnetError {
    TailnetError::NotFound {
        what,
        id: id.to_string(),
    }
}

/// Settings the tailnet logic needs from the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub server_url: String,
    pub base_domain: String,
    pub magic_dns: bool,
    /// Default key lifetime of user-owned nodes; `None` = never expire.
    pub node_expiry: Option<Duration>,
    /// `node.approval_required`: a new node waits for an administrator (see
    /// [`State::approve_node`]).
    pub approval_required: bool,
}

#[derive(Debug, Clone, Copy, Default)]
struct Sequences {
    user: u64,
    node: u64,
    preauth: u64,
    api: u64,
}

/// Everything loaded from the database at start.
#[derive(Debug, Default)]
pub struct Loaded {
    pub users: Vec<User>,
    pub nodes: Vec<Node>,
    pub preauth_keys: Vec<PreAuthKey>,
    pub api_keys: Vec<ApiKey>,
    pub sequences: Vec<(String, u64)>,
}

pub struct State {
    pub settings: Settings,
    users: BTreeMap<UserId, User>,
    nodes: NodeTable,
    by_node_key: HashMap<NodePublic, NodeId>,
    /// A machine's nodes (one per owner and tag set it registered as): re-registration looks
    /// here instead of walking every node, which made a join quadratic.
    by_machine_key: HashMap<MachinePublic, Vec<NodeId>>,
    names: HashMap<String, NodeId>,
    pool: AddressPool,
    preauth: BTreeMap<KeyId, PreAuthKey>,
    preauth_by_prefix: HashMap<String, KeyId>,
    api_keys: BTreeMap<KeyId, ApiKey>,
    api_by_prefix: HashMap<String, KeyId>,
    pending: HashMap<String, PendingLogin>,
    seq: Sequences,
    access: Access,
    /// Which node routes each subnet prefix served by several (HA election result).
    primaries: BTreeMap<IpNet, NodeId>,
    /// The policy in force (`None`: allow-all). `access` is its compiled form, except after
    /// a failed recompile, when `access` denies everything (see `recompile_policy`).
    policy: Option<Arc<Policy>>,
    /// Something the policy depends on changed in this batch (see `finish_batch`).
    policy_dirty: bool,
    /// Fingerprint of the inputs `access` was compiled from.
    compiled_for: Option<u64>,
    /// Why the policy in force could not be recompiled, while that is so.
    policy_problem: Option<String>,
}

impl State {
    pub fn new(settings: Settings, pool: AddressPool, loaded: Loaded) -> State {
        let mut s = State {
            settings,
            users: BTreeMap::new(),
            nodes: NodeTable::default(),
            by_node_key: HashMap::new(),
            by_machine_key: HashMap::new(),
            names: HashMap::new(),
            pool,
            preauth: BTreeMap::new(),
            preauth_by_prefix: HashMap::new(),
            api_keys: BTreeMap::new(),
            api_by_prefix: HashMap::new(),
            pending: HashMap::new(),
            seq: Sequences::default(),
            access: Access::default(),
            primaries: BTreeMap::new(),
            policy: None,
            policy_dirty: false,
            compiled_for: None,
            policy_problem: None,
        };
        for u in loaded.users {
            s.seq.user = s.seq.user.max(u.id);
            s.users.insert(u.id, u);
        }
        for n in loaded.nodes {
            s.seq.node = s.seq.node.max(n.id);
            s.pool.mark_used(n.ipv4, n.ipv6);
            s.index_node(&n);
            s.nodes.insert(Arc::new(n));
        }
        for k in loaded.preauth_keys {
            s.seq.preauth = s.seq.preauth.max(k.id);
            s.preauth_by_prefix.insert(k.prefix.clone(), k.id);
            s.preauth.insert(k.id, k);
        }
        for k in loaded.api_keys {
            s.seq.api = s.seq.api.max(k.id);
            s.api_by_prefix.insert(k.prefix.clone(), k.id);
            s.api_keys.insert(k.id, k);
        }
        // Stored sequences remember ids of deleted rows, so they win over the maxima.
        for (name, next) in loaded.sequences {
            let last = next.saturating_sub(1);
            match name.as_str() {
                "user" => s.seq.user = s.seq.user.max(last),
                "node" => s.seq.node = s.seq.node.max(last),
                "preauth" => s.seq.preauth = s.seq.preauth.max(last),
                "api" => s.seq.api = s.seq.api.max(last),
                _ => {}
            }
        }
        s.elect_primaries();
        s
    }

    pub fn access(&self) -> &Access {
        &self.access
    }

    pub fn user(&self, id: UserId) -> Option<&User> {
        self.users.get(&id)
    }

    pub fn users(&self) -> impl Iterator<Item = &User> {
        self.users.values()
    }

    pub fn user_by_name(&self, name: &str) -> Option<&User> {
        self.users.values().find(|u| u.name == name)
    }

    pub fn node(&self, id: NodeId) -> Option<&Arc<Node>> {
        self.nodes.get(&id)
    }

    pub fn nodes(&self) -> impl Iterator<Item = &Arc<Node>> {
        self.nodes.values()
    }

    /// The blocks of node ids that hold nodes, in id order, each with a stamp that changes
    /// whenever any of its nodes does (see [`NodeTable`]).
    pub fn node_blocks(&self) -> impl Iterator<Item = (NodeId, u64)> + '_ {
        self.nodes.blocks()
    }

    /// The nodes of one block, in id order.
    pub fn nodes_in_block(&self, block: NodeId) -> impl Iterator<Item = &Arc<Node>> + Clone {
        self.nodes.block(block)
    }

    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    pub fn node_by_key(&self, key: &NodePublic) -> Option<&Arc<Node>> {
        self.by_node_key.get(key).and_then(|id| self.nodes.get(id))
    }

    pub fn preauth_keys(&self) -> impl Iterator<Item = &PreAuthKey> {
        self.preauth.values()
    }

    pub fn preauth_key(&self, id: KeyId) -> Option<&PreAuthKey> {
        self.preauth.get(&id)
    }

    pub fn api_keys(&self) -> impl Iterator<Item = &ApiKey> {
        self.api_keys.values()
    }

    /// Whether `viewer` may have `peer` in its netmap. A node not yet approved is nobody's
    /// peer and has none; an expired node is nobody's peer (and is sent nothing at all).
    pub fn is_visible(&self, viewer: &Node, peer: &Node, now: OffsetDateTime) -> bool {
        peer.id != viewer.id
            && viewer.approved
            && peer.is_admitted(now)
            && self.access.can_see(viewer, peer)
    }

    /// The ids of the peers `viewer` may see now: [`Self::is_visible`] for every node at
    /// once, from sets rather than a look at each node.
    pub fn visible_ids(&self, viewer: &Node, now: OffsetDateTime) -> FixedBitSet {
        if !viewer.approved {
            return FixedBitSet::new();
        }
        let mut visible = self.access.seen_by(viewer, self.nodes.ids());
        let mut hide = |id: NodeId| {
            if (id as usize) < visible.len() {
                visible.set(id as usize, false);
            }
        };
        hide(viewer.id);
        self.nodes.expired_at(now).for_each(&mut hide);
        self.nodes.unapproved().iter().copied().for_each(&mut hide);
        visible
    }

    /// The packet filter `node` is sent: none at all (drop everything) until it is approved.
    pub fn packet_filter(&self, node: &Node) -> Vec<FilterRule> {
        if node.approved {
            self.access.packet_filter(node)
        } else {
            Vec::new()
        }
    }

    /// The SSH policy `node` is sent: an empty one until it is approved (`None`, as under
    /// allow-all, means "unchanged" on the wire).
    pub fn ssh_policy(&self, node: &Node) -> Option<SshPolicy> {
        let policy = self.access.ssh_policy(node);
        if node.approved {
            policy
        } else {
            policy.map(|_| Default::default())
        }
    }

    /// The nodes that serve approved routes.
    pub fn routers(&self) -> &[NodeId] {
        self.nodes.routers()
    }

    pub fn peer_routes(&self, viewer: &Node, peer: &Node) -> PeerRoutes {
        self.access
            .peer_routes(viewer, peer, &self.primary_routes_of(peer.id))
    }

    pub fn primary_routes_of(&self, id: NodeId) -> Vec<IpNet> {
        self.primaries
            .iter()
            .filter(|(_, owner)| **owner == id)
            .map(|(p, _)| *p)
            .collect()
    }

    /// Whether a DERP client with this key may use the embedded relay: a known node that
    /// is approved and not expired.
    pub fn admits_to_relay(&self, key: &NodePublic, now: OffsetDateTime) -> bool {
        self.node_by_key(key).is_some_and(|n| n.is_admitted(now))
    }

    /// The FQDN (with trailing dot) of a node.
    pub fn fqdn(&self, node: &Node) -> String {
        super::names::fqdn(&node.given_name, &self.settings.base_domain)
    }

    fn index_node(&mut self, n: &Node) {
        self.by_node_key.insert(n.node_key, n.id);
        self.by_machine_key
            .entry(n.machine_key)
            .or_default()
            .push(n.id);
        self.names.insert(n.given_name.clone(), n.id);
    }

    /// Gives every node a new version, unchanged, and announces each as changed: for a
    /// change outside the nodes that shows in their rendering (the base domain of their
    /// names). Renderings are cached per version (`Node::peer_json`, the mapper's shared
    /// chunks, by pointer), so the old versions' would be sent on.
    pub(super) fn renew_node_versions(&mut self, fx: &mut Effects) {
        for (id, slot) in self.nodes.iter_mut() {
            *slot = Arc::new(Node::clone(slot));
            fx.announce(Change::NodeUpserted(*id));
        }
    }

    /// Copy-on-write update of one node, recorded for the database.
    fn update_node(&mut self, fx: &mut Effects, id: NodeId, f: impl FnOnce(&mut Node)) {
        let postures = self.policy_defines_postures();
        let slot = self
            .nodes
            .get_mut(id)
            .expect("caller checked the node exists");
        let before = policy_inputs_hash(slot, postures);
        let node = Arc::make_mut(slot);
        f(node);
        // When this version was not shared, make_mut changed it in place.
        node.peer_json.clear();
        if policy_inputs_hash(slot, postures) != before {
            self.policy_dirty = true;
        }
        fx.write(DbOp::PutNode(slot.clone()));
    }
}

/// What of a node the policy engine sees (see `State::policy_topology`), hashed: a change
/// of it means the policy must be recompiled. A node's attributes count only under a
/// policy with `postures` (a fleet's client update recompiles nothing otherwise).
fn policy_inputs_hash(n: &Node, postures: bool) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (
        n.user,
        &n.tags,
        n.ipv4,
        n.ipv6,
        &n.hostinfo.routable_ips,
        &n.approved_routes,
        &n.given_name,
    )
        .hash(&mut h);
    if postures {
        // `node:os`, `node:osVersion`, `node:tsVersion`, and the `custom:*` attributes.
        (
            &n.hostinfo.os,
            n.hostinfo.os_version(),
            &n.hostinfo.ipn_version,
        )
            .hash(&mut h);
        super::attributes::hash_attrs(&n.custom_attributes, &mut h);
    }
    h.finish()
}

#[cfg(test)]
impl State {
    /// An empty tailnet on the default address ranges, as the unit tests of its rules use.
    pub(crate) fn for_tests(approval_required: bool) -> State {
        let settings = Settings {
            server_url: "http://127.0.0.1:8080".into(),
            base_domain: "tail.test".into(),
            magic_dns: true,
            node_expiry: None,
            approval_required,
        };
        let pool = AddressPool::new(
            Some("100.64.0.0/10".parse().unwrap()),
            Some("fd7a:115c:a1e0::/48".parse().unwrap()),
            crate::config::Allocation::Sequential,
        );
        State::new(settings, pool, Loaded::default())
    }
}

#[cfg(test)]
mod test_support;

#[cfg(test)]
mod approval_tests;

#[cfg(test)]
mod pending_login_tests;
