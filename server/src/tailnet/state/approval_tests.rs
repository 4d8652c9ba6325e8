//! Device approval: a held node is nobody's peer and sees none until approved.

use super::*;
use oxiscale_tailcfg::{Hostinfo, MapRequest, RegisterAuth, RegisterRequest};

fn state(approval_required: bool) -> State {
    State::for_tests(approval_required)
}

/// A reusable pre-auth key of a new user "alice" (or carrying `tags`).
fn auth_key(s: &mut State, tags: &[&str]) -> String {
    let now = OffsetDateTime::now_utc();
    let mut fx = Effects::default();
    let user = match s.user_by_name("alice") {
        Some(u) => u.id,
        None => s.create_user(&mut fx, "alice", "", "", "", now).unwrap().id,
    };
    let spec = PreAuthKeySpec {
        user: tags.is_empty().then_some(user),
        reusable: true,
        ephemeral: false,
        expiration: now + time::Duration::hours(1),
        tags: tags.iter().map(|t| t.to_string()).collect(),
    };
    s.create_preauth_key(&mut fx, spec, now).unwrap().1
}

fn request(node_key: u8, name: &str, auth_key: &str) -> RegisterRequest {
    RegisterRequest {
        version: 130,
        node_key: NodePublic::from_bytes([node_key; 32]),
        auth: Some(RegisterAuth {
            auth_key: auth_key.into(),
        }),
        hostinfo: Some(Hostinfo {
            hostname: name.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Registers machine `machine` with node key `node_key`; returns the node's id.
fn register(s: &mut State, machine: u8, node_key: u8, auth_key: &str) -> NodeId {
    let mut fx = Effects::default();
    let req = request(node_key, &format!("m{machine}"), auth_key);
    let machine = MachinePublic::from_bytes([machine; 32]);
    match s
        .register(&mut fx, machine, &req, OffsetDateTime::now_utc())
        .unwrap()
    {
        RegisterOutcome::Authorized(id) => id,
        other => panic!("registration refused: {other:?}"),
    }
}

fn approve(s: &mut State, id: NodeId) -> Effects {
    let mut fx = Effects::default();
    s.approve_node(&mut fx, id).unwrap();
    fx
}

fn sees(s: &State, viewer: NodeId, peer: NodeId) -> bool {
    let now = OffsetDateTime::now_utc();
    let (v, p) = (s.node(viewer).unwrap(), s.node(peer).unwrap());
    let one = s.is_visible(v, p, now);
    let by_set = s.visible_ids(v, now).contains(peer as usize);
    assert_eq!(one, by_set, "is_visible and visible_ids agree");
    one
}

#[test]
fn a_held_node_is_nobodys_peer_and_sees_none_until_approved() {
    let mut s = state(true);
    let key = auth_key(&mut s, &[]);
    let a = register(&mut s, 1, 1, &key);
    assert!(!s.node(a).unwrap().approved, "a new node waits");
    approve(&mut s, a);
    let b = register(&mut s, 2, 2, &key);
    let now = OffsetDateTime::now_utc();
    let b_key = s.node(b).unwrap().node_key;
    let a_key = s.node(a).unwrap().node_key;

    assert!(!s.node(b).unwrap().approved);
    assert!(!sees(&s, a, b), "a held node is nobody's peer");
    assert!(!sees(&s, b, a), "a held node sees no one");
    assert!(s.visible_ids(s.node(b).unwrap(), now).is_clear());
    assert!(s.packet_filter(s.node(b).unwrap()).is_empty(), "drops all");
    assert!(!s.packet_filter(s.node(a).unwrap()).is_empty());
    assert!(!s.admits_to_relay(&b_key, now), "DERP refuses it");
    assert!(s.admits_to_relay(&a_key, now));

    let fx = approve(&mut s, b);
    assert!(s.node(b).unwrap().approved);
    assert!(sees(&s, a, b) && sees(&s, b, a));
    assert!(!s.packet_filter(s.node(b).unwrap()).is_empty());
    assert!(s.admits_to_relay(&b_key, now));
    // Written, and announced as a change of the node: its own stream rechecks its
    // peers, the others check whether they may see it.
    assert!(
        fx.ops
            .iter()
            .any(|op| matches!(op, DbOp::PutNode(n) if n.id == b && n.approved)),
        "{:?}",
        fx.ops
    );
    assert_eq!(fx.changes, vec![Change::NodeUpserted(b)]);

    // Again: nothing to do.
    let again = approve(&mut s, b);
    assert!(again.ops.is_empty() && again.changes.is_empty());
    let mut fx = Effects::default();
    assert!(matches!(
        s.approve_node(&mut fx, 999),
        Err(TailnetError::NotFound { .. })
    ));
}

#[test]
fn without_the_setting_nodes_are_approved_at_once() {
    let mut s = state(false);
    let key = auth_key(&mut s, &[]);
    let a = register(&mut s, 1, 1, &key);
    let b = register(&mut s, 2, 2, &key);
    assert!(s.node(a).unwrap().approved && s.node(b).unwrap().approved);
    assert!(sees(&s, a, b) && sees(&s, b, a));
}

#[test]
fn a_node_that_logs_in_again_keeps_its_flag_and_tagged_nodes_are_held_too() {
    let mut s = state(true);
    let key = auth_key(&mut s, &[]);
    let held = register(&mut s, 1, 1, &key);
    let approved = register(&mut s, 2, 2, &key);
    approve(&mut s, approved);
    // The same machine and owner with a new node key (a re-login): the same node.
    assert_eq!(register(&mut s, 1, 11, &key), held);
    assert_eq!(register(&mut s, 2, 12, &key), approved);
    assert!(
        !s.node(held).unwrap().approved,
        "re-authenticating is not approval"
    );
    assert!(
        s.node(approved).unwrap().approved,
        "nor does it take approval away"
    );

    // A tagged key vouches for the tags, not for the device.
    let mut fx = Effects::default();
    let policy = Policy::parse(
        r#"{"tagOwners": {"tag:server": ["alice@"]},
            "acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}"#,
    )
    .unwrap();
    s.set_policy(&mut fx, Some(Arc::new(policy))).unwrap();
    let tagged_key = auth_key(&mut s, &["tag:server"]);
    let server = register(&mut s, 3, 3, &tagged_key);
    assert!(s.node(server).unwrap().is_tagged());
    assert!(!s.node(server).unwrap().approved);
    assert!(!sees(&s, approved, server) && !sees(&s, server, approved));
}

#[test]
fn what_a_held_node_says_about_itself_is_kept_but_not_announced() {
    let mut s = state(true);
    let key = auth_key(&mut s, &[]);
    let a = register(&mut s, 1, 1, &key);
    let machine = MachinePublic::from_bytes([1; 32]);
    let req = MapRequest {
        node_key: s.node(a).unwrap().node_key,
        endpoints: vec!["192.0.2.1:41641".into()],
        ..Default::default()
    };
    let mut fx = Effects::default();
    let now = OffsetDateTime::now_utc();
    s.apply_map_request(&mut fx, machine, &req, now).unwrap();
    assert_eq!(s.node(a).unwrap().endpoints, req.endpoints);
    assert!(fx.changes.is_empty(), "no one may see it: {:?}", fx.changes);

    approve(&mut s, a);
    let req = MapRequest {
        endpoints: vec!["192.0.2.2:41641".into()],
        ..req
    };
    let mut fx = Effects::default();
    s.apply_map_request(&mut fx, machine, &req, now).unwrap();
    assert!(matches!(fx.changes[..], [Change::NodePatched(_)]));
}

#[test]
fn a_held_router_serves_no_one_until_approved() {
    let mut s = state(true);
    let key = auth_key(&mut s, &[]);
    let router = register(&mut s, 1, 1, &key);
    let route: IpNet = "10.1.0.0/24".parse().unwrap();
    let machine = MachinePublic::from_bytes([1; 32]);
    let req = MapRequest {
        node_key: s.node(router).unwrap().node_key,
        hostinfo: Some(Hostinfo {
            hostname: "m1".into(),
            routable_ips: vec![route],
            ..Default::default()
        }),
        ..Default::default()
    };
    let now = OffsetDateTime::now_utc();
    let mut fx = Effects::default();
    s.apply_map_request(&mut fx, machine, &req, now).unwrap();
    s.approve_routes(&mut fx, router, vec![route]).unwrap();
    assert!(s.primary_routes_of(router).is_empty(), "held: not elected");

    let fx = approve(&mut s, router);
    assert_eq!(s.primary_routes_of(router), vec![route]);
    assert!(fx.changes.contains(&Change::Visibility), "{:?}", fx.changes);
}
