//! Rendering the tailnet as a node sees it: its own `Node`, its peers, and the rest of a
//! full `MapResponse`.

use std::collections::{BTreeMap, BTreeSet};

use oxiscale_tailcfg::map::{self as wire, node_attr};
use oxiscale_tailcfg::{MapResponse, UserProfile};
use serde_json::Value;
use time::OffsetDateTime;

use super::MapConfig;
use crate::tailnet::State;
use crate::tailnet::access::PeerRoutes;
use crate::tailnet::model::{Node, UserId};

/// The user that owns tagged nodes on the wire (clients need some user for every node).
pub const TAGGED_DEVICES_USER_ID: UserId = 2_147_455_555;
pub const TAGGED_DEVICES_LOGIN: &str = "tagged-devices";

/// A node as its peers see it.
pub fn peer_node(
    state: &State,
    node: &Node,
    routes: &PeerRoutes,
    now: OffsetDateTime,
) -> wire::Node {
    wire_node(
        state,
        node,
        routes.allowed_ips.clone(),
        routes.primary_routes.clone(),
        now,
    )
}

/// The node as it sees itself, with the attributes that turn client features on.
pub fn self_node(state: &State, node: &Node, now: OffsetDateTime) -> wire::Node {
    let routes = state.peer_routes(node, node);
    let mut n = wire_node(state, node, routes.allowed_ips, routes.primary_routes, now);
    // The self node's own Online/LastSeen are meaningless to the client.
    n.online = None;
    n.last_seen = None;
    n.cap_map = self_cap_map();
    n
}

fn self_cap_map() -> BTreeMap<String, Option<Vec<Value>>> {
    let mut caps = BTreeMap::new();
    caps.insert(node_attr::ADMIN.to_owned(), None);
    caps.insert(node_attr::SSH.to_owned(), None);
    caps.insert(node_attr::FILE_SHARING.to_owned(), None);
    caps.insert(
        node_attr::DEFAULT_AUTO_UPDATE.to_owned(),
        Some(vec![Value::Bool(false)]),
    );
    caps
}

fn wire_node(
    state: &State,
    node: &Node,
    allowed_ips: Vec<ipnet::IpNet>,
    primary_routes: Vec<ipnet::IpNet>,
    now: OffsetDateTime,
) -> wire::Node {
    let home_derp = node.hostinfo.preferred_derp();
    wire::Node {
        id: node.id,
        stable_id: node.stable_id(),
        name: state.fqdn(node),
        user: node.user.unwrap_or(TAGGED_DEVICES_USER_ID),
        key: node.node_key,
        key_expiry: node.expiry,
        machine: node.machine_key,
        disco_key: node.disco_key,
        addresses: node.addresses(),
        allowed_ips,
        endpoints: node.endpoints.clone(),
        legacy_derp: if home_derp != 0 {
            format!("127.3.3.40:{home_derp}")
        } else {
            String::new()
        },
        home_derp,
        hostinfo: node.hostinfo.clone(),
        created: node.created,
        cap: node.cap_version,
        tags: node.tags.clone(),
        primary_routes,
        last_seen: if node.online { None } else { node.last_seen },
        online: Some(node.online),
        machine_authorized: true,
        cap_map: BTreeMap::new(),
        expired: node.is_expired(now),
    }
}

/// Profiles for every owner among `nodes`, for `UserProfiles`.
pub fn user_profiles<'a>(
    state: &State,
    nodes: impl IntoIterator<Item = &'a Node>,
) -> Vec<UserProfile> {
    let owners: BTreeSet<Option<UserId>> = nodes.into_iter().map(|n| n.user).collect();
    owners
        .into_iter()
        .filter_map(|owner| match owner {
            None => Some(UserProfile {
                id: TAGGED_DEVICES_USER_ID,
                login_name: TAGGED_DEVICES_LOGIN.into(),
                display_name: "Tagged devices".into(),
                profile_pic_url: String::new(),
            }),
            Some(id) => state.user(id).map(|u| UserProfile {
                id: u.id,
                login_name: u.login_name(),
                display_name: if u.display_name.is_empty() {
                    u.name.clone()
                } else {
                    u.display_name.clone()
                },
                profile_pic_url: String::new(),
            }),
        })
        .collect()
}

/// Everything a node needs on a fresh stream. Returns the response and the routes sent per
/// peer (the session diffs against them later).
pub fn full_map(
    state: &State,
    me: &Node,
    config: &MapConfig,
    now: OffsetDateTime,
) -> (MapResponse, BTreeMap<u64, PeerRoutes>) {
    let peers = state.visible_peers(me, now);
    let mut sent = BTreeMap::new();
    let mut peer_nodes = Vec::with_capacity(peers.len());
    for (peer, routes) in &peers {
        peer_nodes.push(peer_node(state, peer, routes, now));
        sent.insert(peer.id, routes.clone());
    }
    let profiles = user_profiles(
        state,
        std::iter::once(me).chain(peers.iter().map(|(p, _)| p.as_ref())),
    );
    let response = MapResponse {
        node: Some(self_node(state, me, now)),
        // An empty list would read as "no change"; a first map without peers simply omits it.
        peers: (!peer_nodes.is_empty()).then_some(peer_nodes),
        derp_map: Some(config.derp_map.clone()),
        dns_config: Some(config.dns_config.clone()),
        domain: config.domain.clone(),
        collect_services: Some(false),
        packet_filter: Some(state.access().packet_filter(me)),
        user_profiles: profiles,
        ssh_policy: state.access().ssh_policy(me),
        control_time: Some(now),
        debug: Some(wire::Debug {
            disable_log_tail: true,
        }),
        health: Some(Vec::new()),
        ..Default::default()
    };
    (response, sent)
}
