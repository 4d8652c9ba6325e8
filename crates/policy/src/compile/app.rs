//! `app` grants: application capabilities a destination node learns about its sources.
//!
//! Each destination node gets, in its own packet filter, one rule per grant whose `CapGrant`
//! names the node's own addresses; its client then answers WhoIs for a source with those
//! capabilities. Some capabilities of Tailscale's own features come with a companion the
//! service grants the other way round (the sharer of a Taildrive, the target of a relay).

use super::Compiled;
use crate::ipset::IpSet;
use oxiscale_tailcfg::FilterRule;
use serde_json::{Map, Value, json};

/// Capabilities that come with a companion granted from the destinations to the sources.
const COMPANIONS: &[(&str, &str)] = &[
    ("tailscale.com/cap/drive", "tailscale.com/cap/drive-sharer"),
    ("tailscale.com/cap/relay", "tailscale.com/cap/relay-target"),
];

/// Where a capability rule's destinations are.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum CapDst {
    /// The nodes with an address in the set.
    Nodes(IpSet),
    /// `autogroup:self`: each person's own devices, toward their sources among those devices.
    OwnDevices,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CapRule {
    pub src_strings: Vec<String>,
    pub src_set: IpSet,
    pub dst: CapDst,
    pub caps: Map<String, Value>,
}

/// The capability rules of one grant: the grant itself and the companions it implies.
/// `reverse` gives the grant's destinations as sources (strings and set) when they are nodes.
pub(crate) fn grant_rules(
    app: &[(String, Vec<Value>)],
    src_strings: &[String],
    src_set: &IpSet,
    dst: &CapDst,
    reverse: Option<(Vec<String>, IpSet)>,
) -> Vec<CapRule> {
    let caps: Map<String, Value> = app
        .iter()
        .map(|(name, values)| (name.clone(), Value::Array(values.clone())))
        .collect();
    let mut out = vec![CapRule {
        src_strings: src_strings.to_vec(),
        src_set: src_set.clone(),
        dst: dst.clone(),
        caps,
    }];
    for (cap, companion) in COMPANIONS {
        if !app.iter().any(|(name, _)| name == cap) {
            continue;
        }
        let caps = Map::from_iter([(companion.to_string(), Value::Null)]);
        match (dst, &reverse) {
            (CapDst::OwnDevices, _) => out.push(CapRule {
                src_strings: src_strings.to_vec(),
                src_set: src_set.clone(),
                dst: CapDst::OwnDevices,
                caps,
            }),
            (CapDst::Nodes(_), Some((strings, set))) => out.push(CapRule {
                src_strings: strings.clone(),
                src_set: set.clone(),
                dst: CapDst::Nodes(src_set.clone()),
                caps,
            }),
            (CapDst::Nodes(_), None) => {}
        }
    }
    out
}

/// The capability rules in node `i`'s packet filter.
pub(crate) fn filter_rules(c: &Compiled, i: usize) -> Vec<FilterRule> {
    let nodes = &c.nodes;
    let me = &nodes[i];
    let own: Vec<String> = me
        .ips
        .iter()
        .map(|ip| ipnet::IpNet::from(*ip).to_string())
        .collect();
    let mut out = Vec::new();
    for rule in &c.cap_rules {
        let src_ips = match &rule.dst {
            CapDst::Nodes(set) if me.ips.iter().any(|ip| set.contains(*ip)) => {
                rule.src_strings.clone()
            }
            CapDst::Nodes(_) => continue,
            CapDst::OwnDevices => {
                let Some(members) = me.node.user.filter(|_| !me.node.is_tagged()) else {
                    continue;
                };
                let mut src = IpSet::new();
                for &m in c.by_user.get(&members).map(Vec::as_slice).unwrap_or(&[]) {
                    let n = &nodes[m];
                    if n.ips.iter().any(|ip| rule.src_set.contains(*ip)) {
                        n.ips.iter().for_each(|ip| src.push_addr(*ip));
                    }
                }
                src.normalize();
                if src.is_empty() {
                    continue;
                }
                src.to_strings_keeping_hosts(&c.hosts)
            }
        };
        out.push(FilterRule {
            src_ips,
            cap_grant: vec![json!({"Dsts": own, "CapMap": rule.caps})],
            ..Default::default()
        });
    }
    out
}
