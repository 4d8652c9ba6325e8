//! Fan-out by epochs: a delta encoded once for every session that needs exactly it.
//!
//! The writer only appends committed changes to the sessions' inbox. A publisher task takes
//! whatever has arrived as one *epoch* and offers it to every session. A session with
//! nothing pending just keeps a reference to the epoch (O(1), no merge); one that has not
//! sent its previous changes yet merges the epoch into its pending record, on the
//! publisher, off the writer. With most policies every session that keeps up would be sent
//! the same delta: the epoch's changes, none of them about the viewer, every changed peer
//! shown with its shared rendering. That delta is serialised and compressed once per epoch
//! ([`shared_delta`], [`Epoch::shared_frame`]) and its bytes go to all of them; new filters
//! go with it to the sessions whose filters they are. A session that fell behind (several
//! epochs merged) or sees something of its own (routes, its own node or capabilities, a
//! change of whom it sees, filters unlike the others') builds its own delta.
//!
//! Epochs are at least [`MIN_GAP`] apart and otherwise not paced: every epoch costs each
//! session that keeps up one message. Holding the next epoch until the sessions had taken
//! the last one (so that more of them would share), with or without a cap of 2 epochs per
//! second, gave 317–368 registrations/s in a 5,000-node join where not waiting gave
//! 390–627/s; cutting epochs as fast as the publisher could sent 3–4× the messages in four
//! of five 1,000-node joins (BENCHMARKS.md, "How the landed form was chosen").

use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use oxiscale_tailcfg::{FilterRule, MapResponse, SshPolicy, UserProfile};
use time::OffsetDateTime;
use tokio::time::Instant;

use super::MapConfig;
use super::build::{PeerView, render_peer, self_caps, user_profiles};
use super::encode_message;
use super::session::{Inbox, Pending, Sent, Sessions, filters_digest};
use crate::tailnet::model::{Node, NodeId};
use crate::tailnet::{Change, State};

/// The shortest time between two epochs: a burst of changes within it becomes one epoch,
/// one message per session; a change after a quiet moment is published at once.
const MIN_GAP: Duration = Duration::from_millis(50);

/// The id merged as "the viewer" into an epoch's universal record: no node has it, so no
/// change is skipped as being about the viewer.
const NOBODY: NodeId = NodeId::MAX;

/// One cut of the change stream.
pub struct Epoch {
    changes: Vec<Change>,
    /// The changes merged as a node that none of them is about would merge them.
    universal: Pending,
    at: OffsetDateTime,
    /// The changed peers as the first session that can use the shared delta found them.
    view: OnceLock<SharedView>,
    /// When the epoch changed the filters: those of the first session that could take the
    /// shared delta. Later sessions take it only if theirs are equal (with a policy like
    /// `* → *:22` every node's are).
    filters: OnceLock<SharedFilters>,
    frame: tokio::sync::OnceCell<Bytes>,
}

#[derive(PartialEq)]
struct SharedFilters {
    packet_filter: Vec<FilterRule>,
    ssh_policy: Option<SshPolicy>,
}

impl Epoch {
    pub fn new(changes: Vec<Change>, at: OffsetDateTime) -> Epoch {
        let mut universal = Pending::default();
        universal.merge_all(NOBODY, &changes);
        Epoch {
            changes,
            universal,
            at,
            view: OnceLock::new(),
            filters: OnceLock::new(),
            frame: tokio::sync::OnceCell::new(),
        }
    }

    pub fn changes(&self) -> &[Change] {
        &self.changes
    }

    /// Whether node `me` has anything to hear in this epoch: everything except light
    /// changes to `me` itself.
    pub fn concerns(&self, me: NodeId) -> bool {
        let all = &self.universal;
        !all.holds_only_patches() || all.patches.keys().any(|id| *id != me)
    }
}

impl std::fmt::Debug for Epoch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Epoch")
            .field("changes", &self.changes.len())
            .field("at", &self.at)
            .finish()
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

/// Whether the epoch's shared delta is exactly what node `me` would be sent for this
/// epoch alone (the caller has nothing else pending): no change is about `me`, the epoch
/// does not touch visibility, `me` sees every changed peer with the shared rendering, and
/// `me` had been sent every peer that is patched or removed. When it is, records the delta
/// in `sent`; the caller then sends [`Epoch::shared_frame`]. Called under the tailnet's
/// read lock: only lookups, and once per epoch the capture of the changed peers.
pub fn shared_delta(
    state: &State,
    epoch: &Epoch,
    me: NodeId,
    sent: &mut Sent,
    now: OffsetDateTime,
) -> bool {
    let all = &epoch.universal;
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
            Some(peer) if state.is_visible(me_node, peer, now) && !peer.serves_routes() => {}
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
        let access = state.access();
        let mine = SharedFilters {
            packet_filter: access.packet_filter(me_node),
            ssh_policy: access.ssh_policy(me_node),
        };
        let digest = filters_digest(&mine.packet_filter, &mine.ssh_policy);
        if let Err(mine) = epoch.filters.set(mine)
            && epoch.filters.get() != Some(&mine)
        {
            return false;
        }
        sent.set_filters(digest);
    }
    // Under the same read lock as the checks above: every changed peer exists and has the
    // shared rendering.
    epoch.view.get_or_init(|| SharedView::capture(state, all));
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

impl Epoch {
    /// The encoded shared delta; only after [`shared_delta`] said yes. Encoded by the first
    /// session to ask, outside any lock; the others wait for it without holding a thread.
    pub async fn shared_frame(&self, config: &MapConfig) -> Bytes {
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
            assert!(epoch.universal.mentions(id), "{id}");
        }
        assert!(!epoch.universal.mentions(4) && !epoch.universal.self_changed);
        assert!(epoch.concerns(5), "node 5 hears of 3 and 7");
    }

    #[test]
    fn a_light_change_to_myself_alone_concerns_nobody_but_the_others() {
        let epoch = Epoch::new(
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
}
