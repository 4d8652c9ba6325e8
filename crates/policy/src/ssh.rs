//! `ssh` rules to the per-node `tailcfg.SSHPolicy`.

use crate::compile::{Compiled, Resolver};
use crate::policy::{Alias, AutoGroup, PolicyDoc, SshActionKind, SshUser};
use crate::{PolicyError, UserId};
use oxiscale_tailcfg::{SshAction, SshPolicy, SshPrincipal, SshRule};
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

fn principals(ips: &mut Vec<IpAddr>) -> Vec<SshPrincipal> {
    ips.sort_by_key(|ip| (ip.is_ipv6(), *ip));
    ips.dedup();
    ips.iter()
        .map(|ip| SshPrincipal {
            node_ip: ip.to_string(),
            ..Default::default()
        })
        .collect()
}

pub(crate) fn compile_ssh(
    doc: &PolicyDoc,
    c: &Compiled,
    control_url: &str,
) -> Result<Vec<Option<SshPolicy>>, PolicyError> {
    let Some(rules) = &doc.ssh else {
        return Ok(vec![None; c.nodes.len()]);
    };
    let r = Resolver {
        doc,
        users: &c.users,
        nodes: &c.nodes,
    };
    let mut out: Vec<Vec<SshRule>> = vec![Vec::new(); c.nodes.len()];
    for rule in rules {
        let mut src = r.resolve_all(&rule.src);
        if !rule.src_posture.is_empty() {
            src = src.intersect(&c.posture_union(&rule.src_posture));
        }
        if src.is_empty() {
            continue;
        }
        let action = match rule.action {
            SshActionKind::Accept => SshAction {
                accept: true,
                allow_agent_forwarding: true,
                allow_local_port_forwarding: true,
                allow_remote_port_forwarding: true,
                ..Default::default()
            },
            SshActionKind::Check => SshAction {
                hold_and_delegate: format!(
                    "{}/machine/ssh/action/$SRC_NODE_ID/to/$DST_NODE_ID?local_user=$LOCAL_USER",
                    control_url.trim_end_matches('/')
                ),
                ..Default::default()
            },
        };
        let mut base: BTreeMap<String, String> = BTreeMap::new();
        if rule.users.contains(&SshUser::NonRoot) {
            base.insert("*".into(), "=".into());
        }
        base.insert(
            "root".into(),
            if rule.users.contains(&SshUser::Root) {
                "root".into()
            } else {
                String::new()
            },
        );
        for u in &rule.users {
            if let SshUser::Named(n) = u {
                base.insert(n.clone(), n.clone());
            }
        }
        let localpart_domains: Vec<&str> = rule
            .users
            .iter()
            .filter_map(|u| {
                if let SshUser::Localpart(d) = u {
                    Some(d.as_str())
                } else {
                    None
                }
            })
            .collect();
        let has_localpart = !localpart_domains.is_empty();
        let mut localpart: HashMap<UserId, String> = HashMap::new();
        for d in &localpart_domains {
            for u in &c.users {
                if let Some((lp, dom)) = u.email.rsplit_once('@')
                    && dom.eq_ignore_ascii_case(d)
                {
                    localpart.insert(u.id, lp.to_string());
                }
            }
        }
        // Sources grouped by owner; tagged sources listed once per tag, as the service does.
        let mut by_user: BTreeMap<UserId, Vec<IpAddr>> = BTreeMap::new();
        let mut tagged: Vec<SshPrincipal> = Vec::new();
        for n in &c.nodes {
            if !n.ips.iter().any(|ip| src.contains(*ip)) {
                continue;
            }
            if n.node.is_tagged() {
                for _ in 0..n.node.tags.len().max(1) {
                    let mut ips = n.ips.clone();
                    tagged.extend(principals(&mut ips));
                }
            } else if let Some(u) = n.node.user {
                by_user.entry(u).or_default().extend(n.ips.iter().copied());
            }
        }
        let by_user: BTreeMap<UserId, Vec<SshPrincipal>> = by_user
            .into_iter()
            .map(|(u, mut ips)| (u, principals(&mut ips)))
            .collect();

        let make = |principals: Vec<SshPrincipal>, users: BTreeMap<String, String>| SshRule {
            principals,
            ssh_users: users,
            action: Some(action.clone()),
            accept_env: rule.accept_env.clone(),
            rule_expires: None,
        };
        let append = |dst: &mut Vec<SshRule>, p: &[SshPrincipal], uid: Option<UserId>| {
            dst.push(make(p.to_vec(), base.clone()));
            if let Some(lp) = uid.and_then(|u| localpart.get(&u)) {
                dst.push(make(p.to_vec(), [(lp.clone(), lp.clone())].into()));
            }
        };
        let has_self = rule.dst.contains(&Alias::AutoGroup(AutoGroup::SelfDevices));
        let others: Vec<Alias> = rule
            .dst
            .iter()
            .filter(|a| **a != Alias::AutoGroup(AutoGroup::SelfDevices))
            .cloned()
            .collect();
        let dst_set = r.resolve_all(&others);
        for (i, n) in c.nodes.iter().enumerate() {
            let rules_out = &mut out[i];
            if has_self
                && !n.node.is_tagged()
                && let Some(p) = n.node.user.and_then(|u| by_user.get(&u).map(|p| (u, p)))
            {
                append(rules_out, p.1, Some(p.0));
            }
            if others.is_empty() {
                continue;
            }
            if n.ips.iter().any(|ip| dst_set.contains(*ip)) {
                if has_localpart {
                    for (u, p) in &by_user {
                        append(rules_out, p, Some(*u));
                    }
                    if !tagged.is_empty() {
                        append(rules_out, &tagged, None);
                    }
                } else {
                    let mut all: Vec<SshPrincipal> = by_user.values().flatten().cloned().collect();
                    all.extend(tagged.iter().cloned());
                    if !all.is_empty() {
                        append(rules_out, &all, None);
                    }
                }
            } else if has_localpart && n.ips.iter().any(|ip| src.contains(*ip)) {
                if n.node.is_tagged() {
                    let mut ips = n.ips.clone();
                    let p = principals(&mut ips);
                    if !p.is_empty() {
                        append(rules_out, &p, None);
                    }
                } else if let Some(p) = n.node.user.and_then(|u| by_user.get(&u).map(|p| (u, p))) {
                    append(rules_out, p.1, Some(p.0));
                }
            }
        }
    }
    Ok(out
        .into_iter()
        .map(|mut rules| {
            // Checked rules first, so a stricter rule is never shadowed by a plain accept.
            rules.sort_by_key(|r| {
                r.action
                    .as_ref()
                    .is_none_or(|a| a.hold_and_delegate.is_empty())
            });
            Some(SshPolicy { rules })
        })
        .collect())
}
