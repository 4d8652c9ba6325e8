//! Map sessions: one per connected node's long poll.
//!
//! Changes are not queued as messages. Each session keeps a small *pending* record that
//! changes are merged into (newest state wins, its size bounded by the tailnet, not by how
//! many changes arrive), and a wake-up. The session task drains it when it can write, so a
//! slow client costs only its own task, and a burst of changes becomes one delta.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use fixedbitset::FixedBitSet;
use oxiscale_tailcfg::{MapResponse, PeerChange};
use time::OffsetDateTime;
use tokio::sync::Notify;

use super::MapConfig;
use super::build::{peer_view, render_peer, self_node, user_profiles, visible_views};
use crate::tailnet::access::PeerRoutes;
use crate::tailnet::model::NodeId;
use crate::tailnet::{Change, ChangeListener, State};

/// What a session has yet to tell its node.
#[derive(Debug, Default)]
pub struct Pending {
    pub self_changed: bool,
    /// Visibility or filters may have changed: diff the whole peer set.
    pub recompute: bool,
    pub dns: bool,
    pub derp: bool,
    pub peers_changed: BTreeSet<NodeId>,
    pub patches: BTreeMap<NodeId, PeerChange>,
    pub removed: BTreeSet<NodeId>,
}

impl Pending {
    pub fn is_empty(&self) -> bool {
        !self.self_changed
            && !self.recompute
            && !self.dns
            && !self.derp
            && self.peers_changed.is_empty()
            && self.patches.is_empty()
            && self.removed.is_empty()
    }

    /// Folds one change in, from the point of view of node `me`.
    pub fn merge(&mut self, me: NodeId, change: &Change) {
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
                if !self.peers_changed.contains(&p.node_id) {
                    merge_patch(
                        self.patches.entry(p.node_id).or_insert_with(|| PeerChange {
                            node_id: p.node_id,
                            ..Default::default()
                        }),
                        p,
                    );
                }
            }
            Change::NodePatched(_) => {}
            Change::NodeOnline { id, .. } if *id == me => {}
            Change::NodeOnline {
                id,
                online,
                last_seen,
            } => {
                if !self.peers_changed.contains(id) {
                    let patch = self.patches.entry(*id).or_insert_with(|| PeerChange {
                        node_id: *id,
                        ..Default::default()
                    });
                    patch.online = Some(*online);
                    patch.last_seen = if *online { None } else { *last_seen };
                }
            }
            Change::NodeRemoved(id) if *id == me => self.self_changed = true,
            Change::NodeRemoved(id) => {
                self.peers_changed.remove(id);
                self.patches.remove(id);
                self.removed.insert(*id);
            }
            Change::Visibility => self.recompute = true,
            Change::DnsConfig => self.dns = true,
            Change::DerpMap => self.derp = true,
        }
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

/// The outcome of draining a session's pending changes.
pub enum Delta {
    Send(Box<MapResponse>),
    Nothing,
    /// The node is gone: end the stream.
    End,
}

/// What a session remembers having sent, to compute deltas against: which peers (a bitset
/// over node ids: 1.25 KB per session at 10,000 nodes) and, for the few peers that route,
/// the routes they were sent with.
#[derive(Debug, Default)]
pub struct Sent {
    peers: FixedBitSet,
    routes: HashMap<NodeId, PeerRoutes>,
}

impl Sent {
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
    fn sent_with(&self, id: NodeId, routes: &Option<PeerRoutes>) -> bool {
        self.contains(id) && self.routes.get(&id) == routes.as_ref()
    }

