//! Map sessions: one per connected node's long poll.
//!
//! Changes are not queued as messages. Each session keeps a small *pending* record that
//! changes are merged into (newest state wins, its size bounded by the tailnet, not by how
//! many changes arrive), and a wake-up. The session task drains it when it can write, so a
//! slow client costs only its own task, and a burst of changes becomes one delta. Changes
//! reach the sessions in epochs (`mapper::epoch`), so that sessions that took the same
//! epochs can share one encoding of their delta.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use fixedbitset::FixedBitSet;
use oxiscale_tailcfg::{FilterRule, MapResponse, PeerChange, SshPolicy};
use time::OffsetDateTime;
use tokio::sync::Notify;

use super::MapConfig;
use super::build::{peer_view, render_peer, self_caps, self_node, user_profiles};
use super::epoch::{self, Epoch, SharedDelta};
use crate::tailnet::access::PeerRoutes;
use crate::tailnet::model::NodeId;
use crate::tailnet::{Change, ChangeListener, State};

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

/// The outcome of draining a session's pending changes.
pub enum Delta {
    Send(Box<MapResponse>),
    /// A shared delta ([`SharedDelta::frame`]), which is exactly this session's.
    Shared(Arc<SharedDelta>),
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
    fn sent_with(&self, id: NodeId, routes: &Option<PeerRoutes>) -> bool {
        self.contains(id) && self.routes.get(&id) == routes.as_ref()
    }

