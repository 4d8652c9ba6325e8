//! Resolving a policy against a tailnet: aliases to address sets, ACLs and grants to filter
//! rules, and from those the per-node packet filter, peer set and routes.
//!
//! Everything that does not depend on the asking node is done once in [`compile`]; per-node
//! queries then only reduce the shared rule list (filter) or read a precomputed bitset (peers).

use crate::ipset::{self, IpSet};
use crate::policy::{Alias, AutoGroup, PolicyDoc, ProtoPorts};
use crate::{Node, NodeId, PolicyError, Topology, User, UserId};
use ipnet::IpNet;
use oxiscale_tailcfg::{FilterRule, NetPortRange, PortRange, SshPolicy};
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

mod app;
mod approvers;
mod attrs;
mod bits;
mod filter;
mod peers;
mod posture;
mod resolve;
mod sources;
mod via;

use app::{CapDst, CapRule};
use approvers::auto_approved_for;
pub(crate) use approvers::{auto_approved_routes, may_apply_tag};
use bits::{bit_get, bit_or, bit_set, bits_equal, common_runs};
pub(crate) use resolve::Resolver;
pub(crate) use sources::Sources;
use sources::sources;

/// One peer as a node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerView {
    pub id: NodeId,
    /// The peer's addresses (/32, /128) plus the routes this viewer may use through it.
    pub allowed_ips: Vec<IpNet>,
    /// Subnet routes the peer is primary for and this viewer may use (never exit routes).
    pub primary_routes: Vec<IpNet>,
}

/// A destination entry of a rule with its address set kept for matching.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Dst {
    pub ip: String,
    pub set: IpSet,
    pub ports: PortRange,
}

/// An unreduced filter rule.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Rule {
    pub src_strings: Vec<String>,
    pub src_set: IpSet,
    pub protos: Vec<u8>,
    pub dsts: Vec<Dst>,
    /// Union of the destination sets, for matching.
    pub dst_union: IpSet,
    /// A grant's `via`: only routers with one of these tags carry (and filter) the traffic.
    pub via: Vec<String>,
}

impl Rule {
    fn new(src_strings: Vec<String>, src_set: IpSet, protos: Vec<u8>, dsts: Vec<Dst>) -> Rule {
        let mut dst_union = IpSet::new();
        for d in &dsts {
            dst_union.union_with(&d.set);
        }
        Rule {
            src_strings,
            src_set,
            protos,
            dsts,
            dst_union,
            via: Vec::new(),
        }
    }
}

/// Rules with equal sources and protocols are sent as one rule; this names that class.
type MergeKey = (Vec<String>, Vec<u8>);

/// The `autogroup:self` half of a rule: resolved per owner.
#[derive(Debug, Clone)]
pub(crate) struct SelfRule {
    pub src_set: IpSet,
    pub ip: Vec<ProtoPorts>,
}

#[derive(Debug, Clone)]
pub(crate) struct NodeInfo {
    pub node: Node,
    pub ips: Vec<IpAddr>,
    /// Approved ∩ advertised, without exit routes.
    pub subnet_routes: Vec<IpNet>,
    /// Approved ∩ advertised exit routes.
    pub exit_routes: Vec<IpNet>,
    /// Subnet routes this node is the primary router for.
    pub primary_routes: Vec<IpNet>,
}

/// A policy resolved against one tailnet snapshot.
#[derive(Debug, Clone)]
pub struct Compiled {
    pub(crate) nodes: Vec<NodeInfo>,
    pub(crate) index: HashMap<NodeId, usize>,
    pub(crate) users: Vec<User>,
    pub(crate) rules: Vec<Rule>,
    /// Per rule, its merge class.
    rule_keys: Vec<u32>,
    merge_keys: HashMap<MergeKey, u32>,
    /// (rule, destination) pairs whose destination is exactly that one address.
    host_index: HashMap<IpAddr, Vec<(u32, u32)>>,
    /// (rule, destination) pairs with wider destinations (CIDRs, ranges, `*`).
    wide: Vec<(u32, u32)>,
    internet: IpSet,
    pub(crate) self_rules: Vec<SelfRule>,
    /// `app` grants, with the companions the service adds.
    pub(crate) cap_rules: Vec<CapRule>,
    /// Every node address: the service writes these one by one in `SrcIPs`.
    pub(crate) hosts: HashSet<IpAddr>,
    /// Per posture of the policy, the addresses of the nodes that meet it.
    pub(crate) postures: HashMap<String, IpSet>,
    /// Untagged nodes per owner, for `autogroup:self`.
    pub(crate) by_user: HashMap<UserId, Vec<usize>>,
    /// Per node, the nodes it can see, as a bitset over node indices.
    adjacency: Vec<Vec<u64>>,
    ssh: Vec<Option<SshPolicy>>,
    /// Per node, the `nodeAttrs` capabilities that target it (sorted, deduplicated).
    attrs: Vec<Vec<String>>,
}

