//! Map sessions: one per connected node's long poll.
//!
//! Changes are not queued as messages. Each session keeps a small *pending* record that
//! changes are merged into (newest state wins, its size bounded by the tailnet, not by how
//! many changes arrive), and a wake-up. The session task drains it when it can write, so a
//! slow client costs only its own task, and a burst of changes becomes one delta. Changes
//! reach the sessions in epochs (`mapper::epoch`), so that sessions that took the same
//! epochs can share one encoding of their delta.
//!
//! The top of the mapper: the registry of sessions, their mailboxes, and the publisher
//! task that cuts epochs from the writer's changes. What a woken session sends is
//! `mapper::delta`'s.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::delta::{Delta, Taken};
use super::epoch::Epoch;
use crate::tailnet::model::NodeId;
use crate::tailnet::{Change, ChangeListener};

/// The shortest time between two epochs: a burst of changes within it becomes one epoch,
/// one message per session; a change after a quiet moment is published at once.
///
/// Epochs are at least [`MIN_GAP`] apart and otherwise not paced: every epoch costs each
/// session that keeps up one message. Holding the next epoch until the sessions had taken
/// the last one (so that more of them would share), with or without a cap of 2 epochs per
/// second, gave 317–368 registrations/s in a 5,000-node join where not waiting gave
/// 390–627/s; cutting epochs as fast as the publisher could sent 3–4× the messages in four
/// of five 1,000-node joins (BENCHMARKS.md, "How the landed form was chosen").
const MIN_GAP: Duration = Duration::from_millis(50);

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

/// Committed changes on their way to the publisher ([`run_publisher`]).
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
        tokio::spawn(run_publisher(
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

/// Cuts epochs from the sessions' inbox until the sessions are dropped.
pub async fn run_publisher(sessions: Weak<Sessions>, inbox: Arc<Inbox>) {
    let mut last_cut: Option<Instant> = None;
    loop {
        inbox.ready().await;
        if let Some(at) = last_cut {
            tokio::time::sleep_until(at + MIN_GAP).await;
        }
        last_cut = Some(Instant::now());
        let Some(sessions) = sessions.upgrade() else {
            return;
        };
        let changes = inbox.drain();
        if !changes.is_empty() {
            sessions.publish(changes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapper::MapConfig;
    use crate::mapper::delta::build_delta;
    use crate::mapper::epoch::{self, SharedDelta};
    use crate::mapper::sent::Sent;
    use crate::mapper::test_tailnet::tailnet_of;

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
