//! Fan-out by epochs: a delta encoded once for every session that needs exactly it.
//!
//! The writer only appends committed changes to the sessions' inbox. A publisher task
//! (`mapper::session::run_publisher`) takes whatever has arrived as one *epoch* and offers
//! it to every session, which keeps a reference to it (O(1); the publisher merges only for
//! a session more than [`MAX_RUN`] epochs behind). When a session wakes it takes the
//! epochs it has not sent yet: one if it keeps up, a *run* of consecutive ones if it
//! was busy writing. Sessions that fell behind together hold the same run (the publisher
//! offers epochs in order and the sessions are woken in turn), so a run is shared like an
//! epoch: its changes merged once, as a node none of them is about ([`SharedDelta`]). With
//! most policies every session would be sent exactly that: the changes, none of them about
//! the viewer, every changed peer shown with its shared rendering. It is serialised and
//! compressed once ([`SharedDelta::frame`]) and its bytes go to all of them; new filters go
//! with it to the sessions whose filters they are. A session that sees something of its
//! own (routes, its own node or capabilities, a change of whom it sees, filters unlike the
//! others') or fell more than [`MAX_RUN`] epochs behind builds its own delta.

use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use oxiscale_tailcfg::{FilterRule, MapResponse, SshPolicy, UserProfile};
use time::OffsetDateTime;

use super::MapConfig;
use super::build::{PeerView, render_peer, self_caps, user_profiles};
use super::encode_message;
use super::pending::Pending;
use super::sent::{Sent, filters_digest};
use crate::tailnet::model::{Node, NodeId};
use crate::tailnet::{Change, State};

/// The most epochs a session holds unsent; a slower one merges them into its own record.
/// A 10,000-node round of deltas takes about half a second under churn, ten epochs.
pub const MAX_RUN: usize = 32;

/// The id merged as "the viewer" into a shared record: no node has it, so no change is
/// skipped as being about the viewer.
const NOBODY: NodeId = NodeId::MAX;

/// One cut of the change stream.
pub struct Epoch {
    /// Epochs are numbered in publishing order: a run is named by its first and last.
    seq: u64,
    changes: Vec<Change>,
    /// This epoch on its own as a shared delta.
    alone: Arc<SharedDelta>,
    /// Runs that end with this epoch, by the number of their first epoch; made by the
    /// first session to hold each.
    runs: Mutex<Vec<(u64, Arc<SharedDelta>)>>,
}

/// Consecutive epochs' changes as one delta that every session for which
/// [`shared_delta`] says yes is sent, encoded once.
pub struct SharedDelta {
    /// The changes merged as a node that none of them is about would merge them.
    universal: Pending,
    /// When the last of the epochs was cut.
    at: OffsetDateTime,
    /// The changed peers as the first session that can use the shared delta found them.
    view: OnceLock<SharedView>,
    /// When the epochs changed the filters: those of the first session that could take
    /// the shared delta. Later sessions take it only if theirs are equal (with a policy
    /// like `* → *:22` every node's are).
    filters: OnceLock<SharedFilters>,
    frame: tokio::sync::OnceCell<Bytes>,
}

#[derive(PartialEq)]
struct SharedFilters {
    packet_filter: Vec<FilterRule>,
    ssh_policy: Option<SshPolicy>,
}

impl Epoch {
    pub fn new(seq: u64, changes: Vec<Change>, at: OffsetDateTime) -> Epoch {
        let alone = Arc::new(SharedDelta::merging(&[&changes], at));
        Epoch {
            seq,
            changes,
            alone,
            runs: Mutex::new(Vec::new()),
        }
    }

    pub fn changes(&self) -> &[Change] {
        &self.changes
    }

    /// Whether node `me` has anything to hear in this epoch: everything except light
    /// changes to `me` itself.
    pub fn concerns(&self, me: NodeId) -> bool {
        let all = &self.alone.universal;
        !all.holds_only_patches() || all.patches.keys().any(|id| *id != me)
    }

    /// Whether this epoch alone could never be shared with node `me`: it is about `me` or
    /// changes whom nodes see. A run is shareable only if none of its epochs is.
    fn rules_out(&self, me: NodeId) -> bool {
        let all = &self.alone.universal;
        all.recompute || all.mentions(me)
    }
}