pub(crate) fn is_exit_route(n: &IpNet) -> bool {
    n.prefix_len() == 0
}

fn host_net(ip: IpAddr) -> IpNet {
    IpNet::from(ip)
}

/// Renders a destination prefix as Tailscale does: bare address for a single host.
fn dst_ip_string(p: &IpNet) -> String {
    if p.prefix_len() == p.max_prefix_len() {
        p.addr().to_string()
    } else {
        p.to_string()
    }
}

fn node_infos(doc: &PolicyDoc, topo: &Topology) -> Vec<NodeInfo> {
    let mut infos: Vec<NodeInfo> = topo
        .nodes
        .iter()
        .map(|n| {
            // autoApprovers approve on the spot: a route they cover counts as approved even
            // before the server has recorded the approval.
            let auto = auto_approved_for(doc, topo, n);
            let mut ips = Vec::new();
            if let Some(v4) = n.ipv4 {
                ips.push(IpAddr::V4(v4));
            }
            if let Some(v6) = n.ipv6 {
                ips.push(IpAddr::V6(v6));
            }
            let approved: Vec<IpNet> = n
                .routable_ips
                .iter()
                .filter(|r| n.approved_routes.contains(r) || auto.contains(r))
                .copied()
                .collect();
            NodeInfo {
                node: n.clone(),
                ips,
                subnet_routes: approved
                    .iter()
                    .filter(|r| !is_exit_route(r))
                    .copied()
                    .collect(),
                exit_routes: approved
                    .iter()
                    .filter(|r| is_exit_route(r))
                    .copied()
                    .collect(),
                primary_routes: vec![],
            }
        })
        .collect();
    // Primary router per prefix: the earliest registered (lowest id) node serving it.
    let mut primary: HashMap<IpNet, (NodeId, usize)> = HashMap::new();
    for (i, n) in infos.iter().enumerate() {
        for r in &n.subnet_routes {
            let e = primary.entry(*r).or_insert((n.node.id, i));
            if n.node.id < e.0 {
                *e = (n.node.id, i);
            }
        }
    }
    for (r, (_, i)) in primary {
        infos[i].primary_routes.push(r);
    }
    for n in &mut infos {
        n.primary_routes.sort();
    }
    infos
}

struct Grantish<'a> {
    src: &'a [Alias],
    dst: Vec<&'a Alias>,
    ip: Vec<ProtoPorts>,
    app: &'a [(String, Vec<serde_json::Value>)],
    via: &'a [String],
    /// The postures a source must meet one of (none: any source).
    posture: &'a [String],
}

