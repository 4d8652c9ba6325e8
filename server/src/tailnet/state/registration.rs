//! `/machine/register`: who a machine joins as, and with what key expiry. A node key belongs
//! to one machine; a past expiry logs out; a known key re-logs in; a pre-auth key vouches
//! for a user or tags; otherwise an interactive login starts. A machine that registers
//! again for the same owner keeps its node, and a client may shorten its key expiry, never
//! extend it past `node.expiry`.

use std::sync::Arc;

use oxiscale_tailcfg::{Hostinfo, MachinePublic, NodePublic, RegisterRequest};
use time::OffsetDateTime;
use tokio::sync::watch;

use super::super::effects::{Change, DbOp, Effects};
use super::super::model::{KeyId, Node, NodeId, RegisterMethod, UserId};
use super::super::names::{sanitize_hostname, unique_label};
use super::super::secret::{self, SecretKind};
use super::logins::{MAX_PENDING_LOGINS, PendingLogin};
use super::{State, TailnetError};

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

impl State {
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

    /// Creates the node, or re-authenticates this machine's existing node for the same owner
    /// (keeping its id, addresses and name).
    pub(super) fn register_node(
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
            // The same node key authorized for another owner (another user's key, or tags)
            // moves the node to that owner: it must not keep the rights of the one before.
            // Under approval it is a new identity to approve.
            let current = &self.nodes[&id];
            let moves = current.user != owner.user || current.tags != owner.tags;
            let reapprove = moves && self.settings.approval_required;
            self.update_node(fx, id, |n| {
                if moves {
                    n.user = owner.user;
                    n.tags = owner.tags;
                }
                if reapprove {
                    n.approved = false;
                }
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
            // login. A node that re-authenticates for the same owner is not new (the branch
            // above): it keeps its flag.
            approved: !self.settings.approval_required,
            created: now,
            last_seen: Some(now),
            cap_version: 0,
            custom_attributes: Default::default(),
            ipv4_withheld: false,
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
}

pub(super) struct Owner {
    pub(super) user: Option<UserId>,
    pub(super) tags: Vec<String>,
}

pub(super) struct Registration {
    pub(super) machine: MachinePublic,
    pub(super) node_key: NodePublic,
    pub(super) hostinfo: Hostinfo,
    pub(super) ephemeral: bool,
    pub(super) requested_expiry: Option<OffsetDateTime>,
    pub(super) key_expiry: KeyExpiry,
    pub(super) method: RegisterMethod,
    pub(super) auth_key_id: Option<KeyId>,
}

/// Rules: a user-owned node's key expires at `node.expiry` or earlier if the client asks,
/// never later, and a tagged node's never; a tagged key decides the tags; a key is spent
/// only by a registration that succeeds, and a spent single-use key is refused; a machine
/// that registers for another owner gets another node; a logout expires the node, or
/// deletes it if ephemeral.
#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use time::Duration;

    fn expiry_of(s: &State, id: NodeId) -> Option<OffsetDateTime> {
        s.node(id).unwrap().expiry
    }

    #[test]
    fn a_client_may_shorten_its_key_expiry_never_extend_it_and_tagged_nodes_never_expire() {
        let mut s = State::for_tests(false);
        s.settings.node_expiry = Some(std::time::Duration::from_secs(3600));
        let alice = user(&mut s, "alice");
        let k = key(&mut s, Some(alice), true, &[]);
        let now = OffsetDateTime::now_utc();
        let limit = now + Duration::hours(1);
        let asking = |s: &mut State, n: u8, expiry: Option<OffsetDateTime>| {
            let req = RegisterRequest {
                expiry,
                ..request(n, &format!("m{n}"), Some(&k))
            };
            match register(s, n, &req, now) {
                RegisterOutcome::Authorized(id) => id,
                other => panic!("{other:?}"),
            }
        };
        let late = asking(&mut s, 1, Some(now + Duration::days(365)));
        let early = asking(&mut s, 2, Some(now + Duration::minutes(10)));
        let silent = asking(&mut s, 3, None);
        assert_eq!(expiry_of(&s, late), Some(limit));
        assert_eq!(expiry_of(&s, early), Some(now + Duration::minutes(10)));
        assert_eq!(expiry_of(&s, silent), Some(limit));

        let tagged = key(&mut s, None, true, &["tag:server"]);
        let req = RegisterRequest {
            expiry: Some(now + Duration::minutes(10)),
            ..request(4, "m4", Some(&tagged))
        };
        let RegisterOutcome::Authorized(server) = register(&mut s, 4, &req, now) else {
            panic!("tagged key refused")
        };
        assert_eq!(expiry_of(&s, server), None, "tagged nodes do not expire");
    }

    #[test]
    fn a_tagged_key_decides_the_tags_whatever_the_client_asks_for() {
        let mut s = State::for_tests(false);
        let k = key(&mut s, None, true, &["tag:server"]);
        let mut req = request(1, "m1", Some(&k));
        req.hostinfo.as_mut().unwrap().request_tags = vec!["tag:admin".into()];
        let RegisterOutcome::Authorized(id) = register(&mut s, 1, &req, OffsetDateTime::now_utc())
        else {
            panic!("refused")
        };
        let node = s.node(id).unwrap();
        assert_eq!(node.tags, vec!["tag:server"]);
        assert_eq!(node.user, None);
    }

    #[test]
    fn a_key_is_spent_only_by_a_registration_that_succeeds() {
        let mut s = State::for_tests(false);
        let bob = user(&mut s, "bob");
        let single = key(&mut s, Some(bob), false, &[]);
        let now = OffsetDateTime::now_utc();
        // Tags nobody may apply (there is no policy): refused, and the key is not spent.
        let mut req = request(1, "m1", Some(&single));
        req.hostinfo.as_mut().unwrap().request_tags = vec!["tag:server".into()];
        assert!(matches!(
            register(&mut s, 1, &req, now),
            RegisterOutcome::Refused(_)
        ));
        assert!(s.preauth_keys().all(|k| !k.used));
        assert_eq!(s.node_count(), 0);

        join(&mut s, 1, 1, &single);
        assert!(s.preauth_keys().all(|k| k.used));
        let again = register(&mut s, 2, &request(2, "m2", Some(&single)), now);
        assert_eq!(
            again,
            RegisterOutcome::Refused("authkey already used".into())
        );

        let reusable = key(&mut s, Some(bob), true, &[]);
        join(&mut s, 3, 3, &reusable);
        join(&mut s, 4, 4, &reusable);
        assert_eq!(s.node_count(), 3);
    }

    #[test]
    fn a_machine_that_registers_for_another_owner_gets_another_node() {
        let mut s = State::for_tests(false);
        let alice = user(&mut s, "alice");
        let bob = user(&mut s, "bob");
        let ka = key(&mut s, Some(alice), true, &[]);
        let kb = key(&mut s, Some(bob), true, &[]);
        let first = join(&mut s, 1, 1, &ka);
        // Same machine, same owner, new node key: the same node.
        assert_eq!(join(&mut s, 1, 2, &ka), first);
        // Same machine, another owner: a node of its own; alice's stays hers.
        let second = join(&mut s, 1, 3, &kb);
        assert_ne!(second, first);
        assert_eq!(s.node(first).unwrap().user, Some(alice));
        assert_eq!(s.node(second).unwrap().user, Some(bob));
        assert_ne!(s.node(first).unwrap().ipv4, s.node(second).unwrap().ipv4);
    }

    #[test]
    fn the_same_node_key_authorized_for_another_owner_moves_the_node_to_it() {
        let mut s = State::for_tests(true);
        let alice = user(&mut s, "alice");
        let bob = user(&mut s, "bob");
        let ka = key(&mut s, Some(alice), true, &[]);
        let kb = key(&mut s, Some(bob), false, &[]);
        let node = join(&mut s, 1, 1, &ka);
        s.approve_node(&mut Effects::default(), node).unwrap();
        assert!(s.node(node).unwrap().approved);

        // Again with alice's key: hers still, approved still.
        assert_eq!(join(&mut s, 1, 1, &ka), node);
        assert!(s.node(node).unwrap().approved);

        // With bob's key: bob's now, and waiting for approval again.
        assert_eq!(join(&mut s, 1, 1, &kb), node);
        let moved = s.node(node).unwrap();
        assert_eq!(moved.user, Some(bob));
        assert!(moved.tags.is_empty());
        assert!(!moved.approved, "a new owner is a new identity to approve");
    }

    #[test]
    fn a_logout_expires_the_node_and_deletes_an_ephemeral_one() {
        let mut s = State::for_tests(false);
        let alice = user(&mut s, "alice");
        let k = key(&mut s, Some(alice), true, &[]);
        let ek = ephemeral_key(&mut s, alice);
        let kept = join(&mut s, 1, 1, &k);
        let gone = join(&mut s, 2, 2, &ek);
        assert!(s.node(gone).unwrap().ephemeral);
        let now = OffsetDateTime::now_utc();
        let logout = |n: u8| RegisterRequest {
            expiry: Some(now - Duration::seconds(1)),
            ..request(n, "", None)
        };

        assert_eq!(
            register(&mut s, 1, &logout(1), now),
            RegisterOutcome::KeyExpired
        );
        assert!(s.node(kept).unwrap().is_expired(now));
        // Without new credentials, an expired node stays logged out.
        let back = register(&mut s, 1, &request(1, "m1", None), now);
        assert_eq!(back, RegisterOutcome::KeyExpired);

        let mut fx = Effects::default();
        let out = s.register(&mut fx, machine(2), &logout(2), now).unwrap();
        assert_eq!(out, RegisterOutcome::KeyExpired);
        assert!(s.node(gone).is_none(), "an ephemeral node goes at logout");
        assert!(
            fx.ops
                .iter()
                .any(|op| matches!(op, DbOp::DeleteNode(id) if *id == gone)),
            "{:?}",
            fx.ops
        );
    }
}