    fn ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.peers.ones().map(|i| i as NodeId)
    }

    /// The peers sent with routes of their own.
    fn routed(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.routes.keys().copied()
    }

    pub fn len(&self) -> usize {
        self.peers.count_ones(..)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A session's mailbox, and what the session takes out of it when it wakes.
#[derive(Debug, Default)]
pub enum Taken {
    #[default]
    Nothing,
    /// The epochs not sent yet, oldest first: every epoch since the first one that
    /// concerned the session. Nothing is merged on the publisher: the session will most
    /// likely be sent their shared delta, so the publisher's work per session and epoch
    /// stays O(1).
    Epochs(Vec<Arc<Epoch>>),
    /// More than [`epoch::MAX_RUN`] epochs waited (a slow reader): their changes merged
    /// from this session's point of view, newest state winning, so that what a slow
    /// client holds is bounded by the size of the tailnet.
    Merged(Pending),
}

impl Taken {
    pub fn is_empty(&self) -> bool {
        match self {
            Taken::Nothing => true,
            Taken::Epochs(run) => run.is_empty(),
            Taken::Merged(pending) => pending.is_empty(),
        }
    }

    /// Everything taken, merged from the point of view of node `me`.
    pub fn into_pending(self, me: NodeId) -> Pending {
        match self {
            Taken::Nothing => Pending::default(),
            Taken::Epochs(run) => {
                let mut pending = Pending::default();
                for epoch in &run {
                    pending.merge_all(me, epoch.changes());
                }
                pending
            }
            Taken::Merged(pending) => pending,
        }
    }

    /// Takes in an epoch for node `me`; returns whether the session should wake for it.
    fn offer(&mut self, me: NodeId, epoch: &Arc<Epoch>) -> bool {
        match self {
            Taken::Nothing => {
                if !epoch.concerns(me) {
                    return false;
                }
                *self = Taken::Epochs(vec![epoch.clone()]);
                true
            }
            Taken::Epochs(run) if run.len() < epoch::MAX_RUN => {
                // Held even when it does not concern `me`, so that a run is always
                // consecutive epochs and sessions holding the same one can share it.
                run.push(epoch.clone());
                true
            }
            Taken::Epochs(_) => {
                let mut pending = std::mem::take(self).into_pending(me);
                let recorded = pending.merge_all(me, epoch.changes());
                *self = Taken::Merged(pending);
                recorded
            }
            Taken::Merged(pending) => pending.merge_all(me, epoch.changes()),
        }
    }

    /// The delta for node `me`: the shared encoding of the epochs it took when that is
    /// exactly what `me` would be sent, otherwise one built for `me`.
    pub fn into_delta(
        self,
        state: &State,
        me: NodeId,
        sent: &mut Sent,
        config: &MapConfig,
        now: OffsetDateTime,
    ) -> Delta {
        // An expired node is sent nothing more; its stream ends and a new one is refused.
        if state.node(me).is_none_or(|n| n.is_expired(now)) {
            return Delta::End;
        }
        if let Taken::Epochs(run) = &self
            && let Some(shared) = SharedDelta::of_run(run, me)
            && epoch::shared_delta(state, &shared, me, sent, now)
        {
            return Delta::Shared(shared);
        }
        build_delta(state, me, self.into_pending(me), sent, config, now)
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
        // From sets: a policy change that narrows who sees whom makes every stream recheck
        // every node, and one look per (viewer, node) pair took ≈ 5 ms per stream at
        // 10,000 nodes (BENCHMARKS.md, "A policy change that narrows who sees whom").
        let visible = state.visible_ids(&me_node, now);
        let dropped: Vec<NodeId> = sent
            .ids()
            .filter(|id| !visible.contains(*id as usize))
            .collect();
        for id in dropped {
            sent.remove(id);
            resp.peers_removed.push(id);
        }
        changed.extend(
            visible
                .ones()
                .map(|i| i as NodeId)
                .filter(|id| !sent.contains(*id)),
        );
        // Peers sent before and still visible change only if their routes do, as this
        // viewer may use them: look at the routers, and at the peers last sent as routers.
        let mut routed: Vec<NodeId> = state
            .routers()
            .iter()
            .copied()
            .chain(sent.routed())
            .collect();
        routed.sort_unstable();
        routed.dedup();
        for id in routed {
            if !sent.contains(id) || !visible.contains(id as usize) {
                continue;
            }
            if let Some(peer) = state.node(id)
                && !sent.sent_with(id, &peer_view(state, &me_node, peer).routes)
            {
                changed.insert(id);
            }
        }
    }
    if pending.recompute || pending.filters {
        let packet_filter = state.packet_filter(&me_node);
        let ssh_policy = state.ssh_policy(&me_node);
        let digest = filters_digest(&packet_filter, &ssh_policy);
        if !sent.has_filters(digest) {
            sent.set_filters(digest);
            resp.packet_filter = Some(packet_filter);
            resp.ssh_policy = ssh_policy;
        }
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
    // A policy change can change the node's own capabilities (`nodeAttrs`): sent only
    // when they differ from the ones it has.
    let send_self = pending.self_changed
        || ((pending.recompute || pending.filters)
            && !sent.has_self_caps(&self_caps(state, &me_node)));
    if send_self {
        let node = self_node(state, &me_node, now);
        sent.set_self_caps(node.cap_map.clone());
        resp.node = Some(node);
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
    mailbox: Mutex<Taken>,
    wake: Notify,
    closed: AtomicBool,
    /// The stream has not taken its full map's snapshot yet: changes are not recorded,
    /// the snapshot will include them. Without this, every stream waiting for its first
    /// map in a reconnect storm collected a patch for each peer that came back online:
    /// O(N²) memory (3+ GiB at 5,000 nodes).
    awaiting_snapshot: AtomicBool,
}

impl SessionSlot {
    pub fn take(&self) -> Taken {
        std::mem::take(&mut *self.mailbox.lock().unwrap_or_else(|p| p.into_inner()))
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

    fn offer(&self, epoch: &Arc<Epoch>) {
        if self.awaiting_snapshot.load(Ordering::Acquire) {
            return;
        }
        let mut mailbox = self.mailbox.lock().unwrap_or_else(|p| p.into_inner());
        if mailbox.offer(self.node, epoch) {
            drop(mailbox);
            self.wake.notify_one();
        }
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.wake.notify_one();
    }
}

/// Committed changes on their way to the publisher (`mapper::epoch::run_publisher`).
#[derive(Default)]
pub struct Inbox {
    changes: Mutex<Vec<Change>>,
    ready: Notify,
}

impl Inbox {
    fn push(&self, changes: &[Change]) {
        self.changes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(changes);
        self.ready.notify_one();
    }

    pub async fn ready(&self) {
        self.ready.notified().await
    }

    pub fn drain(&self) -> Vec<Change> {
        std::mem::take(&mut *self.changes.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// How many deltas were sent from an epoch's shared encoding and how many were built for
/// one session, since start.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DeltaCounts {
    pub shared: u64,
    pub own: u64,
}

/// Every open map stream, by node.
#[derive(Default)]
pub struct Sessions {
    slots: Mutex<HashMap<NodeId, Arc<SessionSlot>>>,
    generation: AtomicU64,
    /// Epochs published so far: the last one's number.
    epochs: AtomicU64,
    inbox: Arc<Inbox>,
    shared_deltas: AtomicU64,
    own_deltas: AtomicU64,
}

impl Sessions {
    /// The registry with its epoch publisher running (needs a tokio runtime).
    pub fn start() -> Arc<Sessions> {
        let sessions = Arc::new(Sessions::default());
        tokio::spawn(epoch::run_publisher(
            Arc::downgrade(&sessions),
            sessions.inbox.clone(),
        ));
        sessions
    }

    /// Makes `changes` one epoch and offers it to every recording session.
    pub fn publish(&self, changes: Vec<Change>) {
        let seq = self.epochs.fetch_add(1, Ordering::Relaxed) + 1;
        let epoch = Arc::new(Epoch::new(seq, changes, OffsetDateTime::now_utc()));
        // Clone the slots out so the registry lock is not held while merging.
        let slots: Vec<Arc<SessionSlot>> = self.lock().values().cloned().collect();
        for slot in slots {
            slot.offer(&epoch);
        }
    }

    /// Registers a new stream for `node`; an older stream of the same node is closed.
    pub fn attach(&self, node: NodeId) -> Arc<SessionSlot> {
        let slot = Arc::new(SessionSlot {
            node,
            generation: self.generation.fetch_add(1, Ordering::Relaxed) + 1,
            mailbox: Mutex::default(),
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

    /// Counts a delta about to be sent.
    pub fn count_delta(&self, delta: &Delta) {
        let counter = match delta {
            Delta::Shared(_) => &self.shared_deltas,
            Delta::Send(_) => &self.own_deltas,
            Delta::Nothing | Delta::End => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn delta_counts(&self) -> DeltaCounts {
        DeltaCounts {
            shared: self.shared_deltas.load(Ordering::Relaxed),
            own: self.own_deltas.load(Ordering::Relaxed),
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

impl Drop for Sessions {
    fn drop(&mut self) {
        // Lets the publisher see that the registry is gone and stop.
        self.inbox.ready.notify_one();
    }
}

impl ChangeListener for Sessions {
    /// Runs on the writer: only queue the changes for the publisher.
    fn on_changes(&self, changes: &[Change]) {
        self.inbox.push(changes);
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

    fn run_of(taken: &Taken) -> &[Arc<Epoch>] {
        match taken {
            Taken::Epochs(run) => run,
            other => panic!("expected held epochs, got {other:?}"),
        }
    }

    #[test]
    fn a_session_that_keeps_up_holds_one_epoch_and_one_behind_holds_the_run() {
        let sessions = Sessions::default();
        let (a, b) = (sessions.attach(1), sessions.attach(2));
        a.start_recording();
        b.start_recording();
        sessions.publish(vec![Change::NodeUpserted(3)]);
        let taken = a.take();
        assert_eq!(run_of(&taken).len(), 1, "a holds the epoch unmerged");
        assert!(taken.into_pending(1).peers_changed.contains(&3));
        sessions.publish(vec![Change::NodeUpserted(4)]);
        assert_eq!(
            run_of(&a.take()).len(),
            1,
            "a took the first one: only the second is pending"
        );
        let behind = b.take();
        assert_eq!(run_of(&behind).len(), 2);
        let pending = behind.into_pending(2);
        assert!(pending.peers_changed.contains(&3) && pending.peers_changed.contains(&4));
    }

    #[test]
    fn sessions_that_fell_behind_together_share_their_run() {
        let sessions = Sessions::default();
        let slots: Vec<_> = (1..=3).map(|id| sessions.attach(id)).collect();
        for slot in &slots {
            slot.start_recording();
        }
        sessions.publish(vec![Change::NodeUpserted(5)]);
        let kept_up = slots[2].take();
        sessions.publish(vec![Change::NodeUpserted(6)]);
        let (a, b, c) = (slots[0].take(), slots[1].take(), slots[2].take());
        let shared_a = SharedDelta::of_run(run_of(&a), 1).expect("about neither 1 nor 2");
        let shared_b = SharedDelta::of_run(run_of(&b), 2).expect("about neither 1 nor 2");
        assert!(Arc::ptr_eq(&shared_a, &shared_b), "merged once for both");
        let shared_c = SharedDelta::of_run(run_of(&c), 3).expect("about someone else");
        assert!(!Arc::ptr_eq(&shared_a, &shared_c), "3 took the first epoch");
        let first = SharedDelta::of_run(run_of(&kept_up), 3).expect("about someone else");
        assert!(!Arc::ptr_eq(&first, &shared_c));
        assert!(
            SharedDelta::of_run(run_of(&a), 5).is_none(),
            "a run about the viewer is never its shared delta"
        );
    }

    /// A tailnet of `n` nodes of one user, without a policy (everyone sees everyone).
    fn tailnet_of(n: NodeId, now: OffsetDateTime) -> State {
        tailnet_with(
            (1..=n).map(crate::tailnet::model::Node::sample).collect(),
            now,
        )
    }

    fn tailnet_with(nodes: Vec<crate::tailnet::model::Node>, now: OffsetDateTime) -> State {
        use crate::tailnet::model::User;
        use crate::tailnet::state::Loaded;
        let loaded = Loaded {
            users: vec![User {
                id: 1,
                name: "alice".into(),
                display_name: "Alice".into(),
                email: "alice@example.com".into(),
                created: now,
                provider: None,
                picture_url: String::new(),
                provider_groups: Vec::new(),
            }],
            nodes,
            preauth_keys: vec![],
            api_keys: vec![],
            sequences: vec![],
        };
        let settings = crate::tailnet::Settings {
            server_url: "http://127.0.0.1:8080".into(),
            base_domain: "tail.test".into(),
            magic_dns: true,
            node_expiry: None,
            approval_required: false,
        };
        let pool = crate::tailnet::addresses::AddressPool::new(
            Some("100.64.0.0/10".parse().unwrap()),
            None,
            crate::config::Allocation::Sequential,
        );
        State::new(settings, pool, loaded)
    }

    /// `State::visible_ids` is `State::is_visible` for every node at once: allow-all, then
    /// a policy that splits the tailnet, with an expired node, a router, nodes waiting for
    /// approval (one of them a hub) and the viewer.
    #[test]
    fn visible_ids_agree_with_is_visible_node_by_node() {
        use crate::tailnet::Effects;
        use crate::tailnet::model::Node;
        let now = OffsetDateTime::now_utc();
        let mut nodes: Vec<Node> = (1..=40).map(Node::sample).collect();
        nodes[3].expiry = Some(now - time::Duration::hours(1));
        nodes[5].expiry = Some(now + time::Duration::hours(1));
        nodes[2].approved = false;
        nodes[30].approved = false;
        let route: ipnet::IpNet = "10.0.0.0/24".parse().unwrap();
        nodes[4].hostinfo.routable_ips = vec![route];
        nodes[4].approved_routes = vec![route];
        let mut state = tailnet_with(nodes, now);
        let agree = |state: &State| {
            for viewer in state.nodes() {
                let by_node: Vec<usize> = state
                    .nodes()
                    .filter(|peer| state.is_visible(viewer, peer, now))
                    .map(|peer| peer.id as usize)
                    .collect();
                let by_set: Vec<usize> = state.visible_ids(viewer, now).ones().collect();
                assert_eq!(by_set, by_node, "viewer {}", viewer.id);
            }
        };
        agree(&state);
        // Nodes 1-3 are the hub, seen by all; 10 reaches 11; the rest see only the hub.
        let policy = oxiscale_policy::Policy::parse(
            r#"{"hosts": {"hub": "100.64.0.0/30"},
                "acls": [{"action": "accept", "src": ["*"], "dst": ["hub:*"]},
                         {"action": "accept", "src": ["100.64.0.10"], "dst": ["100.64.0.11:22"]}]}"#,
        )
        .unwrap();
        state
            .set_policy(&mut Effects::default(), Some(Arc::new(policy)))
            .unwrap();
        agree(&state);
        assert_eq!(
            state
                .visible_ids(state.node(20).unwrap(), now)
                .ones()
                .collect::<Vec<_>>(),
            vec![1, 2],
            "a spoke sees the hub only, without its node waiting for approval"
        );
        assert!(state.visible_ids(state.node(31).unwrap(), now).is_clear());
        assert_eq!(state.routers(), &[5]);
    }

    /// A full map never shows a node waiting for approval, not even in a chunk shared
    /// whole (where a chunk with an expired member is not shared either), and the waiting
    /// node's own map holds only itself, told it is not authorized yet, without a filter.
    #[test]
    fn a_full_map_leaves_out_nodes_waiting_for_approval() {
        use crate::mapper::build::FullMapSnapshot;
        use crate::mapper::chunks::PeerChunks;
        use crate::tailnet::model::Node;
        use crate::tailnet::nodes::{block_ids, block_of};
        let now = OffsetDateTime::now_utc();
        // The viewer, 1, and a whole other block: the one a viewer is sent shared.
        let other = block_ids(block_of(1) + 1);
        let held = other.end - 1;
        let mut nodes: Vec<Node> = std::iter::once(1)
            .chain(other.clone())
            .map(Node::sample)
            .collect();
        nodes.last_mut().unwrap().approved = false;
        let state = tailnet_with(nodes, now);
        let chunks = PeerChunks::default();

        let viewer = state.node(1).unwrap().clone();
        let map = FullMapSnapshot::take(&state, &chunks, &viewer, now);
        let sent = map.sent();
        assert!(!sent.contains(held), "the held node is nobody's peer");
        assert!(
            other
                .clone()
                .filter(|id| *id != held)
                .all(|id| sent.contains(id))
        );
        assert_eq!(map.peer_count(), other.count() - 1);
        assert!(map.me.machine_authorized && !map.packet_filter.is_empty());

        let waiting = state.node(held).unwrap().clone();
        let map = FullMapSnapshot::take(&state, &chunks, &waiting, now);
        assert_eq!(map.peer_count(), 0);
        assert!(map.sent().is_empty());
        assert!(map.packet_filter.is_empty(), "drops everything");
        assert!(!map.me.machine_authorized, "the client waits for approval");
    }

    /// A map message's JSON, without its `ControlTime`.
    fn decoded(message: &[u8]) -> serde_json::Value {
        let json = zstd::bulk::decompress(&message[4..], 1 << 20).unwrap();
        let mut value: serde_json::Value = serde_json::from_slice(&json).unwrap();
        value.as_object_mut().unwrap().remove("ControlTime");
        value
    }

    #[tokio::test]
    async fn a_shared_run_says_exactly_what_each_session_would_build_for_itself() {
        use crate::tailnet::Effects;
        let now = OffsetDateTime::now_utc();
        let mut state = tailnet_of(6, now);
        let config = MapConfig {
            derp_map: Default::default(),
            dns_config: Default::default(),
            domain: "tail.test".into(),
        };
        let sessions = Sessions::default();
        let viewers = [1, 2];
        let slots: Vec<_> = viewers.iter().map(|id| sessions.attach(*id)).collect();
        for slot in &slots {
            slot.start_recording();
        }
        // Four epochs while the viewers were busy, each cut after its change was applied,
        // as the writer and the publisher do: 3 goes offline (a patch), 4 is renamed (sent
        // whole) and then goes offline (a patch left out: 4 is rendered afresh), 5 is
        // deleted.
        let mut fx = Effects::default();
        state.set_online(&mut fx, 3, false, now);
        sessions.publish(std::mem::take(&mut fx.changes));
        state.rename_node(&mut fx, 4, "renamed").unwrap();
        sessions.publish(std::mem::take(&mut fx.changes));
        state.set_online(&mut fx, 4, false, now);
        sessions.publish(std::mem::take(&mut fx.changes));
        state.delete_node(&mut fx, 5).unwrap();
        sessions.publish(std::mem::take(&mut fx.changes));

        let sent_in_full_map = |me: NodeId| {
            let mut sent = Sent::for_ids_up_to(6);
            (1..=6)
                .filter(|id| *id != me)
                .for_each(|id| sent.insert(id, None));
            sent
        };
        let mut shared_deltas = Vec::new();
        for (slot, me) in slots.iter().zip(viewers) {
            let run = run_of(&slot.take()).to_vec();
            assert_eq!(run.len(), 4);
            let mut sent = sent_in_full_map(me);
            let shared =
                match Taken::Epochs(run.clone()).into_delta(&state, me, &mut sent, &config, now) {
                    Delta::Shared(shared) => shared,
                    _ => panic!("node {me} is sent the run's shared delta"),
                };
            let mut own_sent = sent_in_full_map(me);
            let pending = Taken::Epochs(run).into_pending(me);
            let own = match build_delta(&state, me, pending, &mut own_sent, &config, now) {
                Delta::Send(resp) => super::super::encode_message(&resp),
                _ => panic!("node {me} has changes to hear"),
            };
            let message = decoded(&shared.frame(&config).await);
            assert_eq!(message, decoded(&own), "node {me}");
            assert_eq!(message["PeersRemoved"], serde_json::json!([5]));
            assert!(
                message["PeersChanged"][0]["Name"]
                    .as_str()
                    .unwrap()
                    .starts_with("renamed.")
            );
            assert_eq!(
                sent.ids().collect::<Vec<_>>(),
                own_sent.ids().collect::<Vec<_>>()
            );
            shared_deltas.push(shared);
        }
        assert!(Arc::ptr_eq(&shared_deltas[0], &shared_deltas[1]));
    }

    #[test]
    fn a_session_too_far_behind_merges_its_epochs() {
        let sessions = Sessions::default();
        let slot = sessions.attach(1);
        slot.start_recording();
        for id in 0..=epoch::MAX_RUN as NodeId {
            sessions.publish(vec![Change::NodeUpserted(100 + id)]);
        }
        match slot.take() {
            Taken::Merged(pending) => {
                assert_eq!(pending.peers_changed.len(), epoch::MAX_RUN + 1)
            }
            other => panic!("expected merged changes, got {other:?}"),
        }
    }

    #[test]
    fn changes_before_the_snapshot_are_not_recorded() {
        let sessions = Sessions::default();
        let slot = sessions.attach(7);
        sessions.publish(vec![Change::NodeUpserted(8)]);
        assert!(
            slot.take().is_empty(),
            "the snapshot will read node 8 as it is"
        );
        slot.start_recording();
        sessions.publish(vec![Change::NodeUpserted(9)]);
        assert!(slot.take().into_pending(7).peers_changed.contains(&9));
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
