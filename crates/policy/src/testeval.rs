//! The policy's own `tests` and `sshTests`: assertions evaluated when the policy is saved.
//! A failing or malformed test rejects the policy with "test(s) failed", as the service does.

use crate::compile::{Compiled, Resolver};
use crate::policy::{Alias, PolicyDoc, PolicyTest, SshTest, parse_alias, split_alias_ports};
use crate::{PolicyError, Topology};
use std::net::IpAddr;

/// Resolves a test's alias; `None` when it is unknown or names nobody.
fn resolve_alias(doc: &PolicyDoc, r: &Resolver, s: &str) -> Option<Vec<IpAddr>> {
    let a = parse_alias(s, &doc.hosts).ok()?;
    match &a {
        Alias::Group(g) if !doc.groups.contains_key(g) => return None,
        Alias::Tag(t) if !doc.tag_owners.contains_key(t) => return None,
        _ => {}
    }
    let set = r.resolve(&a);
    let ips = addrs(&set)?;
    if ips.is_empty() { None } else { Some(ips) }
}

/// Every address of a set that is made of single hosts; `None` if it holds a wider range.
fn addrs(set: &crate::IpSet) -> Option<Vec<IpAddr>> {
    let mut out = Vec::new();
    for p in set.prefixes() {
        if p.prefix_len() != p.max_prefix_len() {
            return None;
        }
        out.push(p.addr());
    }
    Some(out)
}

/// A test destination: `host:port` with a single port; the host a user, group, tag, host or
/// address that names single devices.
fn test_dst(doc: &PolicyDoc, r: &Resolver, s: &str) -> Option<(Vec<IpAddr>, u16)> {
    let (host, port) = split_alias_ports(s.trim()).ok()?;
    if !port.bytes().all(|b| b.is_ascii_digit()) || port.is_empty() {
        return None;
    }
    let port: u16 = port.parse().ok()?;
    if host.contains('/') {
        return None;
    }
    let a = parse_alias(host, &doc.hosts).ok()?;
    if matches!(a, Alias::Wildcard | Alias::AutoGroup(_)) {
        return None;
    }
    Some((resolve_alias(doc, r, host)?, port))
}

fn run_one(doc: &PolicyDoc, r: &Resolver, c: &Compiled, t: &PolicyTest) -> bool {
    if t.accept.is_empty() && t.deny.is_empty() {
        return false;
    }
    let Some(srcs) = resolve_alias(doc, r, &t.src) else {
        return false;
    };
    let protos: Vec<u8> = if t.protos.is_empty() {
        vec![6]
    } else {
        t.protos.clone()
    };
    for (list, want) in [(&t.accept, true), (&t.deny, false)] {
        for d in list {
            let Some((dsts, port)) = test_dst(doc, r, d) else {
                return false;
            };
            for s in &srcs {
                for dst in &dsts {
                    for p in &protos {
                        if c.allows(*s, *dst, port, *p) != want {
                            return false;
                        }
                    }
                }
            }
        }
    }
    true
}

fn run_ssh_one(doc: &PolicyDoc, r: &Resolver, c: &Compiled, t: &SshTest) -> bool {
    let Some(srcs) = resolve_alias(doc, r, &t.src) else {
        return false;
    };
    if t.dst.is_empty() {
        return false;
    }
    for d in &t.dst {
        let Some(dst_ips) = resolve_alias(doc, r, d) else {
            return false;
        };
        for n in c
            .nodes
            .iter()
            .filter(|n| n.ips.iter().any(|ip| dst_ips.contains(ip)))
        {
            let pol = c.ssh_policy(n.node.id).unwrap_or_default();
            // The first rule matching the source and mapping the user decides.
            let verdict = |user: &str, ip: &IpAddr| -> Option<bool> {
                for rule in &pol.rules {
                    if !rule
                        .principals
                        .iter()
                        .any(|p| p.any || p.node_ip == ip.to_string())
                    {
                        continue;
                    }
                    let mapped = rule.ssh_users.get(user).or_else(|| rule.ssh_users.get("*"));
                    if mapped.is_some_and(|m| !m.is_empty()) {
                        let a = rule.action.clone().unwrap_or_default();
                        return Some(a.hold_and_delegate.is_empty());
                    }
                }
                None
            };
            for ip in &srcs {
                for u in &t.accept {
                    if verdict(u, ip) != Some(true) {
                        return false;
                    }
                }
                for u in &t.check {
                    if verdict(u, ip) != Some(false) {
                        return false;
                    }
                }
                for u in &t.deny {
                    if verdict(u, ip).is_some() {
                        return false;
                    }
                }
            }
        }
    }
    true
}

pub(crate) fn run_tests(doc: &PolicyDoc, topo: &Topology, c: &Compiled) -> Result<(), PolicyError> {
    let r = Resolver {
        doc,
        users: &topo.users,
        nodes: &c.nodes,
    };
    let mut failed = Vec::new();
    let mut first: Option<(u32, u32)> = None;
    for t in &doc.tests {
        if !run_one(doc, &r, c, t) {
            first.get_or_insert((t.line, t.col));
            failed.push(format!(
                "tests entry at line {}, column {} (src {:?})",
                t.line, t.col, t.src
            ));
        }
    }
    for t in &doc.ssh_tests {
        if !run_ssh_one(doc, &r, c, t) {
            first.get_or_insert((t.line, t.col));
            failed.push(format!(
                "sshTests entry at line {}, column {} (src {:?})",
                t.line, t.col, t.src
            ));
        }
    }
    match first {
        None => Ok(()),
        // Point at the first failing entry; the message lists them all.
        Some((line, col)) => Err(PolicyError::at(
            line,
            col,
            format!("test(s) failed: {}", failed.join("; ")),
        )),
    }
}