pub(crate) fn compile(
    doc: &PolicyDoc,
    topo: &Topology,
    control_url: &str,
) -> Result<Compiled, PolicyError> {
    let mut nodes = node_infos(doc, topo);
    // Attributes are decided on the nodes' addresses as assigned; then those they change.
    let node_attrs = attrs::node_attrs(
        &Resolver {
            doc,
            users: &topo.users,
            nodes: &nodes,
        },
        doc,
    );
    attrs::apply_address_attrs(&mut nodes, &node_attrs);
    let r = Resolver {
        doc,
        users: &topo.users,
        nodes: &nodes,
    };
    check_topology_refs(doc, topo)?;

    // Without `acls` and `grants` the service applies its default policy, `*` to `*:*`.
    let default_policy = doc.acls.is_none() && doc.grants.is_none();
    let wildcard = [Alias::Wildcard];
    let mut grants: Vec<Grantish> = Vec::new();
    if default_policy {
        grants.push(Grantish {
            src: &wildcard,
            dst: vec![&wildcard[0]],
            ip: vec![ProtoPorts {
                protos: vec![],
                ports: vec![PortRange::ANY],
            }],
            app: &[],
            via: &[],
            posture: &[],
        });
    }
    for g in doc.grants.iter().flatten() {
        grants.push(Grantish {
            src: &g.src,
            dst: g.dst.iter().collect(),
            ip: g.ip.clone(),
            app: &g.app,
            via: &g.via,
            posture: posture::of_rule(doc, &g.src_posture),
        });
    }
    for a in doc.acls.iter().flatten() {
        for d in &a.dst {
            grants.push(Grantish {
                src: &a.src,
                dst: vec![&d.alias],
                ip: vec![ProtoPorts {
                    protos: a.protos.clone(),
                    ports: d.ports.clone(),
                }],
                app: &[],
                via: &[],
                posture: posture::of_rule(doc, &a.src_posture),
            });
        }
    }

    // Approved subnet routes of the whole tailnet: `*` as a source includes them.
    let mut approved_routes: Vec<IpNet> = Vec::new();
    for n in &nodes {
        for rt in &n.subnet_routes {
            if !approved_routes.contains(rt) {
                approved_routes.push(*rt);
            }
        }
    }

    let hosts: HashSet<IpAddr> = nodes.iter().flat_map(|n| n.ips.iter().copied()).collect();
    // Each posture judged once per compile, whatever the number of rules naming it.
    let postures = posture::addresses_meeting(doc, &nodes);
    let mut rules = Vec::new();
    let mut self_rules = Vec::new();
    let mut cap_rules = Vec::new();
    // Aliases repeat across rules; resolve each once.
    let mut cache: HashMap<Alias, IpSet> = HashMap::new();
    let mut resolve = |a: &Alias| -> IpSet {
        cache
            .entry(a.clone())
            .or_insert_with(|| r.resolve(a))
            .clone()
    };
    for g in &grants {
        if g.src.is_empty() || g.dst.is_empty() {
            continue;
        }
        // An `app` grant whose sources are nobody still tells its destinations so.
        let src = match sources(g.src, &approved_routes, &hosts, &mut resolve) {
            Some(src) if g.posture.is_empty() => src,
            Some(src) => posture::restrict(src, &posture::union(&postures, g.posture), &hosts),
            None if !g.app.is_empty() => Sources::default(),
            None => continue,
        };
        let (self_dsts, other): (Vec<&Alias>, Vec<&Alias>) = g
            .dst
            .iter()
            .partition(|a| ***a == Alias::AutoGroup(AutoGroup::SelfDevices));
        if !self_dsts.is_empty() && !src.set.is_empty() {
            self_rules.push(SelfRule {
                src_set: src.set.clone(),
                ip: g.ip.clone(),
            });
        }
        if !g.app.is_empty() {
            if !self_dsts.is_empty() {
                cap_rules.extend(app::grant_rules(
                    g.app,
                    &src.strings,
                    &src.set,
                    &CapDst::OwnDevices,
                    None,
                ));
            }
            if !other.is_empty() {
                // As with `ip`, `*` stands for every address: routes included.
                let mut dst_set = IpSet::new();
                for a in &other {
                    match a {
                        Alias::Wildcard => dst_set.union_with(&ipset::all_ips()),
                        _ => dst_set.union_with(&resolve(a)),
                    }
                }
                let reverse = sources(
                    other.iter().copied(),
                    &approved_routes,
                    &hosts,
                    &mut resolve,
                )
                .map(|d| (d.strings, d.matches));
                cap_rules.extend(app::grant_rules(
                    g.app,
                    &src.strings,
                    &src.matches,
                    &CapDst::Nodes(dst_set),
                    reverse,
                ));
            }
        }
        for pp in g.ip.iter().filter(|_| !src.set.is_empty()) {
            let mut dsts = Vec::new();
            for a in &other {
                if **a == Alias::Wildcard {
                    for p in &pp.ports {
                        dsts.push(Dst {
                            ip: "*".into(),
                            set: ipset::all_ips(),
                            ports: *p,
                        });
                    }
                    continue;
                }
                let set = resolve(a);
                for pref in set.prefixes() {
                    let one = IpSet::from_nets(&[pref]);
                    for p in &pp.ports {
                        dsts.push(Dst {
                            ip: dst_ip_string(&pref),
                            set: one.clone(),
                            ports: *p,
                        });
                    }
                }
            }
            if !dsts.is_empty() {
                let mut rule = Rule::new(
                    src.strings.clone(),
                    src.matches.clone(),
                    pp.protos.clone(),
                    dsts,
                );
                rule.via = g.via.to_vec();
                rules.push(rule);
            }
        }
    }

    let mut by_user: HashMap<UserId, Vec<usize>> = HashMap::new();
    for (i, n) in nodes.iter().enumerate() {
        if let (false, Some(u)) = (n.node.is_tagged(), n.node.user) {
            by_user.entry(u).or_default().push(i);
        }
    }
    let index = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.node.id, i))
        .collect();
    // Destination index: single-host entries by address, everything else in `wide`.
    let mut host_index: HashMap<IpAddr, Vec<(u32, u32)>> = HashMap::new();
    let mut wide = Vec::new();
    let mut merge_keys: HashMap<MergeKey, u32> = HashMap::new();
    let mut rule_keys = Vec::with_capacity(rules.len());
    for (ri, rule) in rules.iter().enumerate() {
        let next = merge_keys.len() as u32;
        rule_keys.push(
            *merge_keys
                .entry((rule.src_strings.clone(), rule.protos.clone()))
                .or_insert(next),
        );
        for (di, d) in rule.dsts.iter().enumerate() {
            match single_host(&d.set) {
                Some(ip) => host_index
                    .entry(ip)
                    .or_default()
                    .push((ri as u32, di as u32)),
                None => wide.push((ri as u32, di as u32)),
            }
        }
    }
    let mut c = Compiled {
        nodes,
        index,
        users: topo.users.clone(),
        rules,
        rule_keys,
        merge_keys,
        host_index,
        wide,
        internet: ipset::the_internet(),
        self_rules,
        cap_rules,
        hosts,
        postures,
        by_user,
        adjacency: vec![],
        ssh: vec![],
        attrs: node_attrs,
    };
    c.adjacency = c.build_adjacency();
    c.ssh = crate::ssh::compile_ssh(doc, &c, control_url)?;
    Ok(c)
}