    fn ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.peers.ones().map(|i| i as NodeId)
    }

    pub fn len(&self) -> usize {
        self.peers.count_ones(..)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Turns pending changes into one `MapResponse` for node `me`. Peers are rendered from
/// their shared JSON where possible, so this stays cheap under the read lock.
pub fn build_delta(
    state: &State,
    me: NodeId,
    pending: Pending,
    sent: &mut Sent,
    config: &MapConfig,
    now: OffsetDateTime,
) -> Delta {
    let Some(me_node) = state.node(me).cloned() else {
        return Delta::End;
    };
    let base_domain = &state.settings.base_domain;
    let mut resp = MapResponse::default();
    let mut changed: BTreeSet<NodeId> = pending.peers_changed;

    if pending.recompute {
        let mut visible = FixedBitSet::with_capacity(sent.peers.len());
        for view in visible_views(state, &me_node, now) {
            let id = view.node.id;
            visible.grow_and_insert(id as usize);
            if !sent.sent_with(id, &view.routes) {
                changed.insert(id);
            }
        }
        changed.extend(sent.ids().filter(|id| !visible.contains(*id as usize)));
        resp.packet_filter = Some(state.access().packet_filter(&me_node));
        resp.ssh_policy = state.access().ssh_policy(&me_node);
    }

    let mut changed_nodes = Vec::new();
    for id in changed {
        match state.node(id) {
            Some(peer) if state.is_visible(&me_node, peer, now) => {
                let view = peer_view(state, &me_node, peer);
                resp.peers_changed
                    .push(render_peer(base_domain, &view, now));
                sent.insert(id, view.routes);
                changed_nodes.push(peer.clone());
            }
            _ => {
                if sent.remove(id) {
                    resp.peers_removed.push(id);
                }
            }
        }
    }
    for id in pending.removed {
        if sent.remove(id) {
            resp.peers_removed.push(id);
        }
    }
    let fully_sent: BTreeSet<NodeId> = changed_nodes.iter().map(|n| n.id).collect();
    for (id, patch) in pending.patches {
        if sent.contains(id) && !fully_sent.contains(&id) {
            resp.peers_changed_patch.push(patch);
        }
    }
    if pending.self_changed {
        resp.node = Some(self_node(state, &me_node, now));
        changed_nodes.push(me_node.clone());
    }
    if pending.dns {
        resp.dns_config = Some(config.dns_config.clone());
    }
    if pending.derp {
        resp.derp_map = Some(config.derp_map.clone());
    }
    if !changed_nodes.is_empty() {
        resp.user_profiles = user_profiles(state, changed_nodes.iter().map(|n| n.as_ref()));
    }
    let says_something = resp.node.is_some()
        || !resp.peers_changed.is_empty()
        || !resp.peers_removed.is_empty()
        || !resp.peers_changed_patch.is_empty()
        || resp.packet_filter.is_some()
        || resp.dns_config.is_some()
        || resp.derp_map.is_some();
    if says_something {
        resp.control_time = Some(now);
        Delta::Send(Box::new(resp))
    } else {
        Delta::Nothing
    }
}

/// A connected stream's mailbox.
pub struct SessionSlot {
    pub node: NodeId,
    pub generation: u64,
    pending: Mutex<Pending>,
    wake: Notify,
    closed: AtomicBool,
    /// The stream has not taken its full map's snapshot yet: changes are not recorded,
    /// the snapshot will include them. Without this, every stream waiting for its first
    /// map in a reconnect storm collected a patch for each peer that came back online:
    /// O(N²) memory (3+ GiB at 5,000 nodes).
    awaiting_snapshot: AtomicBool,
}

impl SessionSlot {
    pub fn take(&self) -> Pending {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Waits until there is something to send or the session was replaced.
    pub async fn woken(&self) {
        self.wake.notified().await
    }

    /// Call right before taking the full map's snapshot: a change announced after this is
    /// recorded (and may be in the snapshot too, which the first delta tolerates); one
    /// announced before is already applied to the state the snapshot reads.
    pub fn start_recording(&self) {
        self.awaiting_snapshot.store(false, Ordering::Release);
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    fn offer(&self, changes: &[Change]) {
        if self.awaiting_snapshot.load(Ordering::Acquire) {
            return;
        }
        let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        for c in changes {
            p.merge(self.node, c);
        }
        if !p.is_empty() {
            drop(p);
            self.wake.notify_one();
        }
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.wake.notify_one();
    }
}

/// Every open map stream, by node.
#[derive(Default)]
pub struct Sessions {
    slots: Mutex<HashMap<NodeId, Arc<SessionSlot>>>,
    generation: AtomicU64,
}

impl Sessions {
    /// Registers a new stream for `node`; an older stream of the same node is closed.
    pub fn attach(&self, node: NodeId) -> Arc<SessionSlot> {
        let slot = Arc::new(SessionSlot {
            node,
            generation: self.generation.fetch_add(1, Ordering::Relaxed) + 1,
            pending: Mutex::new(Pending::default()),
            wake: Notify::new(),
            closed: AtomicBool::new(false),
            awaiting_snapshot: AtomicBool::new(true),
        });
        if let Some(old) = self.lock().insert(node, slot.clone()) {
            old.close();
        }
        slot
    }

    /// Removes the stream if it is still the node's current one; returns whether it was.
    pub fn detach(&self, slot: &SessionSlot) -> bool {
        let mut slots = self.lock();
        match slots.get(&slot.node) {
            Some(current) if current.generation == slot.generation => {
                slots.remove(&slot.node);
                true
            }
            _ => false,
        }
    }

    pub fn is_connected(&self, node: NodeId) -> bool {
        self.lock().contains_key(&node)
    }

    pub fn count(&self) -> usize {
        self.lock().len()
    }

    /// Ends the stream of a node (deleted, expired, logged out).
    pub fn close(&self, node: NodeId) {
        if let Some(slot) = self.lock().remove(&node) {
            slot.close();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<NodeId, Arc<SessionSlot>>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl ChangeListener for Sessions {
    fn on_changes(&self, changes: &[Change]) {
        // Clone the slots out so the registry lock is not held while merging.
        let slots: Vec<Arc<SessionSlot>> = self.lock().values().cloned().collect();
        for slot in slots {
            slot.offer(changes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn changes_before_the_snapshot_are_not_recorded() {
        let sessions = Sessions::default();
        let slot = sessions.attach(7);
        sessions.on_changes(&[Change::NodeUpserted(8)]);
        assert!(
            slot.take().is_empty(),
            "the snapshot will read node 8 as it is"
        );
        slot.start_recording();
        sessions.on_changes(&[Change::NodeUpserted(9)]);
        assert!(slot.take().peers_changed.contains(&9));
    }

    #[test]
    fn a_new_stream_replaces_the_old_one() {
        let sessions = Sessions::default();
        let first = sessions.attach(7);
        let second = sessions.attach(7);
        assert!(first.is_closed() && !second.is_closed());
        assert!(
            !sessions.detach(&first),
            "the old stream no longer owns the slot"
        );
        assert!(sessions.is_connected(7));
        assert!(sessions.detach(&second));
        assert!(!sessions.is_connected(7));
    }
}