impl std::fmt::Debug for Epoch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Epoch")
            .field("seq", &self.seq)
            .field("changes", &self.changes.len())
            .field("at", &self.alone.at)
            .finish()
    }
}

impl SharedDelta {
    fn merging(changes: &[&[Change]], at: OffsetDateTime) -> SharedDelta {
        let mut universal = Pending::default();
        for changes in changes {
            universal.merge_all(NOBODY, changes);
        }
        SharedDelta {
            universal,
            at,
            view: OnceLock::new(),
            filters: OnceLock::new(),
            frame: tokio::sync::OnceCell::new(),
        }
    }

    /// The shared delta of `run`, consecutive epochs oldest first as a session took them,
    /// or `None` when one of several epochs rules it out for node `me` (checked first, so
    /// that no run is merged for sessions that cannot use it).
    pub fn of_run(run: &[Arc<Epoch>], me: NodeId) -> Option<Arc<SharedDelta>> {
        let (first, last) = (run.first()?, run.last()?);
        if run.len() == 1 {
            // `shared_delta` checks the epoch's own record; no need to look twice.
            return Some(last.alone.clone());
        }
        if run.iter().any(|e| e.rules_out(me)) {
            return None;
        }
        debug_assert_eq!(
            last.seq - first.seq + 1,
            run.len() as u64,
            "runs are consecutive"
        );
        let mut runs = last.runs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, shared)) = runs.iter().find(|(from, _)| *from == first.seq) {
            return Some(shared.clone());
        }
        let changes: Vec<&[Change]> = run.iter().map(|e| e.changes()).collect();
        let shared = Arc::new(SharedDelta::merging(&changes, last.alone.at));
        runs.push((first.seq, shared.clone()));
        Some(shared)
    }
}

/// Whether `shared` is exactly what node `me` would be sent for the epochs it merges (the
/// caller has nothing else pending): no change is about `me`, none touches visibility,
/// `me` sees every changed peer with the shared rendering, and `me` had been sent every peer
/// that is patched or removed. When it is, records the delta in `sent`; the caller then
/// sends [`SharedDelta::frame`]. Called under the tailnet's read lock: only lookups, and
/// once per shared delta the capture of the changed peers.
pub fn shared_delta(
    state: &State,
    shared: &SharedDelta,
    me: NodeId,
    sent: &mut Sent,
    now: OffsetDateTime,
) -> bool {
    let all = &shared.universal;
    // A change about `me` is `self_changed` for it (or nothing, for a light one), which
    // the universal record has as a peer entry instead.
    if all.recompute || all.mentions(me) {
        return false;
    }
    let Some(me_node) = state.node(me) else {
        return false;
    };
    for id in &all.peers_changed {
        match state.node(*id) {
            Some(peer)
                if state.is_visible(me_node, peer, now)
                    && !peer.serves_routes()
                    && !me_node.ipv4_withheld => {}
            _ => return false,
        }
    }
    let all_sent = all
        .patches
        .keys()
        .chain(&all.removed)
        .all(|id| sent.contains(*id));
    if !all_sent {
        return false;
    }
    // New filters are shared only with the sessions whose filters they are, and whose
    // own capabilities did not change (those are sent their own `Node`).
    if all.filters {
        if !sent.has_self_caps(&self_caps(state, me_node)) {
            return false;
        }
        let mine = SharedFilters {
            packet_filter: state.packet_filter(me_node),
            ssh_policy: state.ssh_policy(me_node),
        };
        let digest = filters_digest(&mine.packet_filter, &mine.ssh_policy);
        if let Err(mine) = shared.filters.set(mine)
            && shared.filters.get() != Some(&mine)
        {
            return false;
        }
        sent.set_filters(digest);
    }
    // Under the same read lock as the checks above: every changed peer exists and has the
    // shared rendering.
    shared.view.get_or_init(|| SharedView::capture(state, all));
    for id in &all.peers_changed {
        sent.insert(*id, None);
    }
    for id in &all.removed {
        sent.remove(*id);
    }
    true
}

/// What the shared delta shows besides the epoch's own record, as of the first session
/// that could use it.
struct SharedView {
    peers: Vec<Arc<Node>>,
    profiles: Vec<UserProfile>,
    base_domain: String,
}