fn single_host(set: &IpSet) -> Option<IpAddr> {
    match set.prefixes().as_slice() {
        [p] if p.prefix_len() == p.max_prefix_len() => Some(p.addr()),
        _ => None,
    }
}

pub(super) fn push_unique(v: &mut Vec<String>, s: String) {
    if !v.contains(&s) {
        v.push(s);
    }
}

/// Checks the policy needs the tailnet for: `user:*@domain` and `localpart:*@domain` may only
/// name a domain of the tailnet.
fn check_topology_refs(doc: &PolicyDoc, topo: &Topology) -> Result<(), PolicyError> {
    let domains = tailnet_domains(topo);
    let check = |d: &str| -> Result<(), PolicyError> {
        if domains.iter().any(|x| x == d) {
            return Ok(());
        }
        let shown = if d.is_empty() { "*" } else { d };
        Err(PolicyError::msg(format!(
            "{shown} is not associated with this Tailnet and cannot be used in user:*@<domain> expressions"
        )))
    };
    for rule in doc.ssh.iter().flatten() {
        for a in rule.src.iter().chain(&rule.dst) {
            if let Alias::UserDomain(d) = a {
                check(d)?;
            }
        }
        for u in &rule.users {
            if let crate::policy::SshUser::Localpart(d) = u {
                check(d)?;
            }
        }
    }
    for a in doc.acls.iter().flatten() {
        for s in &a.src {
            if let Alias::UserDomain(d) = s {
                check(d)?;
            }
        }
    }
    Ok(())
}

/// The tailnet's own domain: that of its first user (the one who created it).
pub(crate) fn tailnet_domains(topo: &Topology) -> Vec<String> {
    topo.users
        .iter()
        .min_by_key(|u| u.id)
        .and_then(|u| u.email.rsplit_once('@').map(|(_, d)| d.to_string()))
        .into_iter()
        .collect()
}

impl Compiled {
    /// No policy at all: the service's default policy, every node may reach every node
    /// (`*` to `*:*`, so subnet routes are usable by everyone too).
    pub fn allow_all(topo: &Topology) -> Compiled {
        let doc = PolicyDoc::default();
        compile(&doc, topo, crate::DEFAULT_CONTROL_URL).expect("an empty policy always compiles")
    }

    pub(crate) fn idx(&self, id: NodeId) -> Option<usize> {
        self.index.get(&id).copied()
    }

    /// Whether the nodes compiled into both see the same peers among themselves here as in
    /// `other`. Nodes in only one of them (joined or left in between) are left out: who
    /// sees them is said by the change about them. Snapshots whose common nodes are
    /// in another relative order count as different (the caller then diffs everything).
    ///
    /// Costs O(n²/64 + n·k) for k nodes in only one snapshot: the common nodes form at most
    /// k + 1 runs of consecutive indices in both, compared a word at a time.
    pub fn same_peers_as(&self, other: &Compiled) -> bool {
        let Some(runs) = common_runs(&self.nodes, &other.index) else {
            return false;
        };
        runs.iter().all(|run| {
            (0..run.len).all(|k| {
                let (a, b) = (&self.adjacency[run.a + k], &other.adjacency[run.b + k]);
                runs.iter()
                    .all(|cols| bits_equal(a, cols.a, b, cols.b, cols.len))
            })
        })
    }

