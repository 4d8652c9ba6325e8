//! Rules of the compiler, one test each.

use crate::{Node, Policy, TagRequester, Topology, User};

fn topo() -> Topology {
    let user = |id, name: &str, email: &str| User {
        id,
        name: name.into(),
        email: email.into(),
        idp_groups: vec![],
    };
    let node = |id, name: &str, user: Option<u64>, tags: &[&str], v4: &str, routes: &[&str]| Node {
        id,
        name: name.into(),
        user,
        tags: tags.iter().map(|t| t.to_string()).collect(),
        ipv4: Some(v4.parse().unwrap()),
        ipv6: Some(format!("fd7a:115c:a1e0::{}", id * 10).parse().unwrap()),
        routable_ips: routes.iter().map(|r| r.parse().unwrap()).collect(),
        approved_routes: vec![],
        stable_id: format!("n{id}"),
        attributes: Default::default(),
    };
    Topology {
        users: vec![
            user(1, "alice", "alice@example.com"),
            user(2, "bob", "bob@example.com"),
        ],
        nodes: vec![
            node(1, "alice-laptop", Some(1), &[], "100.64.0.10", &[]),
            node(2, "alice-phone", Some(1), &[], "100.64.0.20", &[]),
            node(3, "bob-laptop", Some(2), &[], "100.64.0.30", &[]),
            node(4, "server", None, &["tag:server"], "100.64.0.40", &[]),
            node(
                5,
                "router",
                None,
                &["tag:router"],
                "100.64.0.50",
                &["10.0.0.0/24", "0.0.0.0/0", "::/0"],
            ),
        ],
    }
}

const POLICY: &str = r#"{
    // who is who
    "groups": {"group:eng": ["alice@example.com"]},
    "tagOwners": {"tag:server": ["group:eng"], "tag:router": ["tag:server"]},
    "acls": [
        {"action": "accept", "src": ["group:eng"], "dst": ["tag:server:22,443"]},
        {"action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:self:*"]},
        {"action": "accept", "src": ["bob@"], "dst": ["10.0.0.0/24:80"]},
    ],
    "autoApprovers": {"routes": {"10.0.0.0/16": ["tag:router"]}, "exitNode": ["tag:server"]},
}"#;

#[test]
fn idp_groups_name_the_people_their_provider_put_in_them() {
    let mut t = topo();
    t.users[1].idp_groups = vec!["engineering".into(), "/corp/ops".into()];
    let compile = |t: &Topology, src: &str| {
        let text = format!(
            r#"{{"tagOwners": {{"tag:server": []}},
                "acls": [{{"action": "accept", "src": ["{src}"], "dst": ["tag:server:22"]}}]}}"#
        );
        Policy::parse(&text).unwrap().compile(t).unwrap()
    };
    for src in ["idpgroup:engineering", "idpgroup:/corp/ops"] {
        let c = compile(&t, src);
        assert!(c.can_see(4, 3), "{src}: bob's laptop reaches the server");
        assert!(!c.can_see(4, 1), "{src}: alice is not in the group");
    }
    assert!(!compile(&t, "idpgroup:sales").can_see(4, 3));
    // A `group:` of the same name is another thing, and must be defined.
    assert!(
        Policy::parse(
            r#"{"acls": [{"action": "accept", "src": ["group:engineering"], "dst": ["*:*"]}]}"#
        )
        .is_err()
    );
    // Leaving the group at the provider (and signing in again) takes access away.
    t.users[1].idp_groups.clear();
    assert!(!compile(&t, "idpgroup:engineering").can_see(4, 3));
    assert!(
        Policy::parse(r#"{"acls": [{"action": "accept", "src": ["idpgroup:"], "dst": ["*:*"]}]}"#)
            .is_err()
    );
}

