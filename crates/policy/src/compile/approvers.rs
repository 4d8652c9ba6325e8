//! Who may own a tag and which routes autoApprovers approve for a node.

use super::{Resolver, is_exit_route};
use crate::policy::{Owner, PolicyDoc};
use crate::{Node, NodeId, TagRequester, Topology, UserId};
use ipnet::IpNet;
use std::collections::BTreeSet;

fn user_matches_owner(r: &Resolver, doc: &PolicyDoc, user: UserId, owner: &Owner) -> bool {
    match owner {
        Owner::User(u) => r.user_ids(u).contains(&user),
        Owner::UserDomain(d) => r.domain_user_ids(d).contains(&user),
        Owner::Group(g) => doc
            .groups
            .get(g)
            .is_some_and(|ms| ms.iter().any(|m| r.user_ids(m).contains(&user))),
        Owner::Tag(_) => false,
    }
}

fn node_matches_owners(r: &Resolver, doc: &PolicyDoc, node: &Node, owners: &[Owner]) -> bool {
    owners.iter().any(|o| match o {
        Owner::Tag(t) => node.tags.iter().any(|x| x == t),
        _ => !node.is_tagged() && node.user.is_some_and(|u| user_matches_owner(r, doc, u, o)),
    })
}

pub(crate) fn auto_approved_routes(doc: &PolicyDoc, topo: &Topology, node: NodeId) -> Vec<IpNet> {
    match topo.nodes.iter().find(|n| n.id == node) {
        Some(n) => auto_approved_for(doc, topo, n),
        None => vec![],
    }
}

pub(super) fn auto_approved_for(doc: &PolicyDoc, topo: &Topology, n: &Node) -> Vec<IpNet> {
    if doc.auto_routes.is_empty() && doc.auto_exit.is_empty() {
        return vec![];
    }
    let r = Resolver {
        doc,
        users: &topo.users,
        nodes: &[],
    };
    let mut out = Vec::new();
    for route in &n.routable_ips {
        let ok = if is_exit_route(route) {
            node_matches_owners(&r, doc, n, &doc.auto_exit)
        } else {
            doc.auto_routes.iter().any(|(p, owners)| {
                !is_exit_route(p) && p.contains(route) && node_matches_owners(&r, doc, n, owners)
            })
        };
        if ok {
            out.push(*route);
        }
    }
    out
}

/// Owners of `tag`, with tags that own it replaced by their own owners (cycles cut).
fn flattened_owners<'a>(
    doc: &'a PolicyDoc,
    tag: &str,
    seen: &mut BTreeSet<String>,
    out: &mut Vec<&'a Owner>,
) {
    if !seen.insert(tag.to_string()) {
        return;
    }
    for o in doc.tag_owners.get(tag).map(Vec::as_slice).unwrap_or(&[]) {
        out.push(o);
        if let Owner::Tag(t) = o {
            flattened_owners(doc, t, seen, out);
        }
    }
}

pub(crate) fn may_apply_tag(
    doc: &PolicyDoc,
    topo: &Topology,
    req: &TagRequester,
    tag: &str,
) -> bool {
    if !doc.tag_owners.contains_key(tag) {
        return false;
    }
    let mut owners = Vec::new();
    flattened_owners(doc, tag, &mut BTreeSet::new(), &mut owners);
    let r = Resolver {
        doc,
        users: &topo.users,
        nodes: &[],
    };
    match req {
        TagRequester::User(u) => owners.iter().any(|o| user_matches_owner(&r, doc, *u, o)),
        TagRequester::Tags(tags) => owners
            .iter()
            .any(|o| matches!(o, Owner::Tag(t) if tags.contains(t))),
    }
}
