//! `nodeAttrs` and `randomizeClientPort`: the capabilities each node is given, with those the
//! service adds alongside some of them.

use super::{NodeInfo, Resolver};
use crate::ipset::IpSet;
use crate::policy::PolicyDoc;
use std::net::IpAddr;

/// The node gets no IPv4 address: it is left out of its own addresses and its peers' maps.
pub(crate) const DISABLE_IPV4: &str = "disable-ipv4";
const RANDOMIZE_CLIENT_PORT: &str = "randomize-client-port";

/// Capabilities the service sends with another one.
const COMPANIONS: &[(&str, &[&str])] = &[(
    "funnel",
    &[
        "https://tailscale.com/cap/funnel-ports?ports=443,8443,10000",
        "https://tailscale.com/cap/warn-funnel-no-https",
    ],
)];

/// Per node (in `nodes` order), its capabilities, sorted and without duplicates.
pub(crate) fn node_attrs(r: &Resolver, doc: &PolicyDoc) -> Vec<Vec<String>> {
    let targets: Vec<IpSet> = doc
        .node_attrs
        .iter()
        .map(|na| r.resolve_all(&na.target))
        .collect();
    r.nodes
        .iter()
        .map(|n: &NodeInfo| {
            let mut attrs: Vec<String> = doc
                .node_attrs
                .iter()
                .zip(&targets)
                .filter(|(_, set)| n.ips.iter().any(|ip| set.contains(*ip)))
                .flat_map(|(na, _)| na.attr.iter().cloned())
                .collect();
            if doc.randomize_client_port {
                attrs.push(RANDOMIZE_CLIENT_PORT.into());
            }
            for (attr, companions) in COMPANIONS {
                if attrs.iter().any(|a| a == attr) {
                    attrs.extend(companions.iter().map(|c| c.to_string()));
                }
            }
            attrs.sort();
            attrs.dedup();
            attrs
        })
        .collect()
}

/// Takes the IPv4 address away from the nodes whose attributes say `disable-ipv4`.
pub(crate) fn apply_address_attrs(nodes: &mut [NodeInfo], attrs: &[Vec<String>]) {
    for (n, a) in nodes.iter_mut().zip(attrs) {
        if a.iter().any(|x| x == DISABLE_IPV4) {
            n.ips.retain(|ip| !matches!(ip, IpAddr::V4(_)));
        }
    }
}
