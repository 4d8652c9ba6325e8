//! Who sees whom, and which routes a viewer is told about through which peer.

use super::*;

impl Compiled {
    pub(super) fn words(&self) -> usize {
        self.nodes.len().div_ceil(64)
    }

    /// Whether node `n` is a source of `src` (by address or by a routed subnet).
    pub(super) fn in_src(&self, n: &NodeInfo, src: &IpSet) -> bool {
        n.ips.iter().any(|ip| src.contains(*ip))
            || n.subnet_routes.iter().any(|r| src.overlaps_net(r))
    }

    pub(super) fn in_dst(&self, n: &NodeInfo, dst: &IpSet, internet: &IpSet) -> bool {
        n.ips.iter().any(|ip| dst.contains(*ip))
            || n.subnet_routes.iter().any(|r| dst.overlaps_net(r))
            || (!n.exit_routes.is_empty() && internet.is_subset_of(dst))
    }

    pub(super) fn build_adjacency(&self) -> Vec<Vec<u64>> {
        let n = self.nodes.len();
        let w = self.words();
        let mut adj = vec![vec![0u64; w]; n];
        let internet = ipset::the_internet();
        let no_via: &[String] = &[];
        let pairs = self
            .rules
            .iter()
            .map(|r| (&r.src_set, &r.dst_union, r.via.as_slice()))
            .chain(self.cap_node_pairs().map(|(s, d)| (s, d, no_via)));
        for (src, dst, via) in pairs {
            let mut s = vec![0u64; w];
            let mut d = vec![0u64; w];
            let (mut s_idx, mut d_idx) = (vec![], vec![]);
            for (i, node) in self.nodes.iter().enumerate() {
                if self.in_src(node, src) {
                    bit_set(&mut s, i);
                    s_idx.push(i);
                }
                // Only the routers a `via` rule names carry it.
                let carries = via.is_empty() || node.node.tags.iter().any(|t| via.contains(t));
                if carries && self.in_dst(node, dst, &internet) {
                    bit_set(&mut d, i);
                    d_idx.push(i);
                }
            }
            if s_idx.is_empty() || d_idx.is_empty() {
                continue;
            }
            for &i in &s_idx {
                bit_or(&mut adj[i], &d);
            }
            for &i in &d_idx {
                bit_or(&mut adj[i], &s);
            }
        }
        let own_device_sources = self.self_rules.iter().map(|r| &r.src_set).chain(
            self.cap_rules
                .iter()
                .filter(|c| c.dst == CapDst::OwnDevices)
                .map(|c| &c.src_set),
        );
        for src_set in own_device_sources {
            for members in self.by_user.values() {
                let srcs: Vec<usize> = members
                    .iter()
                    .copied()
                    .filter(|&i| self.nodes[i].ips.iter().any(|ip| src_set.contains(*ip)))
                    .collect();
                if srcs.is_empty() {
                    continue;
                }
                for &s in &srcs {
                    for &d in members {
                        bit_set(&mut adj[s], d);
                        bit_set(&mut adj[d], s);
                    }
                }
            }
        }
        for (i, row) in adj.iter_mut().enumerate() {
            row[i / 64] &= !(1 << (i % 64));
        }
        adj
    }

    /// The router through which a `via` grant sends `viewer`'s traffic to `route`, when one
    /// does (a viewer with an ordinary rule to the prefix keeps using the primary).
    pub fn via_router(&self, viewer: NodeId, route: &IpNet) -> Option<NodeId> {
        let i = self.idx(viewer)?;
        let router = via::router_for(self, &self.nodes[i], route)?;
        let rules = self.self_rules_for(i);
        (!self.can_access_route(&self.nodes[i], &rules, route)).then(|| self.nodes[router].node.id)
    }

    pub(super) fn via_router_index(
        &self,
        viewer: usize,
        self_rules: &[Rule],
        route: &IpNet,
    ) -> Option<usize> {
        let v = &self.nodes[viewer];
        // The cheap question first: without a `via` rule for the prefix there is no router
        // to pick, whatever the ordinary rules say.
        let router = via::router_for(self, v, route)?;
        (!self.can_access_route(v, self_rules, route)).then_some(router)
    }

    /// (sources, destinations) of the `app` grants whose destinations are nodes.
    pub(super) fn cap_node_pairs(&self) -> impl Iterator<Item = (&IpSet, &IpSet)> {
        self.cap_rules.iter().filter_map(|c| match &c.dst {
            CapDst::Nodes(dst) => Some((&c.src_set, dst)),
            CapDst::OwnDevices => None,
        })
    }

    /// Whether the viewer may use `route` through a router, under rules `rules`.
    pub(super) fn can_access_route(
        &self,
        viewer: &NodeInfo,
        self_rules: &[Rule],
        route: &IpNet,
    ) -> bool {
        // `via` rules route through their own routers (`via::router_for`), not the primary.
        let mut pairs = self
            .rules
            .iter()
            .chain(self_rules)
            .filter(|r| r.via.is_empty())
            .map(|r| (&r.src_set, &r.dst_union))
            .chain(self.cap_node_pairs());
        pairs.any(|(src, dst)| {
            (viewer.ips.iter().any(|ip| src.contains(*ip)) && dst.overlaps_net(route))
                || (src.overlaps_net(route) && viewer.ips.iter().any(|ip| dst.contains(*ip)))
                || (viewer.subnet_routes.iter().any(|s| src.overlaps_net(s))
                    && dst.overlaps_net(route))
                || (src.overlaps_net(route)
                    && viewer.subnet_routes.iter().any(|s| dst.overlaps_net(s)))
        })
    }

    /// The peers `node` sees, sorted by id, with the addresses and routes it is told about.
    pub fn peers(&self, node: NodeId) -> Vec<PeerView> {
        let Some(i) = self.idx(node) else {
            return vec![];
        };
        let viewer = &self.nodes[i];
        let viewer_has_v4 = viewer.ips.iter().any(IpAddr::is_ipv4);
        let rules = self.self_rules_for(i);
        let mut out = Vec::new();
        for (j, peer) in self.nodes.iter().enumerate() {
            if !bit_get(&self.adjacency[i], j) {
                continue;
            }
            let mut routes: Vec<IpNet> = Vec::new();
            for r in peer.primary_routes.iter().chain(&peer.exit_routes) {
                let ok = self.can_access_route(viewer, &rules, r)
                    // A co-router of the prefix must learn who is primary for it.
                    || (!is_exit_route(r) && viewer.subnet_routes.contains(r));
                if ok {
                    routes.push(*r);
                }
            }
            // Routes a `via` grant sends through this peer rather than the primary.
            for r in &peer.subnet_routes {
                if !routes.contains(r) && self.via_router_index(i, &rules, r) == Some(j) {
                    routes.push(*r);
                }
            }
            // A node without IPv4 is told its peers' IPv6 addresses only.
            let mut allowed: Vec<IpNet> = peer
                .ips
                .iter()
                .filter(|ip| viewer_has_v4 || ip.is_ipv6())
                .map(|ip| host_net(*ip))
                .collect();
            allowed.extend(routes.iter().copied());
            allowed.sort();
            let primary: Vec<IpNet> = routes.into_iter().filter(|r| !is_exit_route(r)).collect();
            out.push(PeerView {
                id: peer.node.id,
                allowed_ips: allowed,
                primary_routes: primary,
            });
        }
        out.sort_by_key(|p| p.id);
        out
    }
}