impl SharedView {
    /// Only after [`shared_delta`] found every changed peer present and not routing.
    fn capture(state: &State, all: &Pending) -> SharedView {
        let peers: Vec<Arc<Node>> = all
            .peers_changed
            .iter()
            .filter_map(|id| state.node(*id).cloned())
            .collect();
        let profiles = if peers.is_empty() {
            Vec::new()
        } else {
            user_profiles(state, peers.iter().map(|n| n.as_ref()))
        };
        SharedView {
            peers,
            profiles,
            base_domain: state.settings.base_domain.clone(),
        }
    }
}

impl SharedDelta {
    /// The encoded shared delta; only after [`shared_delta`] said yes. Encoded by the first
    /// session to ask, outside any lock; the others wait for it without holding a thread.
    pub async fn frame(&self, config: &MapConfig) -> Bytes {
        self.frame
            .get_or_init(|| async {
                let view = self.view.get().expect("shared_delta captured the view");
                self.encode(view, config)
            })
            .await
            .clone()
    }

    fn encode(&self, view: &SharedView, config: &MapConfig) -> Bytes {
        let all = &self.universal;
        let mut resp = MapResponse::default();
        for peer in &view.peers {
            let peer = PeerView {
                node: peer.clone(),
                routes: None,
            };
            resp.peers_changed
                .push(render_peer(&view.base_domain, &peer, self.at));
        }
        resp.peers_removed = all.removed.iter().copied().collect();
        resp.peers_changed_patch = all.patches.values().cloned().collect();
        if all.filters {
            let filters = self
                .filters
                .get()
                .expect("shared_delta captured the filters");
            resp.packet_filter = Some(filters.packet_filter.clone());
            resp.ssh_policy = filters.ssh_policy.clone();
        }
        if all.dns {
            resp.dns_config = Some(config.dns_config.clone());
        }
        if all.derp {
            resp.derp_map = Some(config.derp_map.clone());
        }
        resp.user_profiles = view.profiles.clone();
        resp.control_time = Some(self.at);
        encode_message(&resp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_universal_record_skips_nothing_and_names_whom_it_is_about() {
        let epoch = Epoch::new(
            1,
            vec![
                Change::NodeUpserted(3),
                Change::NodeOnline {
                    id: 5,
                    online: true,
                    last_seen: None,
                },
                Change::NodeRemoved(7),
            ],
            OffsetDateTime::UNIX_EPOCH,
        );
        for id in [3, 5, 7] {
            assert!(epoch.alone.universal.mentions(id), "{id}");
        }
        assert!(!epoch.alone.universal.mentions(4) && !epoch.alone.universal.self_changed);
        assert!(epoch.concerns(5), "node 5 hears of 3 and 7");
    }

    #[test]
    fn a_light_change_to_myself_alone_concerns_nobody_but_the_others() {
        let epoch = Epoch::new(
            1,
            vec![Change::NodeOnline {
                id: 5,
                online: true,
                last_seen: None,
            }],
            OffsetDateTime::UNIX_EPOCH,
        );
        assert!(!epoch.concerns(5));
        assert!(epoch.concerns(6));
    }

    #[test]
    fn a_run_resends_a_changed_peer_whole_without_its_later_patches() {
        let first = Arc::new(Epoch::new(
            1,
            vec![Change::NodeUpserted(3)],
            OffsetDateTime::UNIX_EPOCH,
        ));
        // Node 3 comes online after it changed: the run renders it afresh, online; the
        // first epoch's own shared delta may have shown it offline.
        let second = Arc::new(Epoch::new(
            2,
            vec![Change::NodeOnline {
                id: 3,
                online: true,
                last_seen: None,
            }],
            OffsetDateTime::UNIX_EPOCH,
        ));
        let run = [first.clone(), second];
        let shared = SharedDelta::of_run(&run, 1).expect("about node 3 only");
        assert!(shared.universal.peers_changed.contains(&3) && shared.universal.patches.is_empty());
        assert!(!Arc::ptr_eq(&shared, &first.alone));
        let again = SharedDelta::of_run(&run, 2).expect("about node 3 only");
        assert!(Arc::ptr_eq(&shared, &again), "a run is merged once");
    }
}
