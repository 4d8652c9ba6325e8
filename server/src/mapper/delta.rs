//! What a woken session sends: the epochs it took (`mapper::epoch`), turned into its
//! node's delta, either the run's shared encoding or a `MapResponse` built for it alone.

use std::collections::BTreeSet;
use std::sync::Arc;

use oxiscale_tailcfg::MapResponse;
use time::OffsetDateTime;

use super::MapConfig;
use super::build::{peer_view, render_peer, self_caps, self_node, user_profiles};
use super::epoch::{self, Epoch, SharedDelta};
use super::pending::Pending;
use super::sent::{Sent, filters_digest};
use crate::tailnet::State;
use crate::tailnet::model::NodeId;

/// The outcome of draining a session's pending changes.
pub enum Delta {
    Send(Box<MapResponse>),
    /// A shared delta ([`SharedDelta::frame`]), which is exactly this session's.
    Shared(Arc<SharedDelta>),
    Nothing,
    /// The node is gone: end the stream.
    End,
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
    pub(super) fn offer(&mut self, me: NodeId, epoch: &Arc<Epoch>) -> bool {
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
        // viewer may use them: look at the routers, and at the peers last sent as routers
        // (or, to a viewer told IPv6 addresses only, at every peer).
        let mut routed: Vec<NodeId> = if me_node.ipv4_withheld {
            sent.ids().collect()
        } else {
            state
                .routers()
                .iter()
                .copied()
                .chain(sent.routed())
                .collect()
        };
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use time::OffsetDateTime;

    use crate::mapper::test_tailnet::tailnet_with;
    use crate::tailnet::State;

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
}
