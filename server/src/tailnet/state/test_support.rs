//! What the unit tests of the rules share: users, pre-auth keys, registrations and route
//! advertisements made the way clients and administrators make them.

use std::sync::Arc;

use ipnet::IpNet;
use oxiscale_policy::Policy;
use oxiscale_tailcfg::{
    Hostinfo, MachinePublic, MapRequest, NodePublic, RegisterAuth, RegisterRequest,
};
use time::OffsetDateTime;

use super::super::effects::Effects;
use super::super::model::{NodeId, UserId};
use super::{PreAuthKeySpec, RegisterOutcome, State};

/// A user `name` with the email `name@example.com`.
pub(super) fn user(s: &mut State, name: &str) -> UserId {
    let email = format!("{name}@example.com");
    let now = OffsetDateTime::now_utc();
    s.create_user(&mut Effects::default(), name, "", &email, "", now)
        .unwrap()
        .id
}

/// A pre-auth key of `user` (or carrying `tags`), valid for an hour; its secret text.
pub(super) fn key(s: &mut State, user: Option<UserId>, reusable: bool, tags: &[&str]) -> String {
    key_with(s, user, reusable, false, tags)
}

pub(super) fn ephemeral_key(s: &mut State, user: UserId) -> String {
    key_with(s, Some(user), true, true, &[])
}

fn key_with(
    s: &mut State,
    user: Option<UserId>,
    reusable: bool,
    ephemeral: bool,
    tags: &[&str],
) -> String {
    let now = OffsetDateTime::now_utc();
    let spec = PreAuthKeySpec {
        user,
        reusable,
        ephemeral,
        expiration: now + time::Duration::hours(1),
        tags: tags.iter().map(|t| t.to_string()).collect(),
    };
    s.create_preauth_key(&mut Effects::default(), spec, now)
        .unwrap()
        .1
}

/// A registration of node key `node_key` (not 0) named `name`, with `auth_key` if given.
pub(super) fn request(node_key: u8, name: &str, auth_key: Option<&str>) -> RegisterRequest {
    RegisterRequest {
        version: 130,
        node_key: NodePublic::from_bytes([node_key; 32]),
        auth: auth_key.map(|k| RegisterAuth { auth_key: k.into() }),
        hostinfo: Some(Hostinfo {
            hostname: name.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub(super) fn machine(m: u8) -> MachinePublic {
    MachinePublic::from_bytes([m; 32])
}

pub(super) fn register(
    s: &mut State,
    m: u8,
    req: &RegisterRequest,
    now: OffsetDateTime,
) -> RegisterOutcome {
    s.register(&mut Effects::default(), machine(m), req, now)
        .unwrap()
}

/// Machine `m` joins with node key `node_key` and `auth_key`; the node's id.
pub(super) fn join(s: &mut State, m: u8, node_key: u8, auth_key: &str) -> NodeId {
    let req = request(node_key, &format!("m{m}"), Some(auth_key));
    match register(s, m, &req, OffsetDateTime::now_utc()) {
        RegisterOutcome::Authorized(id) => id,
        other => panic!("registration refused: {other:?}"),
    }
}

/// The node says (in a map request) that it can route `routes`.
pub(super) fn advertise(s: &mut State, id: NodeId, routes: &[IpNet]) -> Effects {
    let node = s.node(id).unwrap().clone();
    let req = MapRequest {
        node_key: node.node_key,
        hostinfo: Some(Hostinfo {
            routable_ips: routes.to_vec(),
            ..node.hostinfo.clone()
        }),
        ..Default::default()
    };
    let mut fx = Effects::default();
    s.apply_map_request(&mut fx, node.machine_key, &req, OffsetDateTime::now_utc())
        .unwrap();
    fx
}

pub(super) fn set_policy(s: &mut State, text: &str) {
    let policy = Policy::parse(text).unwrap();
    s.set_policy(&mut Effects::default(), Some(Arc::new(policy)))
        .unwrap();
}

/// Whether `viewer` has `peer` in its netmap now.
pub(super) fn sees(s: &State, viewer: NodeId, peer: NodeId) -> bool {
    let now = OffsetDateTime::now_utc();
    s.is_visible(s.node(viewer).unwrap(), s.node(peer).unwrap(), now)
}