#[test]
fn same_peers_compares_who_sees_whom_not_ports() {
    let t = topo();
    let compile = |acl: &str| {
        let text = format!(r#"{{"acls": [{{"action": "accept", {acl}}}]}}"#);
        Policy::parse(&text).unwrap().compile(&t).unwrap()
    };
    let ssh = compile(r#""src": ["*"], "dst": ["*:22"]"#);
    let web = compile(r#""src": ["*"], "dst": ["*:80,443"]"#);
    let alice = compile(r#""src": ["alice@example.com"], "dst": ["*:22"]"#);
    assert!(ssh.everyone_sees_everyone());
    assert!(ssh.same_peers_as(&web), "other ports, same peers");
    assert!(
        !alice.everyone_sees_everyone(),
        "bob and the server do not meet"
    );
    assert!(!ssh.same_peers_as(&alice));
}

/// Nodes with these ids: odd ones bob's, even ones alice's, addresses in id order.
fn many(ids: impl IntoIterator<Item = u64>) -> Topology {
    let mut t = topo();
    t.nodes = ids
        .into_iter()
        .map(|id| Node {
            id,
            name: format!("n{id}"),
            user: Some(1 + id % 2),
            tags: vec![],
            ipv4: Some(std::net::Ipv4Addr::from(0x6440_0000 + id as u32)),
            ipv6: None,
            routable_ips: vec![],
            approved_routes: vec![],
            stable_id: format!("n{id}"),
            attributes: Default::default(),
        })
        .collect();
    t
}

#[test]
fn same_peers_leaves_out_nodes_that_joined_or_left() {
    let policy = Policy::parse(
        r#"{"acls": [{"action": "accept", "src": ["alice@example.com"], "dst": ["bob@example.com:*"]}]}"#,
    )
    .unwrap();
    // Runs that start and end inside words and cross word boundaries.
    let before = policy.compile(&many(1..=150)).unwrap();
    let after = policy
        .compile(&many((1..=152).filter(|id| ![10, 64, 80].contains(id))))
        .unwrap();
    assert!(!before.everyone_sees_everyone());
    assert!(before.same_peers_as(&after) && after.same_peers_as(&before));
    assert!(
        before.can_see(1, 2) && !before.can_see(1, 3),
        "the policy bites"
    );

    // Node 101 moves from bob to alice: it now meets bob's nodes, not alice's.
    let mut moved = many(1..=150);
    assert_eq!(moved.nodes[100].user, Some(2));
    moved.nodes[100].user = Some(1);
    let moved = policy.compile(&moved).unwrap();
    assert!(!before.same_peers_as(&moved) && !moved.same_peers_as(&before));

    // The same nodes in another order: not judged, said to differ.
    let mut shuffled = many(1..=150);
    shuffled.nodes.swap(3, 120);
    let shuffled = policy.compile(&shuffled).unwrap();
    assert!(!before.same_peers_as(&shuffled));
}

#[test]
fn same_filters_when_a_join_leaves_the_rules_as_they_were() {
    let compile = |policy: &str, t: &Topology| Policy::parse(policy).unwrap().compile(t).unwrap();
    let everyone = r#"{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}"#;
    let (before, after) = (many(1..=20), many(1..=21));
    let (a, b) = (compile(everyone, &before), compile(everyone, &after));
    assert!(a.same_filters_as(&b) && b.same_filters_as(&a));
    assert_eq!(a.packet_filter(3), b.packet_filter(3));

    // Sources that list alice's nodes: node 22 is hers, so everyone's filter changes.
    let from_alice =
        r#"{"acls": [{"action": "accept", "src": ["alice@example.com"], "dst": ["*:*"]}]}"#;
    let (a, b) = (
        compile(from_alice, &before),
        compile(from_alice, &many(1..=22)),
    );
    assert!(!a.same_filters_as(&b));
    assert_ne!(a.packet_filter(3), b.packet_filter(3), "the test means it");
    // Node 21 is bob's: alice's list stays.
    assert!(a.same_filters_as(&compile(from_alice, &after)));

    // An SSH rule towards bob's nodes: node 21's policy is new, the others' are not.
    let ssh = r#"{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}],
        "ssh": [{"action": "accept", "src": ["alice@example.com"], "dst": ["bob@example.com"], "users": ["root"]}]}"#;
    assert!(compile(ssh, &before).same_filters_as(&compile(ssh, &after)));
    let other_users = ssh.replace(r#"["root"]"#, r#"["admin"]"#);
    assert!(!compile(ssh, &before).same_filters_as(&compile(&other_users, &before)));

    // `autogroup:self` sources follow each owner's devices: never judged the same.
    let own = r#"{"acls": [{"action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:self:*"]}]}"#;
    assert!(!compile(own, &before).same_filters_as(&compile(own, &before)));
}

#[test]
fn bit_ranges_compare_at_any_offset() {
    let a = [0xdead_beef_0123_4567u64, 0x89ab_cdef_fedc_ba98, 0x0f0f];
    // `b` holds `a`'s bits 5.. from bit 70 on.
    let mut b = [0u64; 4];
    for i in 5..(64 * 3) {
        if super::bit_get(&a, i) {
            super::bit_set(&mut b, i - 5 + 70);
        }
    }
    assert!(super::bits_equal(&a, 5, &b, 70, 64 * 3 - 5));
    assert!(super::bits_equal(&a, 9, &b, 74, 100));
    super::bit_set(&mut b, 70 + 99);
    let flipped_bit_was_set = super::bit_get(&a, 5 + 99);
    assert_eq!(super::bits_equal(&a, 5, &b, 70, 100), flipped_bit_was_set);
    assert!(
        super::bits_equal(&a, 5, &b, 70, 99),
        "the range ends before it"
    );
}

#[test]
fn groups_and_tags_resolve_to_node_addresses() {
    let c = Policy::parse(POLICY).unwrap().compile(&topo()).unwrap();
    let f = c.packet_filter(4);
    assert_eq!(f.len(), 1);
    assert_eq!(
        f[0].src_ips,
        vec![
            "100.64.0.10",
            "100.64.0.20",
            "fd7a:115c:a1e0::10",
            "fd7a:115c:a1e0::20"
        ]
    );
    let ports: Vec<(String, u16)> = f[0]
        .dst_ports
        .iter()
        .map(|d| (d.ip.clone(), d.ports.first))
        .collect();
    assert_eq!(ports.len(), 4);
    assert!(ports.contains(&("100.64.0.40".into(), 443)));
    assert!(c.can_see(1, 4) && c.can_see(4, 1));
    assert!(!c.can_see(3, 4));
}

#[test]
fn autogroup_self_stays_within_one_owner() {
    let c = Policy::parse(POLICY).unwrap().compile(&topo()).unwrap();
    let f = c.packet_filter(2);
    assert_eq!(f.len(), 1);
    assert_eq!(
        f[0].src_ips,
        vec![
            "100.64.0.10",
            "100.64.0.20",
            "fd7a:115c:a1e0::10",
            "fd7a:115c:a1e0::20"
        ]
    );
    assert!(
        f[0].dst_ports
            .iter()
            .all(|d| d.ip == "100.64.0.20" || d.ip == "fd7a:115c:a1e0::20")
    );
    assert!(c.can_see(1, 2));
    assert!(!c.can_see(2, 3));
    assert!(
        c.packet_filter(4)
            .iter()
            .all(|r| !r.src_ips.contains(&"100.64.0.30".to_string()))
    );
}

#[test]
fn auto_approved_subnet_routes_are_routed_and_filtered() {
    let p = Policy::parse(POLICY).unwrap();
    let t = topo();
    assert_eq!(
        p.auto_approved_routes(&t, 5),
        vec!["10.0.0.0/24".parse().unwrap()]
    );
    let c = p.compile(&t).unwrap();
    let f = c.packet_filter(5);
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].dst_ports[0].ip, "10.0.0.0/24");
    let peers = c.peers(3);
    let router = peers
        .iter()
        .find(|p| p.id == 5)
        .expect("bob sees the router");
    assert_eq!(router.primary_routes, vec!["10.0.0.0/24".parse().unwrap()]);
    assert!(router.allowed_ips.contains(&"10.0.0.0/24".parse().unwrap()));
    // Alice may not use the subnet, so she does not see the router at all.
    assert!(!c.can_see(1, 5));
}

#[test]
fn tag_ownership_follows_tags_owning_tags() {
    let p = Policy::parse(POLICY).unwrap();
    let t = topo();
    assert!(p.may_apply_tag(&t, &TagRequester::User(1), "tag:server"));
    assert!(p.may_apply_tag(&t, &TagRequester::User(1), "tag:router"));
    assert!(!p.may_apply_tag(&t, &TagRequester::User(2), "tag:server"));
    assert!(p.may_apply_tag(
        &t,
        &TagRequester::Tags(vec!["tag:server".into()]),
        "tag:router"
    ));
    assert!(!p.may_apply_tag(&t, &TagRequester::User(1), "tag:unknown"));
}

#[test]
fn no_policy_is_allow_all() {
    let c = crate::Compiled::allow_all(&topo());
    assert!(c.can_see(1, 3) && c.can_see(4, 5));
    let f = c.packet_filter(3);
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].dst_ports[0].ip, "*");
    assert!(f[0].src_ips.contains(&"fd7a:115c:a1e0::/48".to_string()));
    assert!(c.ssh_policy(1).is_none());
}

