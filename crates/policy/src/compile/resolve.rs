//! Aliases (users, groups, tags, hosts, autogroups) to the addresses they stand for.

use super::NodeInfo;
use crate::ipset::{self, IpSet};
use crate::policy::{Alias, AutoGroup, PolicyDoc};
use crate::{User, UserId};

pub(crate) struct Resolver<'a> {
    pub doc: &'a PolicyDoc,
    pub users: &'a [User],
    pub nodes: &'a [NodeInfo],
}

impl Resolver<'_> {
    /// The user a `user@`/email token names: unique match on email or name.
    pub fn user_ids(&self, token: &str) -> Vec<UserId> {
        let t = token.trim();
        let trimmed = t.strip_suffix('@').unwrap_or(t);
        let m: Vec<UserId> = self
            .users
            .iter()
            .filter(|u| (!u.email.is_empty() && u.email == trimmed) || u.name == trimmed)
            .map(|u| u.id)
            .collect();
        if m.len() == 1 { m } else { vec![] }
    }

    pub fn domain_user_ids(&self, domain: &str) -> Vec<UserId> {
        self.users
            .iter()
            .filter(|u| {
                u.email
                    .rsplit_once('@')
                    .is_some_and(|(_, d)| d.eq_ignore_ascii_case(domain))
            })
            .map(|u| u.id)
            .collect()
    }

    fn add_user_nodes(&self, set: &mut IpSet, ids: &[UserId]) {
        for n in self.nodes {
            if !n.node.is_tagged() && n.node.user.is_some_and(|u| ids.contains(&u)) {
                for ip in &n.ips {
                    set.push_addr(*ip);
                }
            }
        }
    }

    /// The addresses an alias stands for. `autogroup:self` resolves to nothing here; it is
    /// handled per owner.
    pub fn resolve(&self, a: &Alias) -> IpSet {
        let mut s = IpSet::new();
        match a {
            Alias::Wildcard => return ipset::tailnet_wildcard(),
            Alias::User(u) => self.add_user_nodes(&mut s, &self.user_ids(u)),
            Alias::UserDomain(d) => self.add_user_nodes(&mut s, &self.domain_user_ids(d)),
            Alias::Group(g) => {
                let mut ids = Vec::new();
                for m in self.doc.groups.get(g).map(Vec::as_slice).unwrap_or(&[]) {
                    ids.extend(self.user_ids(m));
                }
                self.add_user_nodes(&mut s, &ids);
            }
            Alias::IdpGroup(g) => {
                let ids: Vec<UserId> = self
                    .users
                    .iter()
                    .filter(|u| u.idp_groups.iter().any(|x| x == g))
                    .map(|u| u.id)
                    .collect();
                self.add_user_nodes(&mut s, &ids);
            }
            Alias::Tag(t) => {
                for n in self.nodes {
                    if n.node.tags.iter().any(|x| x == t) {
                        n.ips.iter().for_each(|ip| s.push_addr(*ip));
                    }
                }
            }
            Alias::Host(h) => {
                if let Some(p) = self.doc.hosts.get(h) {
                    s.push_net(p);
                }
            }
            Alias::Prefix(p) => s.push_net(p),
            Alias::AutoGroup(AutoGroup::Member) => {
                for n in self.nodes.iter().filter(|n| !n.node.is_tagged()) {
                    n.ips.iter().for_each(|ip| s.push_addr(*ip));
                }
            }
            Alias::AutoGroup(AutoGroup::Tagged) => {
                for n in self.nodes.iter().filter(|n| n.node.is_tagged()) {
                    n.ips.iter().for_each(|ip| s.push_addr(*ip));
                }
            }
            Alias::AutoGroup(AutoGroup::Internet) => return ipset::the_internet(),
            Alias::AutoGroup(AutoGroup::DangerAll) => return ipset::all_ips(),
            Alias::AutoGroup(AutoGroup::SelfDevices | AutoGroup::NonRoot) => {}
        }
        s.normalize();
        s
    }

    pub fn resolve_all(&self, aliases: &[Alias]) -> IpSet {
        let mut s = IpSet::new();
        for a in aliases {
            s.union_with(&self.resolve(a));
        }
        s
    }
}
