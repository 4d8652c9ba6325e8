//! The packet filter a node is sent: the compiled rules reduced to the destinations it serves,
//! its owner's `autogroup:self` rules, and its capability grants.

use super::*;

impl Compiled {
    /// The `autogroup:self` rules for node `i` (its owner's devices); none for tagged nodes.
    pub(crate) fn self_rules_for(&self, i: usize) -> Vec<Rule> {
        let node = &self.nodes[i];
        match (node.node.is_tagged(), node.node.user) {
            (false, Some(u)) => self.self_rules_for_user(u),
            _ => vec![],
        }
    }

    pub(crate) fn self_rules_for_user(&self, u: UserId) -> Vec<Rule> {
        let mut out = Vec::new();
        let Some(members) = self.by_user.get(&u) else {
            return out;
        };
        for sr in &self.self_rules {
            let mut src = IpSet::new();
            for &m in members {
                let n = &self.nodes[m];
                if n.ips.iter().any(|ip| sr.src_set.contains(*ip)) {
                    n.ips.iter().for_each(|ip| src.push_addr(*ip));
                }
            }
            src.normalize();
            if src.is_empty() {
                continue;
            }
            for pp in &sr.ip {
                let mut dsts = Vec::new();
                for &m in members {
                    for p in &pp.ports {
                        for ip in &self.nodes[m].ips {
                            dsts.push(Dst {
                                ip: ip.to_string(),
                                set: IpSet::from_nets(&[host_net(*ip)]),
                                ports: *p,
                            });
                        }
                    }
                }
                if !dsts.is_empty() {
                    out.push(Rule::new(
                        src.to_strings_keeping_hosts(&self.hosts),
                        src.clone(),
                        pp.protos.clone(),
                        dsts,
                    ));
                }
            }
        }
        out
    }

    pub(super) fn keeps(&self, n: &NodeInfo, d: &Dst) -> bool {
        n.ips.iter().any(|ip| d.set.contains(*ip))
            || n.subnet_routes.iter().any(|r| d.set.overlaps_net(r))
            || (!n.exit_routes.is_empty() && d.set.is_subset_of(&self.internet))
    }

    /// The packet filter node `node` receives: rules reduced to destinations it serves.
    /// Unknown nodes get an empty filter (drop everything).
    pub fn packet_filter(&self, node: NodeId) -> Vec<FilterRule> {
        let Some(i) = self.idx(node) else {
            return vec![];
        };
        let n = &self.nodes[i];
        // Candidate (rule, destination) pairs, in rule order.
        let mut hits: Vec<(u32, u32)> = Vec::new();
        if n.subnet_routes.is_empty() && n.exit_routes.is_empty() {
            for ip in &n.ips {
                hits.extend(self.host_index.get(ip).into_iter().flatten());
            }
            hits.extend(
                self.wide
                    .iter()
                    .filter(|(r, d)| self.keeps(n, &self.rules[*r as usize].dsts[*d as usize])),
            );
        } else {
            // Routers: any destination may overlap a routed subnet.
            for (r, rule) in self.rules.iter().enumerate() {
                for (d, dst) in rule.dsts.iter().enumerate() {
                    if self.keeps(n, dst) {
                        hits.push((r as u32, d as u32));
                    }
                }
            }
        }
        hits.retain(|(r, _)| via::carries(n, &self.rules[*r as usize]));
        hits.sort_unstable();
        hits.dedup();
        // Rules with the same sources and protocols are merged, as the service sends them.
        let mut merged: Vec<FilterRule> = Vec::new();
        let mut slot: HashMap<u32, usize> = HashMap::new();
        let mut push = |key: u32, rule: &Rule, dst: &Dst| {
            let k = *slot.entry(key).or_insert_with(|| {
                merged.push(FilterRule {
                    src_ips: rule.src_strings.clone(),
                    ip_proto: rule.protos.clone(),
                    ..Default::default()
                });
                merged.len() - 1
            });
            merged[k].dst_ports.push(NetPortRange {
                ip: dst.ip.clone(),
                ports: dst.ports,
            });
        };
        for (r, d) in hits {
            let rule = &self.rules[r as usize];
            push(self.rule_keys[r as usize], rule, &rule.dsts[d as usize]);
        }
        let mut extra_keys: HashMap<MergeKey, u32> = HashMap::new();
        for rule in self.self_rules_for(i) {
            let mk = (rule.src_strings.clone(), rule.protos.clone());
            let key = match self.merge_keys.get(&mk) {
                Some(k) => *k,
                None => {
                    let next = u32::MAX - extra_keys.len() as u32;
                    *extra_keys.entry(mk).or_insert(next)
                }
            };
            for dst in rule.dsts.iter().filter(|d| self.keeps(n, d)) {
                push(key, &rule, dst);
            }
        }
        merged.extend(app::filter_rules(self, i));
        merged
    }
}
