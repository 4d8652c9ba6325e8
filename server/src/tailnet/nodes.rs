//! The tailnet's nodes by id, with a stamp per block of ids that says when any of them
//! last changed.
//!
//! Map builders cache what they make of a block (the mapper's shared peer chunks): the
//! stamp tells them in O(1) whether a cached rendering is still current, instead of
//! comparing every member. Every change to the table goes through its methods, which is
//! what makes the stamps trustworthy; reads see it as the map it wraps.

use std::collections::BTreeMap;
use std::ops::{Deref, Range};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use fixedbitset::FixedBitSet;
use time::OffsetDateTime;

use super::model::{Node, NodeId};

/// Node ids per block. ~128 peers are ~75 KB of JSON: enough for zstd to find the
/// repetition between peers, small enough that the per-viewer part of a map stays cheap. A
/// build may set `OXISCALE_MAP_CHUNK_IDS` (e.g. 1) so that tests with a handful of real
/// clients get maps made mostly of shared frames.
pub const BLOCK_IDS: NodeId = match option_env!("OXISCALE_MAP_CHUNK_IDS") {
    Some(n) => match NodeId::from_str_radix(n, 10) {
        Ok(n) if n > 0 => n,
        _ => panic!("OXISCALE_MAP_CHUNK_IDS must be a whole number of at least 1"),
    },
    None => 128,
};

pub fn block_of(id: NodeId) -> NodeId {
    id / BLOCK_IDS
}

/// The ids of block `block`.
pub fn block_ids(block: NodeId) -> Range<NodeId> {
    block.saturating_mul(BLOCK_IDS)..(block + 1).saturating_mul(BLOCK_IDS)
}

/// Stamps come from one counter for the whole process, so no two contents of a block ever
/// share one, not even across a reload of the tailnet (a new table) after a failed commit.
static NEXT_STAMP: AtomicU64 = AtomicU64::new(1);

fn fresh_stamp() -> u64 {
    NEXT_STAMP.fetch_add(1, Ordering::Relaxed)
}

/// Nodes by id. Derefs to the map for reading; changes go through the methods below.
#[derive(Default)]
pub struct NodeTable {
    nodes: BTreeMap<NodeId, Arc<Node>>,
    /// Every block that holds a node, with the stamp of its current members.
    stamps: BTreeMap<NodeId, u64>,
    /// The ids of `nodes`, as a set to intersect with.
    ids: FixedBitSet,
    /// Made on the first read after a change and shared by every reader of this version:
    /// a map session asks for it per stream when a policy change makes each one recheck
    /// its peers.
    derived: OnceLock<Derived>,
}

/// What `NodeTable` knows about its nodes without looking at each one.
#[derive(Debug, Default)]
struct Derived {
    /// Nodes with a key expiry, by expiry.
    by_expiry: Vec<(OffsetDateTime, NodeId)>,
    /// Nodes that serve approved routes.
    routers: Vec<NodeId>,
    /// Nodes an administrator has yet to approve (`Node::approved`): few or none.
    unapproved: Vec<NodeId>,
}

impl Derived {
    fn of(nodes: &BTreeMap<NodeId, Arc<Node>>) -> Derived {
        let mut by_expiry: Vec<_> = nodes
            .values()
            .filter_map(|n| Some((n.expiry?, n.id)))
            .collect();
        by_expiry.sort_unstable();
        let routers = nodes
            .values()
            .filter(|n| n.serves_routes())
            .map(|n| n.id)
            .collect();
        let unapproved = nodes
            .values()
            .filter(|n| !n.approved)
            .map(|n| n.id)
            .collect();
        Derived {
            by_expiry,
            routers,
            unapproved,
        }
    }
}

impl Deref for NodeTable {
    type Target = BTreeMap<NodeId, Arc<Node>>;

    fn deref(&self) -> &Self::Target {
        &self.nodes
    }
}

impl NodeTable {
    pub fn insert(&mut self, node: Arc<Node>) -> Option<Arc<Node>> {
        touch(&mut self.stamps, node.id);
        self.ids.grow_and_insert(node.id as usize);
        self.derived.take();
        self.nodes.insert(node.id, node)
    }

    pub fn remove(&mut self, id: NodeId) -> Option<Arc<Node>> {
        let removed = self.nodes.remove(&id)?;
        self.ids.set(id as usize, false);
        self.derived.take();
        let block = block_of(id);
        if self.nodes.range(block_ids(block)).next().is_some() {
            touch(&mut self.stamps, id);
        } else {
            self.stamps.remove(&block);
        }
        Some(removed)
    }

    /// The node to change in place (the caller swaps or copies on write).
    pub fn get_mut(&mut self, id: NodeId) -> Option<&mut Arc<Node>> {
        let slot = self.nodes.get_mut(&id)?;
        touch(&mut self.stamps, id);
        self.derived.take();
        Some(slot)
    }

    /// Every node, to change in place.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&NodeId, &mut Arc<Node>)> {
        for stamp in self.stamps.values_mut() {
            *stamp = fresh_stamp();
        }
        self.derived.take();
        self.nodes.iter_mut()
    }

    /// The ids of every node.
    pub fn ids(&self) -> &FixedBitSet {
        &self.ids
    }

    /// The nodes whose key has expired at `now`.
    pub fn expired_at(&self, now: OffsetDateTime) -> impl Iterator<Item = NodeId> + '_ {
        let by_expiry = &self.derived().by_expiry;
        let end = by_expiry.partition_point(|(expiry, _)| *expiry <= now);
        by_expiry[..end].iter().map(|(_, id)| *id)
    }

    /// The nodes that serve approved routes.
    pub fn routers(&self) -> &[NodeId] {
        &self.derived().routers
    }

    /// The nodes waiting for an administrator's approval, in id order.
    pub fn unapproved(&self) -> &[NodeId] {
        &self.derived().unapproved
    }

    fn derived(&self) -> &Derived {
        self.derived.get_or_init(|| Derived::of(&self.nodes))
    }

    /// The blocks that hold nodes, in id order, each with the stamp of its members.
    pub fn blocks(&self) -> impl Iterator<Item = (NodeId, u64)> + '_ {
        self.stamps.iter().map(|(block, stamp)| (*block, *stamp))
    }

    /// The nodes of block `block`, in id order.
    pub fn block(&self, block: NodeId) -> impl Iterator<Item = &Arc<Node>> + Clone {
        self.nodes.range(block_ids(block)).map(|(_, n)| n)
    }
}

