//! What a connected node says about itself (map requests, Hostinfo at re-login) and
//! whether it is online. Only the machine that owns a node key may speak for it, an expired
//! node is not listened to, and peers hear the smallest change that describes it.

use oxiscale_tailcfg::{Hostinfo, MachinePublic, MapRequest, PeerChange};
use time::OffsetDateTime;

use super::super::effects::{Change, Effects};
use super::super::model::NodeId;
use super::{State, TailnetError, not_found};

impl State {
    pub(super) fn refresh_hostinfo(
        &mut self,
        fx: &mut Effects,
        id: NodeId,
        hostinfo: Hostinfo,
        now: OffsetDateTime,
    ) {
        let routes_changed = self.nodes[&id].hostinfo.routable_ips != hostinfo.routable_ips;
        self.update_node(fx, id, |n| {
            n.hostname = hostinfo.hostname.clone();
            n.hostinfo = hostinfo;
            n.last_seen = Some(now);
        });
        if routes_changed {
            self.routes_changed(fx);
        }
    }

    /// Applies what a map request says about the node: disco key, endpoints, hostinfo,
    /// client version. Returns the node id, or why the request is refused.
    pub fn apply_map_request(
        &mut self,
        fx: &mut Effects,
        machine: MachinePublic,
        req: &MapRequest,
        now: OffsetDateTime,
    ) -> Result<NodeId, TailnetError> {
        let node = self
            .node_by_key(&req.node_key)
            .ok_or_else(|| not_found("node", req.node_key))?;
        if node.machine_key != machine {
            return Err(TailnetError::Invalid(
                "node key is registered to another machine".into(),
            ));
        }
        // An expired or logged-out node gets nothing (no peers, no filter) until it logs in
        // again, and what it says about itself is not taken either.
        if node.is_expired(now) {
            return Err(TailnetError::Invalid(
                "node key expired: log in again".into(),
            ));
        }
        let id = node.id;
        let mut patch = PeerChange {
            node_id: id,
            ..Default::default()
        };
        let mut full = false;
        let mut routes_changed = false;
        if !req.disco_key.is_zero() && req.disco_key != node.disco_key {
            patch.disco_key = Some(req.disco_key);
        }
        // Streams often start without endpoints; an empty list is "not known yet".
        if !req.endpoints.is_empty() && req.endpoints != node.endpoints {
            patch.endpoints = Some(req.endpoints.clone());
        }
        if let Some(hi) = &req.hostinfo {
            if hi.preferred_derp() != node.hostinfo.preferred_derp() && hi.preferred_derp() != 0 {
                patch.derp_region = Some(hi.preferred_derp());
            }
            routes_changed = hi.routable_ips != node.hostinfo.routable_ips;
            // Anything else in Hostinfo (name, OS, services, SSH keys) reaches peers as a full node.
            let mut old = node.hostinfo.clone();
            let mut new = hi.clone();
            old.net_info = None;
            new.net_info = None;
            full = old != new;
        }
        if req.version != 0 && req.version != node.cap_version {
            patch.cap = Some(req.version);
        }
        let name_changed = req
            .hostinfo
            .as_ref()
            .is_some_and(|hi| !hi.hostname.is_empty() && hi.hostname != node.hostname);
        self.update_node(fx, id, |n| {
            if let Some(k) = patch.disco_key {
                n.disco_key = k;
            }
            if let Some(e) = &patch.endpoints {
                n.endpoints = e.clone();
            }
            if let Some(hi) = &req.hostinfo {
                if name_changed {
                    n.hostname = hi.hostname.clone();
                }
                n.hostinfo = hi.clone();
            }
            if req.version != 0 {
                n.cap_version = req.version;
            }
            n.last_seen = Some(now);
        });
        if full || routes_changed {
            fx.announce(Change::NodeUpserted(id));
        } else if !self.nodes[&id].approved {
            // Nobody sees it yet, and a node ignores patches about itself: the approval
            // sends it whole, endpoints included.
        } else if patch
            != (PeerChange {
                node_id: id,
                ..Default::default()
            })
        {
            fx.announce(Change::NodePatched(patch));
        }
        if routes_changed {
            self.routes_changed(fx);
        }
        Ok(id)
    }

    pub fn set_online(&mut self, fx: &mut Effects, id: NodeId, online: bool, now: OffsetDateTime) {
        let Some(node) = self.nodes.get(&id) else {
            return;
        };
        if node.online == online {
            return;
        }
        let has_routes = !node.served_routes().is_empty();
        self.update_node(fx, id, |n| {
            n.online = online;
            n.last_seen = Some(now);
        });
        fx.announce(Change::NodeOnline {
            id,
            online,
            last_seen: Some(now),
        });
        if has_routes {
            self.routes_changed(fx);
        }
    }
}

/// Rules: peers hear an endpoint, disco key or DERP change as a patch and any other Hostinfo
/// change as a full node; an empty endpoint list is "not known yet", not a change; going
/// online or offline is announced once per change.
#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    fn map(s: &mut State, id: NodeId, f: impl FnOnce(&mut MapRequest)) -> Vec<Change> {
        let node = s.node(id).unwrap().clone();
        let mut req = MapRequest {
            node_key: node.node_key,
            ..Default::default()
        };
        f(&mut req);
        let mut fx = Effects::default();
        let now = OffsetDateTime::now_utc();
        s.apply_map_request(&mut fx, node.machine_key, &req, now)
            .unwrap();
        fx.changes
    }

    #[test]
    fn endpoints_reach_peers_as_a_patch_and_other_hostinfo_as_a_full_node() {
        let mut s = State::for_tests(false);
        let alice = user(&mut s, "alice");
        let k = key(&mut s, Some(alice), true, &[]);
        let id = join(&mut s, 1, 1, &k);
        let endpoints = vec!["192.0.2.1:41641".to_string()];

        let changes = map(&mut s, id, |r| r.endpoints = endpoints.clone());
        assert!(
            matches!(&changes[..], [Change::NodePatched(p)] if p.endpoints.as_ref() == Some(&endpoints)),
            "{changes:?}"
        );
        assert!(map(&mut s, id, |r| r.endpoints = endpoints.clone()).is_empty());
        assert!(
            map(&mut s, id, |_| ()).is_empty(),
            "no endpoints: not known yet"
        );
        assert_eq!(s.node(id).unwrap().endpoints, endpoints);

        let hostinfo = Hostinfo {
            os: "linux".into(),
            ..s.node(id).unwrap().hostinfo.clone()
        };
        let changes = map(&mut s, id, |r| r.hostinfo = Some(hostinfo));
        assert_eq!(changes, vec![Change::NodeUpserted(id)]);
    }

    #[test]
    fn going_online_or_offline_is_announced_once() {
        let mut s = State::for_tests(false);
        let alice = user(&mut s, "alice");
        let k = key(&mut s, Some(alice), true, &[]);
        let id = join(&mut s, 1, 1, &k);
        let now = OffsetDateTime::now_utc();
        let online = |s: &mut State, on: bool| {
            let mut fx = Effects::default();
            s.set_online(&mut fx, id, on, now);
            fx.changes
        };
        assert!(matches!(
            online(&mut s, true)[..],
            [Change::NodeOnline { online: true, .. }]
        ));
        assert!(online(&mut s, true).is_empty());
        assert!(s.node(id).unwrap().online);
        assert!(matches!(
            online(&mut s, false)[..],
            [Change::NodeOnline { online: false, .. }]
        ));
        let mut fx = Effects::default();
        s.set_online(&mut fx, 99, true, now);
        assert!(fx.changes.is_empty() && fx.ops.is_empty(), "unknown node");
    }
}
