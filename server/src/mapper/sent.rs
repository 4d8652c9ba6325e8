//! What a session has sent its node, to compute deltas against. A leaf: full maps
//! (`mapper::build`) fill it in, deltas (`mapper::epoch`, `mapper::delta`) read and update it.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};

use fixedbitset::FixedBitSet;
use oxiscale_tailcfg::{FilterRule, SshPolicy};

use crate::tailnet::access::PeerRoutes;
use crate::tailnet::model::NodeId;

/// What a session remembers having sent, to compute deltas against: which peers (a bitset
/// over node ids: 1.25 KB per session at 10,000 nodes) and, for the few peers that route,
/// the routes they were sent with.
#[derive(Debug, Default)]
pub struct Sent {
    peers: FixedBitSet,
    routes: HashMap<NodeId, PeerRoutes>,
    /// The `CapMap` of the node's own `Node` as last sent.
    self_caps: Option<CapMap>,
    /// [`filters_digest`] of the packet filter and SSH policy last sent.
    filters: Option<u64>,
}

/// A digest of a node's packet filter and SSH policy, so that a session remembers what it
/// sent in 8 bytes (a filter can list thousands of source addresses) and sends filters only
/// when they changed: under a policy where not everyone sees everyone, a join changes the
/// filters of the nodes it may reach and leaves everyone else's as they were. SipHash over
/// content only the admin's policy and the server's addresses shape: two different filters
/// with one digest (which would leave a node its old filter) is a 2⁻⁶⁴ chance per change.
pub fn filters_digest(packet_filter: &[FilterRule], ssh_policy: &Option<SshPolicy>) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    (packet_filter, ssh_policy).hash(&mut h);
    h.finish()
}

type CapMap = BTreeMap<String, Option<Vec<serde_json::Value>>>;

impl Sent {
    /// Room for ids up to `highest` without growing.
    pub fn for_ids_up_to(highest: NodeId) -> Sent {
        Sent {
            peers: FixedBitSet::with_capacity(highest as usize + 1),
            ..Sent::default()
        }
    }

    pub fn insert(&mut self, id: NodeId, routes: Option<PeerRoutes>) {
        self.peers.grow_and_insert(id as usize);
        match routes {
            Some(r) => {
                self.routes.insert(id, r);
            }
            // Nearly always empty: skip hashing for the thousands of inserts of a full map.
            None if self.routes.is_empty() => {}
            None => {
                self.routes.remove(&id);
            }
        }
    }

    pub fn contains(&self, id: NodeId) -> bool {
        self.peers.contains(id as usize)
    }

    pub fn set_self_caps(&mut self, caps: CapMap) {
        self.self_caps = Some(caps);
    }

    pub fn has_self_caps(&self, caps: &CapMap) -> bool {
        self.self_caps.as_ref() == Some(caps)
    }

    pub fn set_filters(&mut self, digest: u64) {
        self.filters = Some(digest);
    }

    pub fn has_filters(&self, digest: u64) -> bool {
        self.filters == Some(digest)
    }

    /// Forgets `id`; returns whether it had been sent.
    pub fn remove(&mut self, id: NodeId) -> bool {
        self.routes.remove(&id);
        let was = self.contains(id);
        if was {
            self.peers.set(id as usize, false);
        }
        was
    }

    /// Whether `id` was sent with exactly these routes.
    pub(super) fn sent_with(&self, id: NodeId, routes: &Option<PeerRoutes>) -> bool {
        self.contains(id) && self.routes.get(&id) == routes.as_ref()
    }

    pub(super) fn ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.peers.ones().map(|i| i as NodeId)
    }

    /// The peers sent with routes of their own.
    pub(super) fn routed(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.routes.keys().copied()
    }

    pub fn len(&self) -> usize {
        self.peers.count_ones(..)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sent_remembers_ids_and_only_routers_routes() {
        let mut sent = Sent::default();
        sent.insert(3, None);
        sent.insert(700, None);
        let routes = PeerRoutes {
            allowed_ips: vec!["10.0.0.0/24".parse().unwrap()],
            primary_routes: vec![],
        };
        sent.insert(9, Some(routes.clone()));
        assert!(sent.contains(3) && sent.contains(700) && sent.contains(9) && !sent.contains(4));
        assert_eq!(sent.len(), 3);
        assert!(sent.sent_with(9, &Some(routes)));
        assert!(
            !sent.sent_with(9, &None),
            "a router that stops routing counts as changed"
        );
        assert!(sent.sent_with(3, &None));
        assert!(sent.remove(700) && !sent.remove(700));
        assert_eq!(sent.ids().collect::<Vec<_>>(), vec![3, 9]);
    }
}