#[test]
fn failing_tests_reject_the_policy() {
    let t = topo();
    let ok = r#"{"acls": [{"action": "accept", "src": ["bob@"], "dst": ["alice@:22"]}],
                 "tests": [{"src": "bob@", "accept": ["alice@:22"], "deny": ["alice@:80"]}]}"#;
    assert!(Policy::parse(ok).unwrap().compile(&t).is_ok());
    let bad = r#"{"acls": [{"action": "accept", "src": ["bob@"], "dst": ["alice@:22"]}],
                  "tests": [{"src": "alice@", "accept": ["bob@:22"]}]}"#;
    let e = Policy::parse(bad).unwrap().compile(&t).unwrap_err();
    assert!(e.message.starts_with("test(s) failed"), "{e}");
}

#[test]
fn ssh_rules_reach_destination_nodes_only() {
    let p = Policy::parse(
        r#"{"tagOwners": {"tag:server": []},
            "ssh": [{"action": "check", "src": ["alice@example.com"], "dst": ["tag:server"],
                     "users": ["autogroup:nonroot"]}]}"#,
    )
    .unwrap();
    let c = p.compile_with_url(&topo(), "https://ctl.example").unwrap();
    let pol = c.ssh_policy(4).unwrap();
    assert_eq!(pol.rules.len(), 1);
    let r = &pol.rules[0];
    assert_eq!(r.principals.len(), 4);
    assert_eq!(r.ssh_users.get("*").map(String::as_str), Some("="));
    assert_eq!(r.ssh_users.get("root").map(String::as_str), Some(""));
    assert!(
        r.action
            .as_ref()
            .unwrap()
            .hold_and_delegate
            .starts_with("https://ctl.example/machine/ssh/action/")
    );
    assert!(c.ssh_policy(1).unwrap().rules.is_empty());
}

