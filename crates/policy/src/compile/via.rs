//! `via`: a grant's traffic to routed destinations goes through the routers it names by tag,
//! whichever router is primary for the prefix otherwise. A source that an ordinary rule also
//! lets reach the prefix keeps using the primary.

use super::{Compiled, NodeInfo, Rule};
use ipnet::IpNet;

/// Whether node `n` puts `rule` in its packet filter: any node for an ordinary rule; for a
/// `via` rule only the routers it names.
pub(super) fn carries(n: &NodeInfo, rule: &Rule) -> bool {
    rule.via.is_empty() || n.node.tags.iter().any(|t| rule.via.contains(t))
}

/// The router (node index) through which a `via` grant sends `viewer`'s traffic to `route`:
/// among the routers named by a `via` rule whose sources include `viewer` and whose
/// destinations overlap `route`, the one that registered first. `None` when no `via` rule
/// applies.
pub(super) fn router_for(c: &Compiled, viewer: &NodeInfo, route: &IpNet) -> Option<usize> {
    c.rules
        .iter()
        .filter(|r| !r.via.is_empty())
        .filter(|r| r.dst_union.overlaps_net(route))
        .filter(|r| viewer.ips.iter().any(|ip| r.src_set.contains(*ip)))
        .flat_map(|r| {
            c.nodes
                .iter()
                .enumerate()
                .filter(move |(_, n)| carries(n, r) && n.subnet_routes.contains(route))
        })
        .min_by_key(|(_, n)| n.node.id)
        .map(|(i, _)| i)
}
