//! Rendering the tailnet as a node sees it: its own `Node`, its peers, and the rest of a
//! full `MapResponse`.
//!
//! Work is split in two so no lock is held while JSON is written: a *snapshot* taken under
//! the tailnet's read lock (cheap: `Arc`s of immutable node versions, routes only for the
//! few peers that route), and a *render* done afterwards. A peer that is told only its
//! addresses (nearly all of them) is serialised once per node version and shared by every
//! viewer's map (`Node::peer_json`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use oxiscale_tailcfg::map::{self as wire, NodeJson, node_attr};
use oxiscale_tailcfg::{FilterRule, MapResponse, SshPolicy, UserProfile};
use serde_json::Value;
use serde_json::value::RawValue;
use time::OffsetDateTime;

use super::MapConfig;
use crate::tailnet::State;
use crate::tailnet::access::PeerRoutes;
use crate::tailnet::model::{Node, UserId};

/// The user that owns tagged nodes on the wire (clients need some user for every node).
pub const TAGGED_DEVICES_USER_ID: UserId = 2_147_455_555;
pub const TAGGED_DEVICES_LOGIN: &str = "tagged-devices";

/// A peer as one viewer sees it. `routes` is `None` when the peer is told only its own
/// addresses (it routes nothing), which is the shared, cacheable rendering.
#[derive(Debug, Clone)]
pub struct PeerView {
    pub node: Arc<Node>,
    pub routes: Option<PeerRoutes>,
}

/// The peer view of `peer` for `viewer`; routes are looked up only for routers.
pub fn peer_view(state: &State, viewer: &Node, peer: &Arc<Node>) -> PeerView {
    let routes = peer
        .serves_routes()
        .then(|| state.peer_routes(viewer, peer));
    PeerView {
        node: peer.clone(),
        routes,
    }
}

/// The peers `viewer` may see now, as views.
pub fn visible_views(state: &State, viewer: &Node, now: OffsetDateTime) -> Vec<PeerView> {
    state
        .nodes()
        .filter(|peer| state.is_visible(viewer, peer, now))
        .map(|peer| peer_view(state, viewer, peer))
        .collect()
}

/// A peer's JSON for a map: the shared rendering, or one made for this viewer's routes.
pub fn render_peer(base_domain: &str, view: &PeerView, now: OffsetDateTime) -> NodeJson {
    match &view.routes {
        None => NodeJson::Rendered(view.node.peer_json.get_or_render(|| {
            let addresses = view.node.addresses();
            to_raw(&wire_node(
                base_domain,
                &view.node,
                addresses,
                Vec::new(),
                now,
            ))
        })),
        Some(r) => NodeJson::Built(Box::new(wire_node(
            base_domain,
            &view.node,
            r.allowed_ips.clone(),
            r.primary_routes.clone(),
            now,
        ))),
    }
}

fn to_raw(node: &wire::Node) -> Arc<RawValue> {
    let json = serde_json::to_string(node).expect("wire nodes serialise");
    Arc::from(RawValue::from_string(json).expect("serde_json wrote valid JSON"))
}

/// The node as it sees itself, with the attributes that turn client features on.
pub fn self_node(state: &State, node: &Node, now: OffsetDateTime) -> wire::Node {
    let routes = state.peer_routes(node, node);
    let mut n = wire_node(
        &state.settings.base_domain,
        node,
        routes.allowed_ips,
        routes.primary_routes,
        now,
    );
    // The self node's own Online/LastSeen are meaningless to the client.
    n.online = None;
    n.last_seen = None;
    n.cap_map = self_cap_map(state.access().node_attrs(node));
    n
}

fn self_cap_map(policy_attrs: Vec<String>) -> BTreeMap<String, Option<Vec<Value>>> {
    let mut caps = BTreeMap::new();
    caps.insert(node_attr::ADMIN.to_owned(), None);
    caps.insert(node_attr::SSH.to_owned(), None);
    caps.insert(node_attr::FILE_SHARING.to_owned(), None);
    caps.insert(
        node_attr::DEFAULT_AUTO_UPDATE.to_owned(),
        Some(vec![Value::Bool(false)]),
    );
    for attr in policy_attrs {
        caps.entry(attr).or_insert(None);
    }
    caps
}

fn wire_node(
    base_domain: &str,
    node: &Node,
    allowed_ips: Vec<ipnet::IpNet>,
    primary_routes: Vec<ipnet::IpNet>,
    now: OffsetDateTime,
) -> wire::Node {
    let home_derp = node.hostinfo.preferred_derp();
    wire::Node {
        id: node.id,
        stable_id: node.stable_id(),
        name: format!("{}.{}.", node.given_name, base_domain.trim_matches('.')),
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

/// Everything a fresh stream needs, captured under the read lock.
pub struct FullMapSnapshot {
    pub me: wire::Node,
    pub peers: Vec<PeerView>,
    pub profiles: Vec<UserProfile>,
    pub packet_filter: Vec<FilterRule>,
    pub ssh_policy: Option<SshPolicy>,
    pub base_domain: String,
}

impl FullMapSnapshot {
    pub fn take(state: &State, me: &Node, now: OffsetDateTime) -> FullMapSnapshot {
        let peers = visible_views(state, me, now);
        let profiles = user_profiles(
            state,
            std::iter::once(me).chain(peers.iter().map(|p| p.node.as_ref())),
        );
        FullMapSnapshot {
            me: self_node(state, me, now),
            peers,
            profiles,
            packet_filter: state.access().packet_filter(me),
            ssh_policy: state.access().ssh_policy(me),
            base_domain: state.settings.base_domain.clone(),
        }
    }

    /// The ids of the peers sent, and the routes sent for those that route.
    pub fn sent(&self) -> super::session::Sent {
        let mut sent = super::session::Sent::default();
        for p in &self.peers {
            sent.insert(p.node.id, p.routes.clone());
        }
        sent
    }

    /// The full `MapResponse`. Runs without any lock.
    pub fn render(self, config: &MapConfig, now: OffsetDateTime) -> MapResponse {
        let peers: Vec<NodeJson> = self
            .peers
            .iter()
            .map(|p| render_peer(&self.base_domain, p, now))
            .collect();
        MapResponse {
            node: Some(self.me),
            // An empty list would read as "no change"; a first map without peers omits it.
            peers: (!peers.is_empty()).then_some(peers),
            derp_map: Some(config.derp_map.clone()),
            dns_config: Some(config.dns_config.clone()),
            domain: config.domain.clone(),
            collect_services: Some(false),
            packet_filter: Some(self.packet_filter),
            user_profiles: self.profiles,
            ssh_policy: self.ssh_policy,
            control_time: Some(now),
            debug: Some(wire::Debug {
                disable_log_tail: true,
            }),
            health: Some(Vec::new()),
            ..Default::default()
        }
    }

    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }
}