#[test]
fn node_attrs_reach_their_targets() {
    let p = Policy::parse(
        r#"{"tagOwners": {"tag:server": []},
            "nodeAttrs": [{"target": ["tag:server"], "attr": ["funnel"]},
                          {"target": ["autogroup:member"], "attr": ["magicdns-aaaa"]}]}"#,
    )
    .unwrap();
    let c = p.compile(&topo()).unwrap();
    assert_eq!(
        c.node_attrs(4),
        [
            "funnel",
            "https://tailscale.com/cap/funnel-ports?ports=443,8443,10000",
            "https://tailscale.com/cap/warn-funnel-no-https"
        ]
    );
    assert_eq!(c.node_attrs(1), vec!["magicdns-aaaa"]);
}

#[test]
fn ssh_tests_are_evaluated() {
    let base = r#""tagOwners": {"tag:server": []},
        "ssh": [{"action": "accept", "src": ["alice@example.com"], "dst": ["tag:server"], "users": ["ubuntu"]}]"#;
    let ok = format!(
        r#"{{{base}, "sshTests": [{{"src": "alice@example.com", "dst": ["tag:server"], "accept": ["ubuntu"], "deny": ["root"]}}]}}"#
    );
    assert!(Policy::parse(&ok).unwrap().compile(&topo()).is_ok());
    let bad = format!(
        r#"{{{base}, "sshTests": [{{"src": "bob@example.com", "dst": ["tag:server"], "accept": ["ubuntu"]}}]}}"#
    );
    assert!(Policy::parse(&bad).unwrap().compile(&topo()).is_err());
}

