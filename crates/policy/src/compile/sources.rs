//! A rule's sources: the `SrcIPs` the service writes for its aliases and the addresses they
//! match, narrowed by postures.

use super::push_unique;
use crate::ipset::IpSet;
use crate::policy::{Alias, AutoGroup};
use ipnet::IpNet;
use std::collections::HashSet;
use std::net::IpAddr;

/// A rule's sources: the entries the service writes in `SrcIPs`, the addresses they resolve
/// to, and the addresses a packet may come from (with `*`, also every approved subnet route).
#[derive(Default)]
pub(crate) struct Sources {
    pub(super) strings: Vec<String>,
    pub(super) set: IpSet,
    pub(super) matches: IpSet,
}

/// `None` when the aliases stand for no address at all.
pub(super) fn sources<'a>(
    aliases: impl IntoIterator<Item = &'a Alias>,
    approved_routes: &[IpNet],
    hosts: &HashSet<IpAddr>,
    resolve: &mut impl FnMut(&Alias) -> IpSet,
) -> Option<Sources> {
    let mut has_wild = false;
    let mut danger = false;
    let mut set = IpSet::new();
    let mut per_alias = Vec::new();
    for a in aliases {
        let s = resolve(a);
        set.union_with(&s);
        match a {
            Alias::Wildcard => has_wild = true,
            Alias::AutoGroup(AutoGroup::DangerAll) => {
                danger = true;
                per_alias.push(s);
            }
            _ => per_alias.push(s),
        }
    }
    if set.is_empty() {
        return None;
    }
    let strings = if danger {
        vec!["*".to_string()]
    } else {
        let mut v = set.to_strings_keeping_hosts(hosts);
        if has_wild {
            for rt in approved_routes {
                push_unique(&mut v, rt.to_string());
            }
            for s in &per_alias {
                for x in s.to_strings_keeping_hosts(hosts) {
                    push_unique(&mut v, x);
                }
            }
        }
        v
    };
    let mut matches = set.clone();
    if has_wild {
        approved_routes.iter().for_each(|rt| matches.push_net(rt));
        matches.normalize();
    }
    Some(Sources {
        strings,
        set,
        matches,
    })
}
