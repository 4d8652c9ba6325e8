//! The authoritative in-memory tailnet and every rule that changes it.
//!
//! Methods here are synchronous and do no I/O: each mutation changes memory and records, in
//! [`Effects`], the rows to persist and the changes to announce. The [`super::Tailnet`]
//! actor commits the rows before it replies or announces anything, so a client is never
//! told something that is not on disk. Validation happens before the first change to
//! memory, so a refused mutation leaves the state as it was.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use fixedbitset::FixedBitSet;
use ipnet::IpNet;
use oxiscale_policy::{Policy, PolicyError, TagRequester, Topology};
use oxiscale_tailcfg::{
    FilterRule, Hostinfo, MachinePublic, MapRequest, NodePublic, PeerChange, RegisterRequest,
    SshPolicy,
};
use time::OffsetDateTime;
use tokio::sync::watch;

use super::access::{Access, PeerRoutes, PolicyAccess, is_exit_route};
use super::addresses::{AddressPool, AllocError};
use super::effects::{Change, DbOp, Effects};
use super::model::{ApiKey, KeyId, Node, NodeId, PreAuthKey, RegisterMethod, User, UserId};
use super::names::{is_valid_label, sanitize_hostname, unique_label};
use super::nodes::NodeTable;
use super::secret::{self, KeyHash, SecretKind};

mod identity;
pub use identity::ProviderProfile;

/// How long an interactive login may stay pending.
pub const PENDING_LOGIN_TTL: Duration = Duration::from_secs(15 * 60);
/// Interactive logins waiting at once. Anyone can start one (a machine key costs nothing)
/// and each holds its machine's Hostinfo until it completes or times out.
pub const MAX_PENDING_LOGINS: usize = 1_000;

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
}

fn not_found(what: &'static str, id: impl ToString) -> TailnetError {
    TailnetError::NotFound {
        what,
        id: id.to_string(),
    }
}

/// What a new pre-auth key allows, as the administrator asked for it.
#[derive(Debug, Clone)]
pub struct PreAuthKeySpec {
    pub user: Option<UserId>,
    pub reusable: bool,
    pub ephemeral: bool,
    pub expiration: OffsetDateTime,
    pub tags: Vec<String>,
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

/// The answer to a registration, before it is rendered for the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegisterOutcome {
    Authorized(NodeId),
    /// The client logged out (or its node key expired): it must log in again.
    KeyExpired,
    /// Interactive login: the client shows the URL and waits with `Followup`.
    NeedsLogin {
        auth_url: String,
        auth_id: String,
    },
    /// Shown to the user; nothing changed.
    Refused(String),
}

/// A registration waiting for an administrator (or, later, an identity provider).
#[derive(Debug)]
pub struct PendingLogin {
    pub machine: MachinePublic,
    pub node_key: NodePublic,
    pub hostinfo: Hostinfo,
    pub ephemeral: bool,
    pub requested_expiry: Option<OffsetDateTime>,
    pub created: OffsetDateTime,
    pub done: watch::Sender<Option<Result<NodeId, String>>>,
}