#[test]
fn error_display_names_the_position() {
    let e = Policy::parse("{\n  \"acls\": [\n    {\"action\": \"accept\", \"src\": [\"group:nope\"], \"dst\": [\"*:*\"]}\n  ]\n}")
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "line 3, column 34: src: group not found: \"group:nope\""
    );
}

#[test]
fn app_grants_tell_each_destination_its_sources_capabilities() {
    let p = Policy::parse(
        r#"{"tagOwners": {"tag:server": []},
            "grants": [{"src": ["bob@example.com"], "dst": ["tag:server"],
                        "app": {"example.com/cap/web": [{"role": "admin"}]}}]}"#,
    )
    .unwrap();
    let c = p.compile(&topo()).unwrap();
    let filter = c.packet_filter(4);
    assert_eq!(filter.len(), 1, "{filter:?}");
    assert_eq!(filter[0].src_ips, ["100.64.0.30", "fd7a:115c:a1e0::30"]);
    assert!(filter[0].dst_ports.is_empty());
    assert_eq!(
        filter[0].cap_grant,
        [serde_json::json!({
            "Dsts": ["100.64.0.40/32", "fd7a:115c:a1e0::40/128"],
            "CapMap": {"example.com/cap/web": [{"role": "admin"}]},
        })]
    );
    // Only the destination learns the capability; source and destination see each other.
    assert!(c.packet_filter(3).is_empty());
    assert!(c.can_see(3, 4) && c.can_see(4, 3));
    assert!(!c.can_see(1, 4));
}

#[test]
fn a_taildrive_grant_makes_the_destinations_sharers_toward_the_sources() {
    let p = Policy::parse(
        r#"{"tagOwners": {"tag:server": []},
            "grants": [{"src": ["bob@example.com"], "dst": ["tag:server"],
                        "app": {"tailscale.com/cap/drive": [{"shares": ["*"], "access": "ro"}]}}]}"#,
    )
    .unwrap();
    let c = p.compile(&topo()).unwrap();
    let bob = c.packet_filter(3);
    assert_eq!(bob.len(), 1, "{bob:?}");
    assert_eq!(bob[0].src_ips, ["100.64.0.40", "fd7a:115c:a1e0::40"]);
    assert_eq!(
        bob[0].cap_grant[0]["CapMap"],
        serde_json::json!({"tailscale.com/cap/drive-sharer": null})
    );
}

#[test]
fn app_grants_to_own_devices_stay_within_each_person() {
    let p = Policy::parse(
        r#"{"grants": [{"src": ["autogroup:member"], "dst": ["autogroup:self"],
                        "app": {"example.com/cap/sync": [{}]}}]}"#,
    )
    .unwrap();
    let c = p.compile(&topo()).unwrap();
    let phone = c.packet_filter(2);
    let sources: Vec<&str> = phone
        .iter()
        .flat_map(|r| r.src_ips.iter().map(String::as_str))
        .collect();
    assert_eq!(
        sources,
        [
            "100.64.0.10",
            "100.64.0.20",
            "fd7a:115c:a1e0::10",
            "fd7a:115c:a1e0::20"
        ]
    );
    assert!(c.can_see(1, 2) && !c.can_see(1, 3));
}

