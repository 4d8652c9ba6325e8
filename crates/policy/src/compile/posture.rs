//! `srcPosture` in rules: sources narrowed to the nodes that meet one of the postures.

use super::{NodeInfo, Sources};
use crate::ipset::IpSet;
use crate::policy::PolicyDoc;
use crate::posture::Condition;
use std::collections::HashSet;
use std::net::IpAddr;

/// The postures a rule's sources must meet one of: its own, or `defaultSrcPosture`.
pub(super) fn of_rule<'d>(doc: &'d PolicyDoc, own: &'d [String]) -> &'d [String] {
    if own.is_empty() {
        &doc.default_src_posture
    } else {
        own
    }
}

/// The addresses of the nodes meeting every condition.
pub(super) fn nodes_meeting(conditions: &[Condition], nodes: &[NodeInfo]) -> IpSet {
    let mut set = IpSet::new();
    for n in nodes {
        if conditions.iter().all(|c| c.holds(&n.node.attributes)) {
            n.ips.iter().for_each(|ip| set.push_addr(*ip));
        }
    }
    set.normalize();
    set
}

/// `src` narrowed to `allowed` (node addresses): a posture is a property of a device, so
/// routed subnets and addresses of no node never meet one.
pub(super) fn restrict(src: Sources, allowed: &IpSet, hosts: &HashSet<IpAddr>) -> Sources {
    let set = src.matches.intersect(allowed);
    Sources {
        strings: set.to_strings_keeping_hosts(hosts),
        matches: set.clone(),
        set,
    }
}
