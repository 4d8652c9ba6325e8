//! Subnet and exit routes: which advertised routes an administrator approved, and which
//! node is primary for a subnet several serve (HA). The primary stays while online, else
//! the lowest-id online router takes over; a node held for approval serves no one.

use std::collections::BTreeMap;
use std::sync::Arc;

use ipnet::IpNet;

use super::super::access::is_exit_route;
use super::super::effects::{Change, Effects};
use super::super::model::{Node, NodeId};
use super::{State, TailnetError, not_found};

impl State {
    /// Sets the approved routes. Approving either exit route approves both.
    pub fn approve_routes(
        &mut self,
        fx: &mut Effects,
        id: NodeId,
        routes: Vec<IpNet>,
    ) -> Result<Arc<Node>, TailnetError> {
        if !self.nodes.contains_key(&id) {
            return Err(not_found("node", id));
        }
        let mut approved: Vec<IpNet> = Vec::new();
        for r in routes {
            if r != r.trunc() {
                return Err(TailnetError::Invalid(format!(
                    "route {r} has host bits set (did you mean {}?)",
                    r.trunc()
                )));
            }
            if is_exit_route(&r) {
                for exit in ["0.0.0.0/0", "::/0"] {
                    let e: IpNet = exit.parse().expect("valid literal");
                    if !approved.contains(&e) {
                        approved.push(e);
                    }
                }
            } else if !approved.contains(&r) {
                approved.push(r);
            }
        }
        approved.sort();
        self.update_node(fx, id, |n| n.approved_routes = approved);
        fx.announce(Change::NodeUpserted(id));
        self.routes_changed(fx);
        Ok(self.nodes[&id].clone())
    }

    /// Route advertisement, approval or router presence changed: re-elect primaries and
    /// tell everyone (AllowedIPs and filters depend on them).
    pub(super) fn routes_changed(&mut self, fx: &mut Effects) {
        let before = self.primaries.clone();
        self.elect_primaries();
        let mut affected: Vec<NodeId> = before
            .values()
            .chain(self.primaries.values())
            .copied()
            .collect();
        affected.sort_unstable();
        affected.dedup();
        for id in affected {
            if self.nodes.contains_key(&id) {
                fx.announce(Change::NodeUpserted(id));
            }
        }
        fx.announce(Change::Visibility);
    }

    /// For each subnet route served by some node, the primary: the current primary while it
    /// stays online (no flapping back), else the lowest-id online server, else the lowest id.
    pub(super) fn elect_primaries(&mut self) {
        let mut servers: BTreeMap<IpNet, Vec<&Node>> = BTreeMap::new();
        // A node waiting for approval is nobody's peer: it cannot serve anyone a route.
        for n in self.nodes.values().filter(|n| n.approved) {
            for r in n.served_routes() {
                if !is_exit_route(&r) {
                    servers.entry(r).or_default().push(n);
                }
            }
        }
        let mut next = BTreeMap::new();
        for (route, candidates) in servers {
            let current = self
                .primaries
                .get(&route)
                .and_then(|id| candidates.iter().find(|n| n.id == *id && n.online));
            let pick = current
                .or_else(|| candidates.iter().filter(|n| n.online).min_by_key(|n| n.id))
                .or_else(|| candidates.iter().min_by_key(|n| n.id))
                .map(|n| n.id);
            if let Some(id) = pick {
                next.insert(route, id);
            }
        }
        self.primaries = next;
    }
}

/// Rules: a route is approved without host bits, either exit route approves both, and only
/// a route both advertised and approved is served; of the routers serving a subnet the
/// primary stays while online, else the lowest-id online one takes over (no flapping
/// back), else the lowest id.
#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use time::OffsetDateTime;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn only_routes_both_advertised_and_approved_are_served() {
        let mut s = State::for_tests(false);
        let alice = user(&mut s, "alice");
        let k = key(&mut s, Some(alice), true, &[]);
        let r = join(&mut s, 1, 1, &k);
        let mut fx = Effects::default();
        let lan = net("10.1.0.0/24");

        s.approve_routes(&mut fx, r, vec![lan]).unwrap();
        assert!(
            s.node(r).unwrap().served_routes().is_empty(),
            "not advertised"
        );
        assert!(s.primary_routes_of(r).is_empty());
        advertise(&mut s, r, &[lan]);
        assert_eq!(s.primary_routes_of(r), vec![lan]);
        assert_eq!(s.routers(), &[r]);

        let err = s
            .approve_routes(&mut fx, r, vec![net("10.1.0.1/24")])
            .unwrap_err();
        assert!(err.to_string().contains("host bits"), "{err}");
        assert_eq!(s.node(r).unwrap().approved_routes, vec![lan], "unchanged");

        let node = s
            .approve_routes(&mut fx, r, vec![lan, net("::/0")])
            .unwrap();
        assert_eq!(
            node.approved_routes,
            vec![net("0.0.0.0/0"), net("10.1.0.0/24"), net("::/0")]
        );
        s.approve_routes(&mut fx, r, vec![]).unwrap();
        assert!(s.primary_routes_of(r).is_empty(), "unapproved");
    }

    #[test]
    fn the_primary_stays_while_online_and_fails_over_to_an_online_router() {
        let mut s = State::for_tests(false);
        let alice = user(&mut s, "alice");
        let k = key(&mut s, Some(alice), true, &[]);
        let lan = net("10.1.0.0/24");
        let r1 = join(&mut s, 1, 1, &k);
        let r2 = join(&mut s, 2, 2, &k);
        let mut fx = Effects::default();
        for r in [r1, r2] {
            advertise(&mut s, r, &[lan]);
            s.approve_routes(&mut fx, r, vec![lan]).unwrap();
        }
        let now = OffsetDateTime::now_utc();
        let primary = |s: &State| {
            let p: Vec<NodeId> = [r1, r2]
                .into_iter()
                .filter(|r| s.primary_routes_of(*r) == vec![lan])
                .collect();
            assert_eq!(p.len(), 1, "one primary per route");
            p[0]
        };
        assert_eq!(primary(&s), r1, "nobody online: the lowest id");
        s.set_online(&mut fx, r2, true, now);
        assert_eq!(primary(&s), r2, "the online router takes over");
        s.set_online(&mut fx, r1, true, now);
        assert_eq!(primary(&s), r2, "no flapping back");
        s.set_online(&mut fx, r2, false, now);
        assert_eq!(primary(&s), r1, "fails over");
        s.delete_node(&mut fx, r1).unwrap();
        assert_eq!(primary(&s), r2, "the last router, even offline");
    }
}