#[test]
fn randomize_client_port_reaches_every_node() {
    let c = Policy::parse(r#"{"randomizeClientPort": true}"#)
        .unwrap()
        .compile(&topo())
        .unwrap();
    assert!(
        c.node_ids()
            .all(|n| c.node_attrs(n) == ["randomize-client-port"])
    );
    assert!(Policy::parse(r#"{"randomizeClientPort": "yes"}"#).is_err());
}

#[test]
fn disable_ipv4_takes_the_address_away_on_both_sides() {
    let p = Policy::parse(
        r#"{"tagOwners": {"tag:server": []},
            "nodeAttrs": [{"target": ["tag:server"], "attr": ["disable-ipv4"]}]}"#,
    )
    .unwrap();
    let c = p.compile(&topo()).unwrap();
    let only_v6: Vec<ipnet::IpNet> = vec!["fd7a:115c:a1e0::40/128".parse().unwrap()];
    assert_eq!(c.self_addresses(4), only_v6);
    let seen_by_bob = c.peers(3).into_iter().find(|p| p.id == 4).unwrap();
    assert_eq!(seen_by_bob.allowed_ips, only_v6);
    // The server itself has no IPv4 to reach its peers' IPv4 with.
    let alice = c.peers(4).into_iter().find(|p| p.id == 1).unwrap();
    assert!(alice.allowed_ips.iter().all(|a| a.addr().is_ipv6()));
}

/// Two routers for one prefix, the first registered is primary; a client reaching it.
fn two_routers() -> Topology {
    let node = |id: u64, name: &str, tag: &str, routes: &[&str]| Node {
        id,
        name: name.into(),
        user: None,
        tags: vec![tag.into()],
        ipv4: Some(format!("100.64.0.{id}").parse().unwrap()),
        ipv6: None,
        routable_ips: routes.iter().map(|r| r.parse().unwrap()).collect(),
        approved_routes: routes.iter().map(|r| r.parse().unwrap()).collect(),
        stable_id: format!("n{id}"),
        attributes: Default::default(),
    };
    Topology {
        users: vec![],
        nodes: vec![
            node(1, "client", "tag:client", &[]),
            node(2, "router-a", "tag:a", &["10.0.0.0/24"]),
            node(3, "router-b", "tag:b", &["10.0.0.0/24"]),
        ],
    }
}

fn routes_seen(c: &crate::Compiled, viewer: u64) -> Vec<(u64, Vec<String>)> {
    c.peers(viewer)
        .into_iter()
        .filter(|p| !p.primary_routes.is_empty())
        .map(|p| {
            (
                p.id,
                p.primary_routes.iter().map(|r| r.to_string()).collect(),
            )
        })
        .collect()
}

#[test]
fn via_sends_a_prefix_through_the_named_router_not_the_primary() {
    let tags = r#""tagOwners": {"tag:client": [], "tag:a": [], "tag:b": []}"#;
    let via = Policy::parse(&format!(
        r#"{{{tags}, "grants": [{{"src": ["tag:client"], "dst": ["10.0.0.0/24"], "ip": ["*"],
                                "via": ["tag:b"]}}]}}"#
    ))
    .unwrap()
    .compile(&two_routers())
    .unwrap();
    assert_eq!(routes_seen(&via, 1), [(3, vec!["10.0.0.0/24".to_string()])]);
    assert!(
        via.packet_filter(2).is_empty(),
        "router-a does not carry it"
    );
    assert_eq!(via.packet_filter(3).len(), 1);
    assert!(!via.can_see(1, 2));

    // Without `via` the primary (registered first) carries the prefix.
    let plain = Policy::parse(&format!(
        r#"{{{tags}, "grants": [{{"src": ["tag:client"], "dst": ["10.0.0.0/24"], "ip": ["*"]}}]}}"#
    ))
    .unwrap()
    .compile(&two_routers())
    .unwrap();
    assert_eq!(
        routes_seen(&plain, 1),
        [(2, vec!["10.0.0.0/24".to_string()])]
    );
}

#[test]
fn an_ordinary_rule_to_the_prefix_keeps_the_primary() {
    let p = Policy::parse(
        r#"{"tagOwners": {"tag:client": [], "tag:a": [], "tag:b": []},
            "grants": [{"src": ["tag:client"], "dst": ["10.0.0.0/24"], "ip": ["*"], "via": ["tag:b"]},
                       {"src": ["tag:client"], "dst": ["10.0.0.0/24"], "ip": ["*"]}]}"#,
    )
    .unwrap()
    .compile(&two_routers())
    .unwrap();
    assert_eq!(routes_seen(&p, 1), [(2, vec!["10.0.0.0/24".to_string()])]);
}