    /// Whether every node compiled into both, if it did not change itself, gets the same
    /// packet filter, SSH policy and `nodeAttrs` here as in `other`. A node's filter is the
    /// rules reduced to what it serves, so equal rules give it an equal filter; a node that
    /// changed (addresses, tags, routes) is told by the change about it. Conservative:
    /// with `autogroup:self` rules, whose sources follow each owner's devices, it says no.
    ///
    /// Under a policy like `* → *:*` a join recompiles to the same rules: nobody's filter
    /// changed, and no stream needs to be sent (or to compute) its filter again.
    pub fn same_filters_as(&self, other: &Compiled) -> bool {
        if !self.self_rules.is_empty()
            || !other.self_rules.is_empty()
            || self.rules != other.rules
            || self.cap_rules != other.cap_rules
        {
            return false;
        }
        self.nodes
            .iter()
            .enumerate()
            .all(|(i, n)| match other.idx(n.node.id) {
                Some(j) => self.ssh[i] == other.ssh[j] && self.attrs[i] == other.attrs[j],
                None => true,
            })
    }

    /// Whether every node sees every other node.
    pub fn everyone_sees_everyone(&self) -> bool {
        let n = self.nodes.len();
        self.adjacency.iter().enumerate().all(|(i, row)| {
            let seen: u32 = row.iter().map(|w| w.count_ones()).sum();
            seen as usize - usize::from(bit_get(row, i)) == n - 1
        })
    }

    /// Whether `a` has `b` in its netmap (symmetric).
    pub fn can_see(&self, a: NodeId, b: NodeId) -> bool {
        match (self.idx(a), self.idx(b)) {
            (Some(i), Some(j)) => bit_get(&self.adjacency[i], j),
            _ => false,
        }
    }

    /// The ids of the nodes `a` has in its netmap, in index order: `can_see(a, ·)` for
    /// every node at once, read off `a`'s row of the adjacency bitset. None for a node the
    /// policy does not know.
    pub fn seen_by(&self, a: NodeId) -> impl Iterator<Item = NodeId> + '_ {
        let row: &[u64] = self.idx(a).map_or(&[], |i| self.adjacency[i].as_slice());
        row.iter().enumerate().flat_map(move |(word, &bits)| {
            let mut rest = bits;
            std::iter::from_fn(move || {
                (rest != 0).then(|| {
                    let bit = rest.trailing_zeros() as usize;
                    rest &= rest - 1;
                    self.nodes[word * 64 + bit].node.id
                })
            })
        })
    }

    /// The SSH policy for `node`, `None` when the policy has no `ssh` section.
    pub fn ssh_policy(&self, node: NodeId) -> Option<SshPolicy> {
        self.idx(node)
            .and_then(|i| self.ssh.get(i).cloned().flatten())
    }

    /// The `nodeAttrs` capabilities (e.g. `funnel`, `magicdns-aaaa`) that apply to `node`.
    pub fn node_attrs(&self, node: NodeId) -> Vec<String> {
        self.idx(node)
            .map(|i| self.attrs[i].clone())
            .unwrap_or_default()
    }

    /// Whether the `nodeAttrs` give `node` the attribute `attr` (no copy of the list).
    pub fn has_node_attr(&self, node: NodeId, attr: &str) -> bool {
        self.idx(node)
            .is_some_and(|i| self.attrs[i].iter().any(|a| a == attr))
    }

    /// The node's own addresses, as the node is told them.
    pub fn self_addresses(&self, node: NodeId) -> Vec<IpNet> {
        self.idx(node)
            .map(|i| self.nodes[i].ips.iter().map(|ip| host_net(*ip)).collect())
            .unwrap_or_default()
    }

    /// Node ids in topology order.
    pub fn node_ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.nodes.iter().map(|n| n.node.id)
    }

    /// Whether `src` may open `proto`/`port` to `dst` (both tailnet or subnet addresses).
    pub(crate) fn allows(&self, src: IpAddr, dst: IpAddr, port: u16, proto: u8) -> bool {
        // The destination's owner's autogroup:self rules apply when dst is one of its devices.
        let own = match self.nodes.iter().position(|n| n.ips.contains(&dst)) {
            Some(i) => self.self_rules_for(i),
            None => vec![],
        };
        self.rules.iter().chain(&own).any(|r| {
            let proto_ok = if r.protos.is_empty() {
                matches!(proto, 6 | 17 | 1 | 58)
            } else {
                r.protos.contains(&proto)
            };
            proto_ok
                && r.src_set.contains(src)
                && r.dsts
                    .iter()
                    .any(|d| d.set.contains(dst) && d.ports.first <= port && port <= d.ports.last)
        })
    }
}

#[cfg(test)]
mod tests;
