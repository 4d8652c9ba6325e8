//! Who may see and reach whom.
//!
//! Two modes. Without a policy (no `policy.path` in file mode, no row in database mode) every
//! node sees and reaches every other node, as in headscale and Tailscale's default policy.
//! With a policy, a [`Compiled`] snapshot of it answers: the engine resolved it against the
//! tailnet as it was at the end of the last writer batch (see `State::finish_batch`).
//!
//! Routes: the engine elects its own primary router per subnet (the lowest node id), but it
//! does not know who is online, so the tailnet's HA election (`State::primaries`) stays the
//! authority for *which* router carries a prefix. The engine decides only *whether* a viewer
//! may use a prefix at all: it put the prefix into the AllowedIPs of some peer that viewer
//! sees. Whether a viewer may use a route depends on the rules, the viewer and the route,
//! never on which router serves it, so asking "did the engine give this viewer the prefix
//! through anyone" and then attaching it to the router the server elected keeps both in
//! agreement while failover follows presence.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use fixedbitset::FixedBitSet;
use ipnet::IpNet;
use oxiscale_policy::{Compiled, Policy};
use oxiscale_tailcfg::{FilterRule, SshPolicy};

use super::model::{Node, NodeId};

/// What a node may know about one of its peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerRoutes {
    /// Addresses and routed prefixes the viewer sends to this peer.
    pub allowed_ips: Vec<IpNet>,
    /// Subnet routes (not exit routes) this peer is the primary router for.
    pub primary_routes: Vec<IpNet>,
}

#[derive(Debug, Clone, Default)]
pub enum Access {
    /// No policy: everyone sees and reaches everyone (documented in the README).
    #[default]
    AllowAll,
    /// A policy in force, compiled against the current tailnet.
    Policy(Arc<PolicyAccess>),
}

/// A policy and its compiled form for one tailnet snapshot.
pub struct PolicyAccess {
    policy: Arc<Policy>,
    compiled: Arc<Compiled>,
    /// Whether any node serves a route at all; without routes nothing below is needed.
    any_routes: bool,
    /// Per viewer, the routed prefixes it may use, filled on first use (a compiled snapshot
    /// is immutable, so the cache never goes stale; a recompile builds a new one).
    usable: Mutex<HashMap<NodeId, Arc<UsableRoutes>>>,
    /// Whether the compiled policy lets every node see every other, found on first use.
    everyone_sees_everyone: OnceLock<bool>,
}

impl std::fmt::Debug for PolicyAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyAccess")
            .field("any_routes", &self.any_routes)
            .finish_non_exhaustive()
    }
}

impl PolicyAccess {
    pub fn new(policy: Arc<Policy>, compiled: Compiled, any_routes: bool) -> PolicyAccess {
        PolicyAccess {
            policy,
            compiled: Arc::new(compiled),
            any_routes,
            usable: Mutex::new(HashMap::new()),
            everyone_sees_everyone: OnceLock::new(),
        }
    }

    pub fn policy(&self) -> &Arc<Policy> {
        &self.policy
    }

    pub fn compiled(&self) -> &Arc<Compiled> {
        &self.compiled
    }

    fn everyone_sees_everyone(&self) -> bool {
        *self
            .everyone_sees_everyone
            .get_or_init(|| self.compiled.everyone_sees_everyone())
    }