#[test]
fn an_app_grant_from_nobody_still_reaches_its_destinations() {
    let p = Policy::parse(
        r#"{"groups": {"group:empty": []}, "grants": [{"src": ["group:empty"], "dst": ["*"],
                        "app": {"example.com/cap/test": [{}]}}]}"#,
    )
    .unwrap()
    .compile(&topo())
    .unwrap();
    let filter = p.packet_filter(1);
    assert_eq!(filter.len(), 1);
    assert!(filter[0].src_ips.is_empty() && !filter[0].cap_grant.is_empty());
    assert!(p.peers(1).is_empty());
}

#[test]
fn src_posture_narrows_sources_to_the_nodes_that_meet_one() {
    let mut t = topo();
    for n in &mut t.nodes {
        let (os, version) = match n.id {
            1 => ("linux", "1.90.1"),
            2 => ("ios", "1.88.0"),
            _ => ("linux", "1.40.0"),
        };
        n.attributes = crate::node_attributes(os, "", version);
    }
    t.nodes[0]
        .attributes
        .insert("custom:managed".into(), crate::AttrValue::Bool(true));
    let policy = r#"{
        "tagOwners": {"tag:server": []},
        "postures": {
            "posture:current": ["node:tsVersion >= '1.80'", "node:tsReleaseTrack == 'stable'"],
            "posture:managed": ["custom:managed == true"]
        },
        "grants": [
            {"src": ["autogroup:member"], "dst": ["tag:server"], "ip": ["tcp:22"],
             "srcPosture": ["posture:current"]},
            {"src": ["*"], "dst": ["tag:server"], "ip": ["tcp:443"],
             "srcPosture": ["posture:managed"]}
        ]
    }"#;
    let c = Policy::parse(policy).unwrap().compile(&t).unwrap();
    let by_port = |port: u16| -> Vec<String> {
        c.packet_filter(4)
            .into_iter()
            .filter(|r| r.dst_ports.iter().any(|d| d.ports.first == port))
            .flat_map(|r| r.src_ips)
            .collect()
    };
    // alice's laptop and phone run 1.90 and 1.88 (stable); bob's laptop 1.40.
    assert_eq!(
        by_port(22),
        [
            "100.64.0.10",
            "100.64.0.20",
            "fd7a:115c:a1e0::10",
            "fd7a:115c:a1e0::20"
        ]
    );
    // `*` under a posture is the managed laptop alone: no routes, no other address.
    assert_eq!(by_port(443), ["100.64.0.10", "fd7a:115c:a1e0::10"]);
    assert!(!c.can_see(3, 4));

    // defaultSrcPosture applies to rules that name none; an unknown posture is refused.
    let default = policy.replace(
        r#""grants": ["#,
        r#""defaultSrcPosture": ["posture:managed"], "grants": [{"src": ["autogroup:member"], "dst": ["tag:server"], "ip": ["tcp:80"]},"#,
    );
    let c = Policy::parse(&default).unwrap().compile(&t).unwrap();
    assert!(
        c.packet_filter(4)
            .iter()
            .any(|r| r.dst_ports.iter().any(|d| d.ports.first == 80)
                && r.src_ips == ["100.64.0.10", "fd7a:115c:a1e0::10"])
    );
    let err = Policy::parse(&policy.replace(r#"["posture:managed"]}"#, r#"["posture:nope"]}"#))
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("posture \"posture:nope\" not found"),
        "{err}"
    );
}

#[test]
fn ssh_rules_take_a_src_posture_too() {
    let mut t = topo();
    t.nodes[0].attributes = crate::node_attributes("linux", "", "1.90.0");
    let p = Policy::parse(
        r#"{"tagOwners": {"tag:server": []},
            "postures": {"posture:linux": ["node:os == 'linux'"]},
            "ssh": [{"action": "accept", "src": ["autogroup:member"], "dst": ["tag:server"],
                     "users": ["root"], "srcPosture": ["posture:linux"]}]}"#,
    )
    .unwrap();
    let c = p.compile(&t).unwrap();
    let ssh = c.ssh_policy(4).unwrap();
    let principals: Vec<String> = ssh
        .rules
        .iter()
        .flat_map(|r| r.principals.iter().map(|p| p.node_ip.clone()))
        .collect();
    assert_eq!(principals, ["100.64.0.10", "fd7a:115c:a1e0::10"], "{ssh:?}");
}