/// The key expiry a completed login gives its node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyExpiry {
    /// `node.expiry`, or an earlier one the client asked for.
    #[default]
    Default,
    Never,
    /// Decided by whoever vouched (the identity provider's token, `oidc.expiry`).
    At(OffsetDateTime),
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

    // ----- queries -------------------------------------------------------------------

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

    pub fn verify_api_key(&self, text: &str, now: OffsetDateTime) -> bool {
        let Some((prefix, hashed)) = secret::parse_presented(SecretKind::Api, text) else {
            return false;
        };
        self.api_by_prefix
            .get(prefix)
            .and_then(|id| self.api_keys.get(id))
            .is_some_and(|k| k.expiration > now && k.hash.verify(text, hashed))
    }

    // ----- users ---------------------------------------------------------------------

    pub fn create_user(
        &mut self,
        fx: &mut Effects,
        name: &str,
        display_name: &str,
        email: &str,
        picture_url: &str,
        now: OffsetDateTime,
    ) -> Result<User, TailnetError> {
        validate_user_name(name)?;
        validate_picture_url(picture_url)?;
        if self.user_by_name(name).is_some() {
            return Err(TailnetError::Conflict(format!(
                "user {name:?} already exists"
            )));
        }
        self.seq.user += 1;
        let user = User {
            id: self.seq.user,
            name: name.to_owned(),
            display_name: display_name.to_owned(),
            email: email.to_owned(),
            created: now,
            provider: None,
            picture_url: picture_url.to_owned(),
            provider_groups: Vec::new(),
        };
        fx.write(DbOp::PutSequence("user", self.seq.user + 1));
        fx.write(DbOp::PutUser(user.clone()));
        self.users.insert(user.id, user.clone());
        self.policy_dirty = true;
        Ok(user)
    }

    pub fn rename_user(
        &mut self,
        fx: &mut Effects,
        id: UserId,
        new_name: &str,
    ) -> Result<User, TailnetError> {
        validate_user_name(new_name)?;
        if self
            .users
            .values()
            .any(|u| u.name == new_name && u.id != id)
        {
            return Err(TailnetError::Conflict(format!(
                "user {new_name:?} already exists"
            )));
        }
        let user = self
            .users
            .get_mut(&id)
            .ok_or_else(|| not_found("user", id))?;
        user.name = new_name.to_owned();
        let user = user.clone();
        fx.write(DbOp::PutUser(user.clone()));
        self.policy_dirty = true;
        // Peers show the owner's login name.
        for n in self.nodes.values().filter(|n| n.user == Some(id)) {
            fx.announce(Change::NodeUpserted(n.id));
        }
        Ok(user)
    }

    /// Deletes a user who owns no nodes; their unused pre-auth keys go with them.
    pub fn delete_user(&mut self, fx: &mut Effects, id: UserId) -> Result<(), TailnetError> {
        if !self.users.contains_key(&id) {
            return Err(not_found("user", id));
        }
        let owned = self.nodes.values().filter(|n| n.user == Some(id)).count();
        if owned > 0 {
            return Err(TailnetError::Conflict(format!(
                "user {id} still owns {owned} node(s); delete or re-tag them first"
            )));
        }
        let keys: Vec<KeyId> = self
            .preauth
            .values()
            .filter(|k| k.user == Some(id))
            .map(|k| k.id)
            .collect();
        for k in keys {
            self.remove_preauth(fx, k);
        }
        self.users.remove(&id);
        self.policy_dirty = true;
        fx.write(DbOp::DeleteUser(id));
        Ok(())
    }

    // ----- pre-auth and API keys -------------------------------------------------------

    pub fn create_preauth_key(
        &mut self,
        fx: &mut Effects,
        spec: PreAuthKeySpec,
        now: OffsetDateTime,
    ) -> Result<(PreAuthKey, String), TailnetError> {
        let PreAuthKeySpec {
            user,
            reusable,
            ephemeral,
            expiration,
            tags,
        } = spec;
        if let Some(u) = user
            && !self.users.contains_key(&u)
        {
            return Err(not_found("user", u));
        }
        let tags = normalize_tags(tags)?;
        self.check_tags_defined(&tags)?;
        if user.is_none() && tags.is_empty() {
            return Err(TailnetError::Invalid(
                "a pre-auth key needs a user or at least one tag".into(),
            ));
        }
        if expiration <= now {
            return Err(TailnetError::Invalid(
                "the expiration must be in the future".into(),
            ));
        }
        let minted = secret::mint(SecretKind::PreAuth);
        self.seq.preauth += 1;
        let key = PreAuthKey {
            id: self.seq.preauth,
            prefix: minted.prefix,
            hash: KeyHash::Sha256(minted.hash),
            user,
            reusable,
            ephemeral,
            used: false,
            tags,
            expiration,
            created: now,
        };
        fx.write(DbOp::PutSequence("preauth", self.seq.preauth + 1));
        fx.write(DbOp::PutPreAuthKey(key.clone()));
        self.preauth_by_prefix.insert(key.prefix.clone(), key.id);
        self.preauth.insert(key.id, key.clone());
        Ok((key, minted.text))
    }

    pub fn expire_preauth_key(
        &mut self,
        fx: &mut Effects,
        id: KeyId,
        now: OffsetDateTime,
    ) -> Result<PreAuthKey, TailnetError> {
        let key = self
            .preauth
            .get_mut(&id)
            .ok_or_else(|| not_found("pre-auth key", id))?;
        if key.expiration > now {
            key.expiration = now;
        }
        let key = key.clone();
        fx.write(DbOp::PutPreAuthKey(key.clone()));
        Ok(key)
    }

    pub fn delete_preauth_key(&mut self, fx: &mut Effects, id: KeyId) -> Result<(), TailnetError> {
        if !self.preauth.contains_key(&id) {
            return Err(not_found("pre-auth key", id));
        }
        self.remove_preauth(fx, id);
        Ok(())
    }

    fn remove_preauth(&mut self, fx: &mut Effects, id: KeyId) {
        if let Some(k) = self.preauth.remove(&id) {
            self.preauth_by_prefix.remove(&k.prefix);
            fx.write(DbOp::DeletePreAuthKey(id));
        }
    }

    pub fn create_api_key(
        &mut self,
        fx: &mut Effects,
        expiration: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<(ApiKey, String), TailnetError> {
        if expiration <= now {
            return Err(TailnetError::Invalid(
                "the expiration must be in the future".into(),
            ));
        }
        let minted = secret::mint(SecretKind::Api);
        self.seq.api += 1;
        let key = ApiKey {
            id: self.seq.api,
            prefix: minted.prefix,
            hash: KeyHash::Sha256(minted.hash),
            expiration,
            created: now,
            last_seen: None,
        };
        fx.write(DbOp::PutSequence("api", self.seq.api + 1));
        fx.write(DbOp::PutApiKey(key.clone()));
        self.api_by_prefix.insert(key.prefix.clone(), key.id);
        self.api_keys.insert(key.id, key.clone());
        Ok((key, minted.text))
    }

    /// Finds an API key by id or by its prefix.
    pub fn find_api_key(
        &self,
        id: Option<KeyId>,
        prefix: Option<&str>,
    ) -> Result<KeyId, TailnetError> {
        match (id, prefix) {
            (Some(id), _) if self.api_keys.contains_key(&id) => Ok(id),
            (None, Some(p)) => self
                .api_by_prefix
                .get(p)
                .copied()
                .ok_or_else(|| not_found("API key", p)),
            (Some(id), _) => Err(not_found("API key", id)),
            (None, None) => Err(TailnetError::Invalid("give an API key id or prefix".into())),
        }
    }

    pub fn expire_api_key(
        &mut self,
        fx: &mut Effects,
        id: KeyId,
        now: OffsetDateTime,
    ) -> Result<ApiKey, TailnetError> {
        let key = self
            .api_keys
            .get_mut(&id)
            .ok_or_else(|| not_found("API key", id))?;
        if key.expiration > now {
            key.expiration = now;
        }
        let key = key.clone();
        fx.write(DbOp::PutApiKey(key.clone()));
        Ok(key)
    }

    pub fn delete_api_key(&mut self, fx: &mut Effects, id: KeyId) -> Result<(), TailnetError> {
        let key = self
            .api_keys
            .remove(&id)
            .ok_or_else(|| not_found("API key", id))?;
        self.api_by_prefix.remove(&key.prefix);
        fx.write(DbOp::DeleteApiKey(id));
        Ok(())
    }

    // ----- registration --------------------------------------------------------------

    /// Decides a `/machine/register` request from `machine` (protocol/02 §1.3).
    pub fn register(
        &mut self,
        fx: &mut Effects,
        machine: MachinePublic,
        req: &RegisterRequest,
        now: OffsetDateTime,
    ) -> Result<RegisterOutcome, TailnetError> {
        if req.node_key.is_zero() {
            return Ok(RegisterOutcome::Refused(
                "register request has no node key".into(),
            ));
        }
        let hostinfo = req.hostinfo.clone().unwrap_or_default();

        // A node key belongs to one machine: nobody else may act on it.
        for key in [&req.node_key, &req.old_node_key] {
            if let Some(existing) = self.node_by_key(key)
                && existing.machine_key != machine
            {
                return Ok(RegisterOutcome::Refused(
                    "node key is registered to another machine".into(),
                ));
            }
        }

        // Logout: an expiry in the past.
        if req.expiry.is_some_and(|e| e <= now) {
            if let Some(node) = self.node_by_key(&req.node_key).cloned() {
                if node.ephemeral {
                    self.remove_node(fx, node.id);
                } else if !node.is_expired(now) {
                    self.update_node(fx, node.id, |n| n.expiry = Some(now));
                    // Peers drop it (expired nodes are nobody's peer); the node sees its expiry.
                    fx.announce(Change::NodeUpserted(node.id));
                }
            }
            return Ok(RegisterOutcome::KeyExpired);
        }

        let auth_key = req
            .auth
            .as_ref()
            .map(|a| a.auth_key.trim())
            .filter(|k| !k.is_empty());

        // A known node key with no new credentials: a restart or a routine re-login.
        if auth_key.is_none() {
            if let Some(node) = self.node_by_key(&req.node_key).cloned() {
                if node.is_expired(now) {
                    return Ok(RegisterOutcome::KeyExpired);
                }
                self.refresh_hostinfo(fx, node.id, hostinfo, now);
                return Ok(RegisterOutcome::Authorized(node.id));
            }
            // Seamless key renewal: the old key is known and still valid.
            if !req.old_node_key.is_zero()
                && let Some(node) = self.node_by_key(&req.old_node_key).cloned()
                && !node.is_expired(now)
            {
                self.rotate_node_key(fx, node.id, req.node_key);
                self.refresh_hostinfo(fx, node.id, hostinfo, now);
                return Ok(RegisterOutcome::Authorized(node.id));
            }
        }

        if let Some(text) = auth_key {
            return self.register_with_auth_key(fx, machine, req, text, hostinfo, now);
        }

        // Nothing vouches for this machine: an administrator has to. One waiting login per
        // machine (starting again replaces the previous one), and a bounded number in all.
        self.pending.retain(|_, p| p.machine != machine);
        if self.pending.len() >= MAX_PENDING_LOGINS {
            self.expire_pending_logins(now);
        }
        if self.pending.len() >= MAX_PENDING_LOGINS {
            return Ok(RegisterOutcome::Refused(
                "too many sign-ins are waiting on this server; try again in a few minutes".into(),
            ));
        }
        let auth_id = format!("oxsreq-{}", hex::encode(rand::random::<[u8; 12]>()));
        let (done, _) = watch::channel(None);
        self.pending.insert(
            auth_id.clone(),
            PendingLogin {
                machine,
                node_key: req.node_key,
                hostinfo,
                ephemeral: req.ephemeral,
                requested_expiry: req.expiry,
                created: now,
                done,
            },
        );
        let auth_url = format!(
            "{}/register/{auth_id}",
            self.settings.server_url.trim_end_matches('/')
        );
        Ok(RegisterOutcome::NeedsLogin { auth_url, auth_id })
    }

    fn register_with_auth_key(
        &mut self,
        fx: &mut Effects,
        machine: MachinePublic,
        req: &RegisterRequest,
        text: &str,
        hostinfo: Hostinfo,
        now: OffsetDateTime,
    ) -> Result<RegisterOutcome, TailnetError> {
        let key = secret::parse_presented(SecretKind::PreAuth, text).and_then(|(p, hashed)| {
            self.preauth_by_prefix
                .get(p)
                .and_then(|id| self.preauth.get(id))
                .filter(|k| k.hash.verify(text, hashed))
                .cloned()
        });
        let Some(key) = key else {
            return Ok(RegisterOutcome::Refused("invalid authkey".into()));
        };
        if let Some(reason) = key.refusal(now) {
            return Ok(RegisterOutcome::Refused(reason.into()));
        }
        // A tagged key decides the tags (what the client asks for is ignored); a user's key
        // may ask for the tags tagOwners let that user apply, and for nothing else.
        let owner = if !key.tags.is_empty() {
            Owner {
                user: None,
                tags: key.tags.clone(),
            }
        } else if !hostinfo.request_tags.is_empty() {
            match self.authorize_requested_tags(key.user, &hostinfo.request_tags) {
                Ok(tags) => Owner { user: None, tags },
                Err(reason) => return Ok(RegisterOutcome::Refused(reason)),
            }
        } else {
            Owner {
                user: key.user,
                tags: Vec::new(),
            }
        };
        let registration = Registration {
            machine,
            node_key: req.node_key,
            hostinfo,
            ephemeral: key.ephemeral || req.ephemeral,
            requested_expiry: req.expiry,
            key_expiry: KeyExpiry::Default,
            method: RegisterMethod::AuthKey,
            auth_key_id: Some(key.id),
        };
        let id = self.register_node(fx, registration, owner, now)?;
        if !key.reusable {
            let k = self.preauth.get_mut(&key.id).expect("checked above");
            k.used = true;
            fx.write(DbOp::PutPreAuthKey(k.clone()));
        }
        Ok(RegisterOutcome::Authorized(id))
    }

    /// A receiver that resolves when the pending login `auth_id` of `machine` completes.
    pub fn watch_login(
        &self,
        auth_id: &str,
        machine: MachinePublic,
    ) -> Option<watch::Receiver<Option<Result<NodeId, String>>>> {
        self.pending
            .get(auth_id)
            .filter(|p| p.machine == machine)
            .map(|p| p.done.subscribe())
    }

    pub fn pending_login(&self, auth_id: &str) -> Option<&PendingLogin> {
        self.pending.get(auth_id)
    }

    /// The identity provider vouches for a pending login: the machine joins as `user`'s node
    /// (or re-authenticates the node it already has).
    pub fn complete_login(
        &mut self,
        fx: &mut Effects,
        auth_id: &str,
        user: UserId,
        key_expiry: KeyExpiry,
        now: OffsetDateTime,
    ) -> Result<NodeId, TailnetError> {
        let method = RegisterMethod::Interactive;
        self.complete_login_by(fx, auth_id, user, key_expiry, method, now)
    }

    /// [`State::complete_login`], saying who vouched: `RegisterMethod::Cli` for an
    /// administrator (CLI or REST API, by auth id), as headscale records it.
    pub fn complete_login_by(
        &mut self,
        fx: &mut Effects,
        auth_id: &str,
        user: UserId,
        key_expiry: KeyExpiry,
        method: RegisterMethod,
        now: OffsetDateTime,
    ) -> Result<NodeId, TailnetError> {
        if !self.users.contains_key(&user) {
            return Err(not_found("user", user));
        }
        let pending = self
            .pending
            .get(auth_id)
            .ok_or_else(|| not_found("pending registration", auth_id))?;
        let owner = if pending.hostinfo.request_tags.is_empty() {
            Owner {
                user: Some(user),
                tags: vec![],
            }
        } else {
            match self.authorize_requested_tags(Some(user), &pending.hostinfo.request_tags) {
                Ok(tags) => Owner { user: None, tags },
                Err(reason) => {
                    // The client is told why; the login is over either way.
                    if let Some(p) = self.pending.remove(auth_id) {
                        p.done.send_replace(Some(Err(reason.clone())));
                    }
                    return Err(TailnetError::Invalid(reason));
                }
            }
        };
        let registration = Registration {
            machine: pending.machine,
            node_key: pending.node_key,
            hostinfo: pending.hostinfo.clone(),
            ephemeral: pending.ephemeral,
            requested_expiry: pending.requested_expiry,
            key_expiry,
            method,
            auth_key_id: None,
        };
        let id = self.register_node(fx, registration, owner, now)?;
        if let Some(p) = self.pending.remove(auth_id) {
            p.done.send_replace(Some(Ok(id)));
        }
        Ok(id)
    }

    /// An administrator refuses the pending login `auth_id`: it ends, and the waiting client
    /// is told why.
    pub fn reject_login(&mut self, auth_id: &str, reason: &str) -> Result<(), TailnetError> {
        let pending = self
            .pending
            .remove(auth_id)
            .ok_or_else(|| not_found("pending registration", auth_id))?;
        pending.done.send_replace(Some(Err(reason.to_owned())));
        Ok(())
    }

    /// Whether any pending login has outlived its lifetime.
    pub fn has_stale_pending_logins(&self, now: OffsetDateTime) -> bool {
        self.pending
            .values()
            .any(|p| now - p.created >= PENDING_LOGIN_TTL)
    }

    /// Drops pending logins older than their lifetime; their waiters get an error.
    pub fn expire_pending_logins(&mut self, now: OffsetDateTime) {
        self.pending.retain(|_, p| {
            let alive = now - p.created < PENDING_LOGIN_TTL;
            if !alive {
                p.done.send_replace(Some(Err("login timed out".into())));
            }
            alive
        });
    }

    /// Creates the node, or re-authenticates this machine's existing node for the same owner
    /// (keeping its id, addresses and name).
    fn register_node(
        &mut self,
        fx: &mut Effects,
        r: Registration,
        owner: Owner,
        now: OffsetDateTime,
    ) -> Result<NodeId, TailnetError> {
        let expiry = match r.key_expiry {
            _ if !owner.tags.is_empty() => None,
            KeyExpiry::Default => self.default_expiry(r.requested_expiry, now),
            KeyExpiry::Never => None,
            KeyExpiry::At(t) => Some(t),
        };
        let reuse = self
            .node_by_key(&r.node_key)
            .or_else(|| {
                self.by_machine_key
                    .get(&r.machine)
                    .into_iter()
                    .flatten()
                    .filter_map(|id| self.nodes.get(id))
                    .find(|n| n.user == owner.user && n.tags == owner.tags)
            })
            .map(|n| n.id);
        if let Some(id) = reuse {
            let old_key = self.nodes[&id].node_key;
            if old_key != r.node_key {
                self.rotate_node_key(fx, id, r.node_key);
            }
            self.update_node(fx, id, |n| {
                n.hostname = r.hostinfo.hostname.clone();
                n.hostinfo = r.hostinfo;
                n.expiry = expiry;
                n.ephemeral = r.ephemeral;
                n.register_method = r.method;
                n.auth_key_id = r.auth_key_id;
                n.last_seen = Some(now);
            });
            fx.announce(Change::NodeUpserted(id));
            fx.announce(Change::Visibility);
            return Ok(id);
        }

        let ipv4 = self.pool.allocate_v4()?;
        let ipv6 = match self.pool.allocate_v6() {
            Ok(ip) => ip,
            Err(e) => {
                self.pool.release(ipv4, None);
                return Err(e.into());
            }
        };
        self.seq.node += 1;
        let id = self.seq.node;
        let given_name = unique_label(&sanitize_hostname(&r.hostinfo.hostname), &self.names, None);
        let node = Node {
            id,
            machine_key: r.machine,
            node_key: r.node_key,
            disco_key: Default::default(),
            hostname: r.hostinfo.hostname.clone(),
            given_name,
            user: owner.user,
            tags: owner.tags,
            ipv4,
            ipv6,
            hostinfo: r.hostinfo,
            endpoints: Vec::new(),
            approved_routes: Vec::new(),
            ephemeral: r.ephemeral,
            register_method: r.method,
            auth_key_id: r.auth_key_id,
            expiry,
            // With `node.approval_required` every new node waits for an administrator,
            // however it registered: tagged nodes from a tagged pre-auth key too (a tagged
            // key is typically reusable and handed to automation, so a leaked one is what
            // approval is there to catch), and nodes of an interactive or identity-provider
            // login. A node that re-authenticates is not new (the branch above): it keeps
            // its flag.
            approved: !self.settings.approval_required,
            created: now,
            last_seen: Some(now),
            cap_version: 0,
            online: false,
            peer_json: Default::default(),
        };
        fx.write(DbOp::PutSequence("node", self.seq.node + 1));
        self.index_node(&node);
        let node = Arc::new(node);
        fx.write(DbOp::PutNode(node.clone()));
        self.nodes.insert(node);
        self.policy_dirty = true;
        fx.announce(Change::NodeUpserted(id));
        Ok(id)
    }

    /// The key expiry of a newly (re-)authorized user-owned node. The server's lifetime
    /// decides; a client may ask for an earlier expiry, never for a later one.
    fn default_expiry(
        &self,
        requested: Option<OffsetDateTime>,
        now: OffsetDateTime,
    ) -> Option<OffsetDateTime> {
        let configured = self.settings.node_expiry.map(|d| now + d);
        match (requested.filter(|t| *t > now), configured) {
            (Some(asked), Some(limit)) => Some(asked.min(limit)),
            (Some(asked), None) => Some(asked),
            (None, configured) => configured,
        }
    }

    fn rotate_node_key(&mut self, fx: &mut Effects, id: NodeId, new_key: NodePublic) {
        let old = self.nodes[&id].node_key;
        self.by_node_key.remove(&old);
        self.by_node_key.insert(new_key, id);
        self.update_node(fx, id, |n| n.node_key = new_key);
        fx.announce(Change::NodeUpserted(id));
    }

    fn refresh_hostinfo(
        &mut self,
        fx: &mut Effects,
        id: NodeId,
        hostinfo: Hostinfo,
        now: OffsetDateTime,
    ) {
        let routes_changed = self.nodes[&id].hostinfo.routable_ips != hostinfo.routable_ips;
        self.update_node(fx, id, |n| {
            n.hostname = hostinfo.hostname.clone();
            n.hostinfo = hostinfo;
            n.last_seen = Some(now);
        });
        if routes_changed {
            self.routes_changed(fx);
        }
    }

    // ----- map requests and presence -------------------------------------------------

    /// Applies what a map request says about the node: disco key, endpoints, hostinfo,
    /// client version. Returns the node id, or why the request is refused.
    pub fn apply_map_request(
        &mut self,
        fx: &mut Effects,
        machine: MachinePublic,
        req: &MapRequest,
        now: OffsetDateTime,
    ) -> Result<NodeId, TailnetError> {
        let node = self
            .node_by_key(&req.node_key)
            .ok_or_else(|| not_found("node", req.node_key))?;
        if node.machine_key != machine {
            return Err(TailnetError::Invalid(
                "node key is registered to another machine".into(),
            ));
        }
        // An expired or logged-out node gets nothing (no peers, no filter) until it logs in
        // again, and what it says about itself is not taken either.
        if node.is_expired(now) {
            return Err(TailnetError::Invalid(
                "node key expired: log in again".into(),
            ));
        }
        let id = node.id;
        let mut patch = PeerChange {
            node_id: id,
            ..Default::default()
        };
        let mut full = false;
        let mut routes_changed = false;
        if !req.disco_key.is_zero() && req.disco_key != node.disco_key {
            patch.disco_key = Some(req.disco_key);
        }
        // Streams often start without endpoints; an empty list is "not known yet".
        if !req.endpoints.is_empty() && req.endpoints != node.endpoints {
            patch.endpoints = Some(req.endpoints.clone());
        }
        if let Some(hi) = &req.hostinfo {
            if hi.preferred_derp() != node.hostinfo.preferred_derp() && hi.preferred_derp() != 0 {
                patch.derp_region = Some(hi.preferred_derp());
            }
            routes_changed = hi.routable_ips != node.hostinfo.routable_ips;
            // Anything else in Hostinfo (name, OS, services, SSH keys) reaches peers as a full node.
            let mut old = node.hostinfo.clone();
            let mut new = hi.clone();
            old.net_info = None;
            new.net_info = None;
            full = old != new;
        }
        if req.version != 0 && req.version != node.cap_version {
            patch.cap = Some(req.version);
        }
        let name_changed = req
            .hostinfo
            .as_ref()
            .is_some_and(|hi| !hi.hostname.is_empty() && hi.hostname != node.hostname);
        self.update_node(fx, id, |n| {
            if let Some(k) = patch.disco_key {
                n.disco_key = k;
            }
            if let Some(e) = &patch.endpoints {
                n.endpoints = e.clone();
            }
            if let Some(hi) = &req.hostinfo {
                if name_changed {
                    n.hostname = hi.hostname.clone();
                }
                n.hostinfo = hi.clone();
            }
            if req.version != 0 {
                n.cap_version = req.version;
            }
            n.last_seen = Some(now);
        });
        if full || routes_changed {
            fx.announce(Change::NodeUpserted(id));
        } else if !self.nodes[&id].approved {
            // Nobody sees it yet, and a node ignores patches about itself: the approval
            // sends it whole, endpoints included.
        } else if patch
            != (PeerChange {
                node_id: id,
                ..Default::default()
            })
        {
            fx.announce(Change::NodePatched(patch));
        }
        if routes_changed {
            self.routes_changed(fx);
        }
        Ok(id)
    }

    pub fn set_online(&mut self, fx: &mut Effects, id: NodeId, online: bool, now: OffsetDateTime) {
        let Some(node) = self.nodes.get(&id) else {
            return;
        };
        if node.online == online {
            return;
        }
        let has_routes = !node.served_routes().is_empty();
        self.update_node(fx, id, |n| {
            n.online = online;
            n.last_seen = Some(now);
        });
        fx.announce(Change::NodeOnline {
            id,
            online,
            last_seen: Some(now),
        });
        if has_routes {
            self.routes_changed(fx);
        }
    }

    // ----- administration of nodes ---------------------------------------------------

    /// Expires the node key at `at` (now if `None`); an expired node loses its peers.
    pub fn expire_node(
        &mut self,
        fx: &mut Effects,
        id: NodeId,
        at: Option<OffsetDateTime>,
        now: OffsetDateTime,
    ) -> Result<Arc<Node>, TailnetError> {
        let node = self.nodes.get(&id).ok_or_else(|| not_found("node", id))?;
        if node.is_tagged() && at.is_some_and(|t| t > now) {
            return Err(TailnetError::Invalid("tagged nodes do not expire".into()));
        }
        let when = at.unwrap_or(now);
        self.update_node(fx, id, |n| n.expiry = Some(when));
        // Sessions re-check visibility: an expired node drops out of every peer's map.
        fx.announce(Change::NodeUpserted(id));
        Ok(self.nodes[&id].clone())
    }

    pub fn disable_node_expiry(
        &mut self,
        fx: &mut Effects,
        id: NodeId,
    ) -> Result<Arc<Node>, TailnetError> {
        let node = self.nodes.get(&id).ok_or_else(|| not_found("node", id))?;
        let was_expired = node.expiry.is_some_and(|e| e <= OffsetDateTime::now_utc());
        self.update_node(fx, id, |n| n.expiry = None);
        fx.announce(Change::NodeUpserted(id));
        if was_expired {
            fx.announce(Change::Visibility);
        }
        Ok(self.nodes[&id].clone())
    }

    /// An administrator lets a node held by `node.approval_required` into the tailnet: it
    /// becomes the peer of the nodes that may see it and sees its own. Approving an
    /// approved node changes nothing.
    ///
    /// `NodeUpserted` is all the streams need: the node's own stream takes it as a change
    /// of itself and rechecks every peer (it had none); every other stream checks whether
    /// it may see the node, which it may now. No one else's peers, filters or routes depend
    /// on the node's approval (the policy always compiled it in), so, unlike a change of
    /// tags, no stream has to diff its whole peer set, and the others can share one
    /// encoding of the delta. A node that serves routes may take some over: the election
    /// is rerun, as for any change of who serves routes.
    pub fn approve_node(
        &mut self,
        fx: &mut Effects,
        id: NodeId,
    ) -> Result<Arc<Node>, TailnetError> {
        let node = self.nodes.get(&id).ok_or_else(|| not_found("node", id))?;
        if node.approved {
            return Ok(node.clone());
        }
        let serves_routes = node.serves_routes();
        self.update_node(fx, id, |n| n.approved = true);
        fx.announce(Change::NodeUpserted(id));
        if serves_routes {
            self.routes_changed(fx);
        }
        Ok(self.nodes[&id].clone())
    }

    pub fn rename_node(
        &mut self,
        fx: &mut Effects,
        id: NodeId,
        new_name: &str,
    ) -> Result<Arc<Node>, TailnetError> {
        if !self.nodes.contains_key(&id) {
            return Err(not_found("node", id));
        }
        if !is_valid_label(new_name) {
            return Err(TailnetError::Invalid(format!(
                "{new_name:?} is not a valid name: use 1-63 lowercase letters, digits and inner hyphens (try {:?})",
                sanitize_hostname(new_name)
            )));
        }
        if self.names.get(new_name).is_some_and(|owner| *owner != id) {
            return Err(TailnetError::Conflict(format!(
                "another node is already named {new_name:?}"
            )));
        }
        let old = self.nodes[&id].given_name.clone();
        self.names.remove(&old);
        self.names.insert(new_name.to_owned(), id);
        self.update_node(fx, id, |n| n.given_name = new_name.to_owned());
        fx.announce(Change::NodeUpserted(id));
        Ok(self.nodes[&id].clone())
    }

    pub fn delete_node(&mut self, fx: &mut Effects, id: NodeId) -> Result<Arc<Node>, TailnetError> {
        let node = self
            .nodes
            .get(&id)
            .cloned()
            .ok_or_else(|| not_found("node", id))?;
        self.remove_node(fx, id);
        Ok(node)
    }

    fn remove_node(&mut self, fx: &mut Effects, id: NodeId) {
        let Some(node) = self.nodes.remove(id) else {
            return;
        };
        self.by_node_key.remove(&node.node_key);
        if let Some(ids) = self.by_machine_key.get_mut(&node.machine_key) {
            ids.retain(|other| *other != id);
            if ids.is_empty() {
                self.by_machine_key.remove(&node.machine_key);
            }
        }
        if self.names.get(&node.given_name) == Some(&id) {
            self.names.remove(&node.given_name);
        }
        self.pool.release(node.ipv4, node.ipv6);
        self.policy_dirty = true;
        fx.write(DbOp::DeleteNode(id));
        fx.announce(Change::NodeRemoved(id));
        if !node.served_routes().is_empty() {
            self.routes_changed(fx);
        }
    }

    /// Sets a node's tags; a tagged node is owned by its tags (no user) and never expires.
    pub fn set_tags(
        &mut self,
        fx: &mut Effects,
        id: NodeId,
        tags: Vec<String>,
    ) -> Result<Arc<Node>, TailnetError> {
        let tags = normalize_tags(tags)?;
        let node = self.nodes.get(&id).ok_or_else(|| not_found("node", id))?;
        self.check_tags_defined(&tags)?;
        if tags.is_empty() && node.is_tagged() && node.user.is_none() {
            return Err(TailnetError::Invalid(
                "a tagged node has no user to fall back to; it needs at least one tag".into(),
            ));
        }
        self.update_node(fx, id, |n| {
            if !tags.is_empty() {
                n.user = None;
                n.expiry = None;
            }
            n.tags = tags;
        });
        fx.announce(Change::NodeUpserted(id));
        fx.announce(Change::Visibility);
        Ok(self.nodes[&id].clone())
    }

    /// Sets the approved routes. Approving either exit route approves both.
    pub fn approve_routes(
        &mut self,
        fx: &mut Effects,
        id: NodeId,
        routes: Vec<IpNet>,
    ) -> Result<Arc<Node>, TailnetError> {
        if !self.nodes.contains_key(&id) {
            return Err(not_found("node", id));
        }
        let mut approved: Vec<IpNet> = Vec::new();
        for r in routes {
            if r != r.trunc() {
                return Err(TailnetError::Invalid(format!(
                    "route {r} has host bits set (did you mean {}?)",
                    r.trunc()
                )));
            }
            if is_exit_route(&r) {
                for exit in ["0.0.0.0/0", "::/0"] {
                    let e: IpNet = exit.parse().expect("valid literal");
                    if !approved.contains(&e) {
                        approved.push(e);
                    }
                }
            } else if !approved.contains(&r) {
                approved.push(r);
            }
        }
        approved.sort();
        self.update_node(fx, id, |n| n.approved_routes = approved);
        fx.announce(Change::NodeUpserted(id));
        self.routes_changed(fx);
        Ok(self.nodes[&id].clone())
    }

    /// Gives every node an address in each configured family it lacks (after a prefix
    /// change). Returns the ids that changed.
    pub fn backfill_ips(&mut self, fx: &mut Effects) -> Result<Vec<NodeId>, TailnetError> {
        let mut changed = Vec::new();
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            let node = self.nodes[&id].clone();
            let v4 = match node.ipv4 {
                Some(ip) if self.pool.contains_v4(ip) => Some(ip),
                _ if self.pool.has_v4() => self.pool.allocate_v4()?,
                _ => None,
            };
            let v6 = match node.ipv6 {
                Some(ip) if self.pool.contains_v6(ip) => Some(ip),
                _ if self.pool.has_v6() => self.pool.allocate_v6()?,
                _ => None,
            };
            if v4 != node.ipv4 || v6 != node.ipv6 {
                self.pool.release(
                    node.ipv4.filter(|ip| Some(*ip) != v4),
                    node.ipv6.filter(|ip| Some(*ip) != v6),
                );
                self.update_node(fx, id, |n| {
                    n.ipv4 = v4;
                    n.ipv6 = v6;
                });
                fx.announce(Change::NodeUpserted(id));
                changed.push(id);
            }
        }
        if !changed.is_empty() {
            fx.announce(Change::Visibility);
        }
        Ok(changed)
    }

    /// Ephemeral nodes offline since before `cutoff`.
    pub fn stale_ephemeral_nodes(&self, cutoff: OffsetDateTime) -> Vec<NodeId> {
        self.nodes
            .values()
            .filter(|n| n.ephemeral && !n.online && n.last_seen.is_none_or(|t| t < cutoff))
            .map(|n| n.id)
            .collect()
    }

    /// Deletes ephemeral nodes that are still offline and stale (checked again here: they
    /// may have reconnected since they were picked).
    pub fn reap_ephemeral(
        &mut self,
        fx: &mut Effects,
        ids: &[NodeId],
        cutoff: OffsetDateTime,
    ) -> Vec<NodeId> {
        let stale: Vec<NodeId> = self
            .stale_ephemeral_nodes(cutoff)
            .into_iter()
            .filter(|id| ids.contains(id))
            .collect();
        for id in &stale {
            self.remove_node(fx, *id);
        }
        stale
    }

    /// Nodes whose key expired since `since` (they must vanish from their peers' maps).
    pub fn newly_expired(&self, since: OffsetDateTime, now: OffsetDateTime) -> Vec<NodeId> {
        self.nodes
            .values()
            .filter(|n| n.expiry.is_some_and(|e| e > since && e <= now))
            .map(|n| n.id)
            .collect()
    }

    // ----- policy --------------------------------------------------------------------

    /// The policy in force; `None` means allow-all.
    pub fn policy(&self) -> Option<&Arc<Policy>> {
        self.policy.as_ref()
    }

    /// Set while the policy in force no longer compiles against the tailnet (every node is
    /// cut off until it is fixed): the reason, for the operator.
    pub fn policy_problem(&self) -> Option<&str> {
        self.policy_problem.as_deref()
    }

    /// The tailnet as the policy engine sees it. Node names are the MagicDNS labels; a tagged
    /// node has no user (its tags own it).
    pub fn policy_topology(&self) -> Topology {
        Topology {
            users: self
                .users
                .values()
                .map(|u| oxiscale_policy::User {
                    id: u.id,
                    name: u.name.clone(),
                    email: u.email.clone(),
                    idp_groups: u.provider_groups.clone(),
                })
                .collect(),
            nodes: self
                .nodes
                .values()
                .map(|n| oxiscale_policy::Node {
                    id: n.id,
                    name: n.given_name.clone(),
                    user: if n.is_tagged() { None } else { n.user },
                    tags: n.tags.clone(),
                    ipv4: n.ipv4,
                    ipv6: n.ipv6,
                    routable_ips: n.hostinfo.routable_ips.clone(),
                    approved_routes: n.approved_routes.clone(),
                    stable_id: n.stable_id(),
                })
                .collect(),
        }
    }

    /// Compiles `policy` against the live tailnet, its `tests` included, without putting it
    /// in force (for `policy check`).
    pub fn check_policy(
        &self,
        policy: &Policy,
    ) -> Result<(oxiscale_policy::Compiled, Topology), PolicyError> {
        self.compile_policy(policy, true)
    }

    /// Compiles `policy` against the live tailnet, its `tests` evaluated when asked; every
    /// compile goes through here, so that the metrics see its time.
    fn compile_policy(
        &self,
        policy: &Policy,
        run_tests: bool,
    ) -> Result<(oxiscale_policy::Compiled, Topology), PolicyError> {
        let topo = self.policy_topology();
        let started = std::time::Instant::now();
        let compiled = if run_tests {
            policy.compile_with_url(&topo, &self.settings.server_url)
        } else {
            policy.compile_untested(&topo, &self.settings.server_url)
        };
        metrics::histogram!(crate::telemetry::POLICY_COMPILE_SECONDS)
            .record(started.elapsed().as_secs_f64());
        Ok((compiled?, topo))
    }

    /// Puts `policy` in force (`None`: allow-all) once it compiled against the live tailnet
    /// and passed its `tests`; on error nothing changes. Routes it auto-approves are approved.
    pub fn set_policy(
        &mut self,
        fx: &mut Effects,
        policy: Option<Arc<Policy>>,
    ) -> Result<(), PolicyError> {
        self.put_policy(fx, policy, true)
    }

    /// [`State::set_policy`] without evaluating the policy's `tests`: for a policy accepted
    /// earlier (the newest database row at start), which a changed tailnet must not lock out.
    pub fn adopt_policy(
        &mut self,
        fx: &mut Effects,
        policy: Arc<Policy>,
    ) -> Result<(), PolicyError> {
        self.put_policy(fx, Some(policy), false)
    }

    fn put_policy(
        &mut self,
        fx: &mut Effects,
        policy: Option<Arc<Policy>>,
        run_tests: bool,
    ) -> Result<(), PolicyError> {
        let before = self.access.clone();
        match policy {
            None => {
                self.policy = None;
                self.access = Access::AllowAll;
                self.compiled_for = None;
                self.policy_problem = None;
            }
            Some(policy) => {
                let (compiled, _) = self.compile_policy(&policy, run_tests)?;
                self.access = Access::Policy(Arc::new(PolicyAccess::new(
                    policy.clone(),
                    compiled,
                    self.any_routes(),
                )));
                self.compiled_for = Some(self.policy_fingerprint());
                self.policy = Some(policy.clone());
                self.policy_problem = None;
                // Approvals change nodes: `finish_batch` recompiles for them.
                self.apply_auto_approvals(fx, &policy);
            }
        }
        // A policy edit that only changes ports or protocols (the usual kind) leaves every
        // node's peers as they were: streams are sent new filters without diffing them.
        self.announce_access_change(fx, &before);
        Ok(())
    }

    /// Re-adopts a policy after the state was rebuilt from the database (the writer does
    /// this after a failed commit): compiled at once, so there is no allow-all moment.
    pub fn restore_policy(&mut self, policy: Option<Arc<Policy>>) {
        self.policy = policy;
        self.compiled_for = None;
        self.recompile_policy();
        // Approvals (which write rows) wait for the next batch.
        self.policy_dirty = self.policy.is_some();
    }

    /// Called by the writer after each batch, before its commit: if anything the policy
    /// depends on changed (nodes added, removed, re-tagged, re-addressed, routes advertised or
    /// approved, users added or renamed), auto-approves routes and recompiles, once per
    /// batch. Cheap when nothing changed.
    pub fn finish_batch(&mut self, fx: &mut Effects) {
        if !self.policy_dirty {
            return;
        }
        self.policy_dirty = false;
        let Some(policy) = self.policy.clone() else {
            return;
        };
        self.apply_auto_approvals(fx, &policy);
        self.policy_dirty = false;
        let before = self.access.clone();
        if self.recompile_policy() {
            // The batch's own changes carry whoever joined or left; the others' peers
            // are diffed only if the recompile changed whom they see.
            self.announce_access_change(fx, &before);
        }
    }

    /// Tells the streams that `access` replaced `before`: nothing when every node that
    /// stayed has the same peers and filters (a join under `* → *:*`), only new filters
    /// when it has the same peers, otherwise a diff of every stream's peers.
    fn announce_access_change(&self, fx: &mut Effects, before: &Access) {
        if !before.same_peers_as(&self.access) {
            fx.announce(Change::Visibility);
        } else if !before.same_filters_as(&self.access) {
            fx.announce(Change::Filters);
        }
    }

    /// Recompiles the policy in force if its inputs changed since the last compile. Tests
    /// are not run again (they judge a policy when it is set). If it no longer compiles,
    /// every node is cut off rather than left with a stale or wider view: no error widens
    /// access. Returns whether `access` was replaced.
    fn recompile_policy(&mut self) -> bool {
        let Some(policy) = self.policy.clone() else {
            return false;
        };
        let fingerprint = self.policy_fingerprint();
        if self.compiled_for == Some(fingerprint) {
            return false;
        }
        self.compiled_for = Some(fingerprint);
        let any_routes = self.any_routes();
        self.access = match self.compile_policy(&policy, false) {
            Ok((compiled, _)) => {
                self.policy_problem = None;
                Access::Policy(Arc::new(PolicyAccess::new(policy, compiled, any_routes)))
            }
            Err(e) => {
                let problem = format!(
                    "the policy no longer compiles against the tailnet ({e}); every node is cut off until the policy is fixed"
                );
                tracing::error!("{problem}");
                self.policy_problem = Some(problem);
                let deny = Arc::new(Policy::parse(r#"{"acls": []}"#).expect("valid literal"));
                let compiled = deny
                    .compile_untested(&self.policy_topology(), &self.settings.server_url)
                    .expect("a policy without rules compiles against any tailnet");
                Access::Policy(Arc::new(PolicyAccess::new(deny, compiled, false)))
            }
        };
        true
    }

    fn any_routes(&self) -> bool {
        self.nodes
            .values()
            .any(|n| !n.hostinfo.routable_ips.is_empty())
    }

    /// Everything the compiled policy depends on, hashed.
    fn policy_fingerprint(&self) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for u in self.users.values() {
            (u.id, &u.name, &u.email, &u.provider_groups).hash(&mut h);
        }
        for n in self.nodes.values() {
            (n.id, policy_inputs_hash(n)).hash(&mut h);
        }
        h.finish()
    }

    /// Approves the advertised routes `autoApprovers` cover (adds, never removes).
    fn apply_auto_approvals(&mut self, fx: &mut Effects, policy: &Policy) {
        if !self.any_routes() {
            return;
        }
        let topo = self.policy_topology();
        for n in topo.nodes.iter().filter(|n| !n.routable_ips.is_empty()) {
            let missing: Vec<IpNet> = policy
                .auto_approved_routes(&topo, n.id)
                .into_iter()
                .filter(|r| !n.approved_routes.contains(r))
                .collect();
            if missing.is_empty() {
                continue;
            }
            let mut routes = n.approved_routes.clone();
            routes.extend(missing);
            if let Err(e) = self.approve_routes(fx, n.id, routes) {
                tracing::warn!(node = n.id, error = %e, "auto-approving routes failed");
            }
        }
    }

    /// Under a policy, a tag may only be put on a node if `tagOwners` defines it.
    fn check_tags_defined(&self, tags: &[String]) -> Result<(), TailnetError> {
        let Some(policy) = &self.policy else {
            return Ok(());
        };
        let undefined: Vec<&String> = tags.iter().filter(|t| !policy.defines_tag(t)).collect();
        if undefined.is_empty() {
            Ok(())
        } else {
            Err(TailnetError::Invalid(format!(
                "tag(s) {undefined:?} are not defined in the policy's tagOwners"
            )))
        }
    }

    /// The tags a user-owned registration asked for (`Hostinfo.RequestTags`), if `tagOwners`
    /// lets `user` apply every one of them. Like Tailscale, one tag not permitted refuses the
    /// whole registration rather than silently dropping it.
    fn authorize_requested_tags(
        &self,
        user: Option<UserId>,
        requested: &[String],
    ) -> Result<Vec<String>, String> {
        let tags = normalize_tags(requested.to_vec()).map_err(|e| e.to_string())?;
        let refused: Vec<&String> = match (&self.policy, user) {
            (Some(policy), Some(user)) => {
                let topo = Topology {
                    users: self.policy_topology().users,
                    nodes: Vec::new(),
                };
                tags.iter()
                    .filter(|t| !policy.may_apply_tag(&topo, &TagRequester::User(user), t))
                    .collect()
            }
            _ => tags.iter().collect(),
        };
        if refused.is_empty() {
            Ok(tags)
        } else {
            let list = refused
                .iter()
                .map(|t| t.as_str())
                .collect::<Vec<_>>()
                .join(" ");
            Err(format!(
                "requested tags [{list}] are invalid or not permitted{}",
                if self.policy.is_none() {
                    " (no policy is in force, so no tagOwners allow them)"
                } else {
                    ""
                }
            ))
        }
    }

    // ----- internals -----------------------------------------------------------------

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
        let slot = self
            .nodes
            .get_mut(id)
            .expect("caller checked the node exists");
        let before = policy_inputs_hash(slot);
        let node = Arc::make_mut(slot);
        f(node);
        // When this version was not shared, make_mut changed it in place.
        node.peer_json.clear();
        if policy_inputs_hash(slot) != before {
            self.policy_dirty = true;
        }
        fx.write(DbOp::PutNode(slot.clone()));
    }

    /// Route advertisement, approval or router presence changed: re-elect primaries and
    /// tell everyone (AllowedIPs and filters depend on them).
    fn routes_changed(&mut self, fx: &mut Effects) {
        let before = self.primaries.clone();
        self.elect_primaries();
        let mut affected: Vec<NodeId> = before
            .values()
            .chain(self.primaries.values())
            .copied()
            .collect();
        affected.sort_unstable();
        affected.dedup();
        for id in affected {
            if self.nodes.contains_key(&id) {
                fx.announce(Change::NodeUpserted(id));
            }
        }
        fx.announce(Change::Visibility);
    }

    /// For each subnet route served by some node, the primary: the current primary while it
    /// stays online (no flapping back), else the lowest-id online server, else the lowest id.
    fn elect_primaries(&mut self) {
        let mut servers: BTreeMap<IpNet, Vec<&Node>> = BTreeMap::new();
        // A node waiting for approval is nobody's peer: it cannot serve anyone a route.
        for n in self.nodes.values().filter(|n| n.approved) {
            for r in n.served_routes() {
                if !is_exit_route(&r) {
                    servers.entry(r).or_default().push(n);
                }
            }
        }
        let mut next = BTreeMap::new();
        for (route, candidates) in servers {
            let current = self
                .primaries
                .get(&route)
                .and_then(|id| candidates.iter().find(|n| n.id == *id && n.online));
            let pick = current
                .or_else(|| candidates.iter().filter(|n| n.online).min_by_key(|n| n.id))
                .or_else(|| candidates.iter().min_by_key(|n| n.id))
                .map(|n| n.id);
            if let Some(id) = pick {
                next.insert(route, id);
            }
        }
        self.primaries = next;
    }
}