/// Gives the block of node `id` a fresh stamp: its members changed. A function of the
/// stamps alone, so that `get_mut` can stamp while it lends out a node.
fn touch(stamps: &mut BTreeMap<NodeId, u64>, id: NodeId) {
    stamps.insert(block_of(id), fresh_stamp());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: NodeId) -> Arc<Node> {
        Arc::new(Node::sample(id))
    }

    fn stamp(t: &NodeTable, block: NodeId) -> Option<u64> {
        t.blocks().find(|(b, _)| *b == block).map(|(_, s)| s)
    }

    #[test]
    fn every_change_to_a_block_gives_it_a_new_stamp_and_leaves_the_others_alone() {
        let mut t = NodeTable::default();
        let (a, b) = (block_ids(1).start, block_ids(2).start);
        t.insert(node(a));
        t.insert(node(b));
        let mut seen = vec![stamp(&t, 1).unwrap()];
        let sb = stamp(&t, 2).unwrap();
        let mut changed_block_1 = |t: &NodeTable| {
            let now = stamp(t, 1).unwrap();
            assert!(!seen.contains(&now), "block 1 kept an old stamp");
            seen.push(now);
            assert_eq!(stamp(t, 2), Some(sb), "block 2 was not touched");
        };

        t.get_mut(a).unwrap();
        changed_block_1(&t);
        t.insert(node(a));
        changed_block_1(&t);
        let last = block_ids(1).end - 1;
        t.insert(node(last));
        changed_block_1(&t);
        if last != a {
            t.remove(last);
            changed_block_1(&t);
        }

        for _ in t.iter_mut() {}
        assert!(!seen.contains(&stamp(&t, 1).unwrap()));
        assert_ne!(stamp(&t, 2), Some(sb));
    }

    #[test]
    fn ids_expiries_routers_and_approvals_follow_every_change() {
        let now = OffsetDateTime::now_utc();
        let expired: fn(&NodeTable, OffsetDateTime) -> Vec<NodeId> =
            |t, now| t.expired_at(now).collect();
        let mut t = NodeTable::default();
        for id in [1, 2, 3] {
            t.insert(node(id));
        }
        assert_eq!(t.ids().ones().collect::<Vec<_>>(), vec![1, 2, 3]);
        assert!(expired(&t, now).is_empty() && t.routers().is_empty());
        assert!(t.unapproved().is_empty());

        // Changed in place, after a read made the derived index.
        Arc::make_mut(t.get_mut(2).unwrap()).expiry = Some(now - time::Duration::hours(1));
        Arc::make_mut(t.get_mut(3).unwrap()).expiry = Some(now + time::Duration::hours(1));
        let route: ipnet::IpNet = "10.0.0.0/24".parse().unwrap();
        let router = Arc::make_mut(t.get_mut(1).unwrap());
        router.hostinfo.routable_ips = vec![route];
        router.approved_routes = vec![route];
        assert_eq!(expired(&t, now), vec![2]);
        assert_eq!(expired(&t, now + time::Duration::hours(2)), vec![2, 3]);
        assert_eq!(t.routers(), &[1]);
        Arc::make_mut(t.get_mut(3).unwrap()).approved = false;
        t.insert(Arc::new(Node {
            approved: false,
            ..Node::sample(4)
        }));
        assert_eq!(t.unapproved(), &[3, 4]);

        for (_, n) in t.iter_mut() {
            Arc::make_mut(n).expiry = None;
        }
        assert!(expired(&t, now + time::Duration::hours(2)).is_empty());
        Arc::make_mut(t.get_mut(3).unwrap()).approved = true;
        assert_eq!(t.unapproved(), &[4]);
        t.remove(1);
        t.remove(4);
        assert_eq!(t.ids().ones().collect::<Vec<_>>(), vec![2, 3]);
        assert!(t.routers().is_empty() && t.unapproved().is_empty());
    }

    #[test]
    fn a_block_emptied_is_no_longer_listed_and_a_missing_node_changes_nothing() {
        let mut t = NodeTable::default();
        let (a, b) = (block_ids(0).end - 1, block_ids(1).start);
        t.insert(node(a));
        t.insert(node(b));
        let before: Vec<_> = t.blocks().collect();
        assert!(t.get_mut(block_ids(7).start).is_none());
        assert!(t.remove(block_ids(7).start).is_none());
        assert_eq!(t.blocks().collect::<Vec<_>>(), before);

        t.remove(a);
        assert_eq!(t.blocks().map(|(b, _)| b).collect::<Vec<_>>(), vec![1]);
        assert_eq!(t.block(1).map(|n| n.id).collect::<Vec<_>>(), vec![b]);
        assert_eq!(t.block(0).count(), 0);
    }

    #[test]
    fn tables_made_one_after_the_other_never_share_a_stamp() {
        let mut first = NodeTable::default();
        first.insert(node(1));
        let mut second = NodeTable::default();
        second.insert(node(1));
        assert_ne!(stamp(&first, block_of(1)), stamp(&second, block_of(1)));
    }
}
