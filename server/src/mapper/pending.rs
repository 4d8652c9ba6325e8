//! What a session has yet to tell its node: changes folded into one record, newest state
//! winning, so that its size is bounded by the tailnet and not by how many changes arrive.
//! A leaf: it knows the change stream and nothing else of the mapper.

use std::collections::{BTreeMap, BTreeSet};

use oxiscale_tailcfg::PeerChange;

use crate::tailnet::Change;
use crate::tailnet::model::NodeId;

/// What a session has yet to tell its node.
#[derive(Debug, Default)]
pub struct Pending {
    pub self_changed: bool,
    /// Visibility or filters may have changed: diff the whole peer set.
    pub recompute: bool,
    /// Only the filters may have changed: send them, the peers stay.
    pub filters: bool,
    pub dns: bool,
    pub derp: bool,
    pub peers_changed: BTreeSet<NodeId>,
    pub patches: BTreeMap<NodeId, PeerChange>,
    pub removed: BTreeSet<NodeId>,
}

impl Pending {
    pub fn is_empty(&self) -> bool {
        self.holds_only_patches() && self.patches.is_empty()
    }

    /// Nothing but light patches (possibly none).
    pub fn holds_only_patches(&self) -> bool {
        !self.self_changed
            && !self.recompute
            && !self.filters
            && !self.dns
            && !self.derp
            && self.peers_changed.is_empty()
            && self.removed.is_empty()
    }

    /// Whether node `id` is among the changed, patched or removed peers.
    pub fn mentions(&self, id: NodeId) -> bool {
        self.peers_changed.contains(&id)
            || self.patches.contains_key(&id)
            || self.removed.contains(&id)
    }

    /// Folds changes in, in order, from the point of view of node `me`. Returns whether
    /// any of them recorded anything.
    pub fn merge_all(&mut self, me: NodeId, changes: &[Change]) -> bool {
        changes
            .iter()
            .fold(false, |recorded, c| self.merge(me, c) | recorded)
    }

    /// Folds one change in, from the point of view of node `me`. Returns whether it
    /// recorded anything (a patch to a peer that will be resent whole, or a light change
    /// to `me` itself, records nothing).
    pub fn merge(&mut self, me: NodeId, change: &Change) -> bool {
        match change {
            Change::NodeUpserted(id) if *id == me => {
                self.self_changed = true;
                // Our addresses, tags or routes decide what we may see.
                self.recompute = true;
            }
            Change::NodeUpserted(id) => {
                self.removed.remove(id);
                self.patches.remove(id);
                self.peers_changed.insert(*id);
            }
            Change::NodePatched(p) if p.node_id != me => {
                if self.peers_changed.contains(&p.node_id) {
                    return false;
                }
                merge_patch(
                    self.patches.entry(p.node_id).or_insert_with(|| PeerChange {
                        node_id: p.node_id,
                        ..Default::default()
                    }),
                    p,
                );
            }
            Change::NodePatched(_) => return false,
            Change::NodeOnline { id, .. } if *id == me => return false,
            Change::NodeOnline {
                id,
                online,
                last_seen,
            } => {
                if self.peers_changed.contains(id) {
                    return false;
                }
                let patch = self.patches.entry(*id).or_insert_with(|| PeerChange {
                    node_id: *id,
                    ..Default::default()
                });
                patch.online = Some(*online);
                patch.last_seen = if *online { None } else { *last_seen };
            }
            Change::NodeRemoved(id) if *id == me => self.self_changed = true,
            Change::NodeRemoved(id) => {
                self.peers_changed.remove(id);
                self.patches.remove(id);
                self.removed.insert(*id);
            }
            Change::Visibility => self.recompute = true,
            Change::Filters => self.filters = true,
            Change::DnsConfig => self.dns = true,
            Change::DerpMap => self.derp = true,
        }
        true
    }
}

fn merge_patch(into: &mut PeerChange, from: &PeerChange) {
    macro_rules! take {
        ($($f:ident),*) => { $( if from.$f.is_some() { into.$f = from.$f.clone(); } )* };
    }
    take!(
        derp_region,
        cap,
        endpoints,
        key,
        disco_key,
        online,
        last_seen,
        key_expiry
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::OffsetDateTime;

    #[test]
    fn pending_merges_to_the_newest_state() {
        let mut p = Pending::default();
        p.merge(
            1,
            &Change::NodePatched(PeerChange {
                node_id: 2,
                endpoints: Some(vec!["a:1".into()]),
                ..Default::default()
            }),
        );
        p.merge(
            1,
            &Change::NodePatched(PeerChange {
                node_id: 2,
                derp_region: Some(999),
                ..Default::default()
            }),
        );
        p.merge(
            1,
            &Change::NodePatched(PeerChange {
                node_id: 2,
                endpoints: Some(vec!["b:2".into()]),
                ..Default::default()
            }),
        );
        let patch = &p.patches[&2];
        assert_eq!(patch.endpoints.as_deref(), Some(&["b:2".to_string()][..]));
        assert_eq!(patch.derp_region, Some(999));

        // A full update supersedes patches; a removal supersedes both.
        p.merge(1, &Change::NodeUpserted(2));
        assert!(p.patches.is_empty() && p.peers_changed.contains(&2));
        p.merge(1, &Change::NodeRemoved(2));
        assert!(p.peers_changed.is_empty() && p.removed.contains(&2));

        // Changes to ourselves are about our own node.
        p.merge(1, &Change::NodeUpserted(1));
        assert!(p.self_changed && p.recompute);
    }

    #[test]
    fn online_changes_become_patches() {
        let mut p = Pending::default();
        p.merge(
            1,
            &Change::NodeOnline {
                id: 3,
                online: false,
                last_seen: Some(OffsetDateTime::UNIX_EPOCH),
            },
        );
        assert_eq!(p.patches[&3].online, Some(false));
        assert_eq!(p.patches[&3].last_seen, Some(OffsetDateTime::UNIX_EPOCH));
        p.merge(
            1,
            &Change::NodeOnline {
                id: 3,
                online: true,
                last_seen: Some(OffsetDateTime::UNIX_EPOCH),
            },
        );
        assert_eq!(p.patches[&3].online, Some(true));
        assert_eq!(p.patches[&3].last_seen, None);
    }
}