/// What of a node the policy engine sees (see `State::policy_topology`), hashed: a change
/// of it means the policy must be recompiled.
fn policy_inputs_hash(n: &Node) -> u64 {
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
    h.finish()
}

struct Owner {
    user: Option<UserId>,
    tags: Vec<String>,
}

struct Registration {
    machine: MachinePublic,
    node_key: NodePublic,
    hostinfo: Hostinfo,
    ephemeral: bool,
    requested_expiry: Option<OffsetDateTime>,
    key_expiry: KeyExpiry,
    method: RegisterMethod,
    auth_key_id: Option<KeyId>,
}

fn validate_user_name(name: &str) -> Result<(), TailnetError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || "-_.@+".contains(c))
        && !name.starts_with(['-', '.']);
    if ok {
        Ok(())
    } else {
        Err(TailnetError::Invalid(format!(
            "{name:?} is not a valid user name: 1-63 letters, digits, '-', '_', '.', '@' or '+'"
        )))
    }
}

/// A profile picture set by an administrator (headscale's `pictureUrl`): empty, or an
/// http(s) URL of at most 2,048 bytes without spaces. Nothing else reaches an `<img src>`.
fn validate_picture_url(url: &str) -> Result<(), TailnetError> {
    let scheme_ok = url.starts_with("https://") || url.starts_with("http://");
    if url.is_empty()
        || (scheme_ok
            && url.len() <= 2048
            && !url.chars().any(|c| c.is_whitespace() || c.is_control()))
    {
        Ok(())
    } else {
        Err(TailnetError::Invalid(
            "a picture URL is an http:// or https:// URL of at most 2,048 characters".into(),
        ))
    }
}

/// Tags are `tag:<name>` with a non-empty ASCII name; duplicates removed, sorted.
fn normalize_tags(tags: Vec<String>) -> Result<Vec<String>, TailnetError> {
    let mut out: Vec<String> = Vec::with_capacity(tags.len());
    for t in tags {
        let t = t.trim().to_owned();
        let name = t.strip_prefix("tag:").unwrap_or("");
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(TailnetError::Invalid(format!(
                "{t:?} is not a tag: tags look like tag:server"
            )));
        }
        if !out.contains(&t) {
            out.push(t);
        }
    }
    out.sort();
    Ok(out)
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
mod approval_tests;

#[cfg(test)]
mod pending_login_tests;