    /// Prefixes `viewer` may send through some router: those the engine put in the
    /// AllowedIPs of any peer it shows the viewer, plus the viewer's own subnet routes (a
    /// co-router must learn who the primary for its prefix is).
    fn usable_routes(&self, viewer: &Node) -> Arc<UsableRoutes> {
        if !self.any_routes {
            return Arc::default();
        }
        let mut cache = self.usable.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = cache.get(&viewer.id) {
            return v.clone();
        }
        let mut routes: Vec<IpNet> = self
            .compiled
            .peers(viewer.id)
            .into_iter()
            .flat_map(|p| p.allowed_ips)
            .filter(|r| r.prefix_len() < r.max_prefix_len())
            .chain(
                viewer
                    .served_routes()
                    .into_iter()
                    .filter(|r| !is_exit_route(r)),
            )
            .collect();
        routes.sort();
        routes.dedup();
        let via = routes
            .iter()
            .filter_map(|r| Some((*r, self.compiled.via_router(viewer.id, r)?)))
            .collect();
        let routes = Arc::new(UsableRoutes { routes, via });
        cache.insert(viewer.id, routes.clone());
        routes
    }
}

/// The routed prefixes a viewer may use, and those a `via` grant sends through a named
/// router rather than the elected primary.
#[derive(Debug, Default)]
struct UsableRoutes {
    routes: Vec<IpNet>,
    via: Vec<(IpNet, NodeId)>,
}

impl UsableRoutes {
    fn contains(&self, r: &IpNet) -> bool {
        self.routes.contains(r)
    }

    /// Whether `peer` carries `r` for this viewer: the `via` router when there is one,
    /// otherwise the primary (`is_primary`).
    fn carried_by(&self, r: &IpNet, peer: NodeId, is_primary: bool) -> bool {
        match self.via.iter().find(|(p, _)| p == r) {
            Some((_, router)) => *router == peer,
            None => is_primary,
        }
    }
}

/// The node attribute that keeps a node's IPv4 address from the tailnet.
const DISABLE_IPV4: &str = "disable-ipv4";

const EXIT_V4: &str = "0.0.0.0/0";
const EXIT_V6: &str = "::/0";

pub fn is_exit_route(route: &IpNet) -> bool {
    route.prefix_len() == 0
}

fn exit_routes() -> [IpNet; 2] {
    [
        EXIT_V4.parse().expect("valid literal"),
        EXIT_V6.parse().expect("valid literal"),
    ]
}

impl Access {
    pub fn policy(&self) -> Option<&Arc<Policy>> {
        match self {
            Access::AllowAll => None,
            Access::Policy(p) => Some(p.policy()),
        }
    }

    pub fn compiled(&self) -> Option<&Arc<Compiled>> {
        match self {
            Access::AllowAll => None,
            Access::Policy(p) => Some(p.compiled()),
        }
    }

    /// Whether every node in both snapshots sees the same peers among them, with the same
    /// routes, under `other` as under this: both compile the same adjacency among the nodes
    /// in both, or under both everyone sees everyone. A node that joined or left in between
    /// is not judged: the change about it says who sees it (each stream checks whether it
    /// may). Conservative: with routes in the tailnet (whose use a policy decides per
    /// viewer) it says no.
    pub fn same_peers_as(&self, other: &Access) -> bool {
        let routes = |a: &Access| matches!(a, Access::Policy(p) if p.any_routes);
        if routes(self) || routes(other) {
            return false;
        }
        if self.everyone_sees_everyone() && other.everyone_sees_everyone() {
            return true;
        }
        match (self, other) {
            (Access::Policy(a), Access::Policy(b)) => a.compiled.same_peers_as(&b.compiled),
            _ => false,
        }
    }

    /// Whether every node that is in both and did not change itself gets the same packet
    /// filter, SSH policy and capabilities under `other` as under this (see
    /// `Compiled::same_filters_as`).
    pub fn same_filters_as(&self, other: &Access) -> bool {
        match (self, other) {
            (Access::AllowAll, Access::AllowAll) => true,
            (Access::Policy(a), Access::Policy(b)) => a.compiled.same_filters_as(&b.compiled),
            _ => false,
        }
    }

    /// Whether every node sees every other node. The compiled snapshot always covers
    /// every node of the tailnet (the writer recompiles before it releases a batch).
    pub fn everyone_sees_everyone(&self) -> bool {
        match self {
            Access::AllowAll => true,
            Access::Policy(p) => p.everyone_sees_everyone(),
        }
    }

