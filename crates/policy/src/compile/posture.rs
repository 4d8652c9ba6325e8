//! `srcPosture` in rules: sources narrowed to the nodes that meet one of the postures.

use super::{NodeInfo, Sources};
use crate::ipset::IpSet;
use crate::policy::PolicyDoc;
use crate::posture::Condition;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

/// The postures a rule's sources must meet one of: its own, or `defaultSrcPosture`.
pub(super) fn of_rule<'d>(doc: &'d PolicyDoc, own: &'d [String]) -> &'d [String] {
    if own.is_empty() {
        &doc.default_src_posture
    } else {
        own
    }
}

/// Per posture of the policy, the addresses of the nodes that meet it.
pub(super) fn addresses_meeting(doc: &PolicyDoc, nodes: &[NodeInfo]) -> HashMap<String, IpSet> {
    doc.postures
        .iter()
        .map(|(name, conds)| (name.clone(), nodes_meeting(conds, nodes)))
        .collect()
}

/// The addresses of the nodes that meet at least one of the postures `names`.
pub(super) fn union(postures: &HashMap<String, IpSet>, names: &[String]) -> IpSet {
    let mut set = IpSet::new();
    for name in names {
        if let Some(s) = postures.get(name) {
            set.union_with(s);
        }
    }
    set
}

impl super::Compiled {
    /// The addresses of the nodes that meet at least one of the postures `names`.
    pub(crate) fn posture_union(&self, names: &[String]) -> IpSet {
        union(&self.postures, names)
    }
}

/// The addresses of the nodes meeting every condition.
fn nodes_meeting(conditions: &[Condition], nodes: &[NodeInfo]) -> IpSet {
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