    pub fn can_see(&self, viewer: &Node, peer: &Node) -> bool {
        match self {
            Access::AllowAll => true,
            Access::Policy(p) => p.compiled.can_see(viewer.id, peer.id),
        }
    }

    /// The ids among `ids` that `viewer` can see: `can_see(viewer, ·)` for all of them at
    /// once.
    pub fn seen_by(&self, viewer: &Node, ids: &FixedBitSet) -> FixedBitSet {
        match self {
            Access::AllowAll => ids.clone(),
            Access::Policy(p) => {
                let mut seen = FixedBitSet::with_capacity(ids.len());
                for id in p.compiled.seen_by(viewer.id) {
                    seen.grow_and_insert(id as usize);
                }
                seen.intersect_with(ids);
                seen
            }
        }
    }

    /// The node's packet filter. Under a policy an unknown node gets no rules (drop all).
    pub fn packet_filter(&self, node: &Node) -> Vec<FilterRule> {
        match self {
            Access::AllowAll => FilterRule::allow_all(),
            Access::Policy(p) => p.compiled.packet_filter(node.id),
        }
    }

    /// Under a policy the node always gets an SSH policy, empty when the policy has no
    /// `ssh` section: `None` on the wire means "unchanged", so removing the last SSH rule
    /// must be said with an empty list.
    pub fn ssh_policy(&self, node: &Node) -> Option<SshPolicy> {
        match self {
            Access::AllowAll => None,
            Access::Policy(p) => Some(p.compiled.ssh_policy(node.id).unwrap_or_default()),
        }
    }

    /// Whether the policy's `disable-ipv4` covers the node.
    pub fn withholds_ipv4(&self, node: &Node) -> bool {
        match self {
            Access::AllowAll => false,
            Access::Policy(p) => p.compiled.has_node_attr(node.id, DISABLE_IPV4),
        }
    }

    /// `nodeAttrs` capabilities that apply to the node (none without a policy).
    pub fn node_attrs(&self, node: &Node) -> Vec<String> {
        match self {
            Access::AllowAll => Vec::new(),
            Access::Policy(p) => p.compiled.node_attrs(node.id),
        }
    }

    /// The routes of `peer` as `viewer` is told about them. `primary` are the subnet routes
    /// `peer` is primary for (decided by the tailnet, which knows who is online).
    pub fn peer_routes(&self, viewer: &Node, peer: &Node, primary: &[IpNet]) -> PeerRoutes {
        let served = peer.served_routes();
        let serves_exit = served.iter().any(is_exit_route);
        // A node's view of itself, and everything without a policy: all it serves.
        let usable = match self {
            Access::Policy(p) if viewer.id != peer.id => Some(p.usable_routes(viewer)),
            _ => None,
        };
        let may_use = |r: &IpNet| usable.as_ref().is_none_or(|u| u.contains(r));
        let primary_routes: Vec<IpNet> = match &usable {
            None => primary.to_vec(),
            // The elected primary carries a prefix unless a `via` grant names another router.
            Some(u) => served
                .iter()
                .filter(|r| !is_exit_route(r) && u.contains(r))
                .filter(|r| u.carried_by(r, peer.id, primary.contains(r)))
                .copied()
                .collect(),
        };
        // A viewer without IPv4 (`disable-ipv4`) is told its peers' IPv6 addresses only.
        let mut allowed_ips: Vec<IpNet> = peer
            .tailnet_addresses()
            .into_iter()
            .filter(|a| !viewer.ipv4_withheld || a.addr().is_ipv6())
            .collect();
        allowed_ips.extend(primary_routes.iter().copied());
        if serves_exit {
            allowed_ips.extend(exit_routes().into_iter().filter(may_use));
        }
        PeerRoutes {
            allowed_ips,
            primary_routes,
        }
    }
}
