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

use bytes::Bytes;

use oxiscale_tailcfg::map::{self as wire, NodeJson, node_attr};
use oxiscale_tailcfg::{FilterRule, MapResponse, SshPolicy, UserProfile};
use serde_json::Value;
use serde_json::value::RawValue;
use time::OffsetDateTime;

use super::MapConfig;
use super::chunks::{Chunk, MessageBuilder, PeerChunks};
use super::sent::{Sent, filters_digest};
use crate::tailnet::State;
use crate::tailnet::access::PeerRoutes;
use crate::tailnet::model::{Node, UserId};
use crate::tailnet::nodes::block_of;

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

/// The peer view of `peer` for `viewer`; routes are looked up only for routers, and for
/// a viewer told its peers' IPv6 addresses only.
pub fn peer_view(state: &State, viewer: &Node, peer: &Arc<Node>) -> PeerView {
    let routes =
        (peer.serves_routes() || viewer.ipv4_withheld).then(|| state.peer_routes(viewer, peer));
    PeerView {
        node: peer.clone(),
        routes,
    }
}

/// A peer's JSON for a map: the shared rendering, or one made for this viewer's routes.
pub fn render_peer(base_domain: &str, view: &PeerView, now: OffsetDateTime) -> NodeJson {
    match &view.routes {
        None => NodeJson::Rendered(shared_peer_json(base_domain, &view.node, now)),
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
    n.machine = Some(node.machine_key);
    // The self node's own Online/LastSeen are meaningless to the client.
    n.online = None;
    n.last_seen = None;
    n.cap_map = self_caps(state, node);
    n
}

/// The capabilities in the node's own `Node`: the defaults and its policy's `nodeAttrs`.
pub fn self_caps(state: &State, node: &Node) -> BTreeMap<String, Option<Vec<Value>>> {
    self_cap_map(state.access().node_attrs(node))
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
        name: crate::tailnet::names::fqdn(&node.given_name, base_domain),
        user: node.user.unwrap_or(TAGGED_DEVICES_USER_ID),
        key: node.node_key,
        key_expiry: node.expiry,
        machine: None,
        disco_key: node.disco_key,
        // The addresses the viewer is told (its AllowedIPs hold them all, or only the IPv6).
        addresses: node
            .tailnet_addresses()
            .into_iter()
            .filter(|a| allowed_ips.contains(a))
            .collect(),
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
        // A node waiting for approval learns it from its own `Node` (the client's
        // "NeedsMachineAuth" state); it is nobody's peer until then.
        machine_authorized: node.approved,
        cap_map: BTreeMap::new(),
        expired: node.is_expired(now),
    }
}

/// Profiles for every owner among `nodes`, for `UserProfiles`.
pub fn user_profiles<'a>(
    state: &State,
    nodes: impl IntoIterator<Item = &'a Node>,
) -> Vec<UserProfile> {
    owner_profiles(state, nodes.into_iter().map(|n| n.user).collect())
}

/// Profiles for these owners (`None`: tagged devices).
fn owner_profiles(state: &State, owners: BTreeSet<Option<UserId>>) -> Vec<UserProfile> {
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

/// A run of a full map's peers, in id order.
pub enum PeerSegment {
    /// Every node of shared chunk `chunk`: all visible to the viewer with the shared
    /// rendering, so the chunk's shared frame can be sent.
    Shared(Arc<Chunk>),
    /// Peers rendered for this viewer.
    Own(Vec<PeerView>),
}

/// Everything a fresh stream needs, captured under the read lock.
pub struct FullMapSnapshot {
    pub me: wire::Node,
    pub peers: Vec<PeerSegment>,
    peer_count: usize,
    pub profiles: Vec<UserProfile>,
    pub packet_filter: Vec<FilterRule>,
    pub ssh_policy: Option<SshPolicy>,
    pub base_domain: String,
}

impl FullMapSnapshot {
    pub fn take(
        state: &State,
        chunks: &PeerChunks,
        me: &Node,
        now: OffsetDateTime,
    ) -> FullMapSnapshot {
        let mut segments: Vec<PeerSegment> = Vec::new();
        let mut owners = BTreeSet::new();
        owners.insert(me.user);
        let mut last_owner = me.user;
        let mut peer_count = 0;
        let mut visible: Vec<&Arc<Node>> = Vec::new();
        // When every node sees every other (no policy, or one that allows all to all), a
        // chunk other than the viewer's own is shared whole unless one of its members
        // routes, has expired or waits for approval: its summary says so without touching
        // the members (a join or a storm takes N snapshots of N nodes).
        let everyone_sees_everyone = state.access().everyone_sees_everyone();
        let own_chunk = block_of(me.id);
        // A node waiting for approval sees no one: its map holds only itself, which keeps
        // its client connected until it is approved.
        let blocks = state.node_blocks().filter(|_| me.approved);
        // A chunk is one of the tailnet's blocks of node ids; walk them in id order.
        for (chunk, stamp) in blocks {
            let members = || state.nodes_in_block(chunk);
            // Shared renderings carry IPv4 addresses: not for a viewer without IPv4.
            if everyone_sees_everyone && chunk != own_chunk && !me.ipv4_withheld {
                let whole = chunks.get(chunk, stamp, members);
                if whole.shown_alike(now) {
                    peer_count += whole.ids().len();
                    owners.extend(whole.owners().iter().copied());
                    segments.push(PeerSegment::Shared(whole));
                    continue;
                }
            }
            // Judge the chunk before making any view: when it is shared no reference count
            // is touched.
            visible.clear();
            let mut shared = true;
            for node in members() {
                if state.is_visible(me, node, now) {
                    shared &= !node.serves_routes() && !me.ipv4_withheld;
                    if node.user != last_owner {
                        last_owner = node.user;
                        owners.insert(node.user);
                    }
                    visible.push(node);
                } else {
                    shared = false;
                }
            }
            peer_count += visible.len();
            if shared {
                segments.push(PeerSegment::Shared(chunks.get(chunk, stamp, members)));
            } else if !visible.is_empty() {
                let views = visible.iter().map(|node| peer_view(state, me, node));
                match segments.last_mut() {
                    Some(PeerSegment::Own(prev)) => prev.extend(views),
                    _ => segments.push(PeerSegment::Own(views.collect())),
                }
            }
        }
        let profiles = owner_profiles(state, owners);
        FullMapSnapshot {
            me: self_node(state, me, now),
            peers: segments,
            peer_count,
            profiles,
            packet_filter: state.packet_filter(me),
            ssh_policy: state.ssh_policy(me),
            base_domain: state.settings.base_domain.clone(),
        }
    }

    /// The ids of the peers sent, the routes sent for those that route, the node's own
    /// capabilities and its filters.
    pub fn sent(&self) -> Sent {
        let highest = match self.peers.last() {
            Some(PeerSegment::Shared(chunk)) => chunk.ids().last().copied(),
            Some(PeerSegment::Own(views)) => views.last().map(|v| v.node.id),
            None => None,
        };
        let mut sent = Sent::for_ids_up_to(highest.unwrap_or(0));
        sent.set_self_caps(self.me.cap_map.clone());
        sent.set_filters(filters_digest(&self.packet_filter, &self.ssh_policy));
        for segment in &self.peers {
            match segment {
                PeerSegment::Shared(chunk) => {
                    for id in chunk.ids() {
                        sent.insert(*id, None);
                    }
                }
                PeerSegment::Own(views) => {
                    for p in views {
                        sent.insert(p.node.id, p.routes.clone());
                    }
                }
            }
        }
        sent
    }

    /// The full map as one stream message: length prefix, then zstd frames, the shared
    /// ones by reference. Runs without any lock. The JSON is
    /// `{"Node":…,"Peers":[…],<the rest>}`: `Node` first, which the load generator's
    /// head-only decoding relies on.
    pub fn encode(self, config: &MapConfig, now: OffsetDateTime) -> Vec<Bytes> {
        let FullMapSnapshot {
            me,
            peers,
            profiles,
            packet_filter,
            ssh_policy,
            base_domain,
            ..
        } = self;
        let mut rest = MapResponse {
            derp_map: Some(config.derp_map.clone()),
            dns_config: Some(config.dns_config.clone()),
            domain: config.domain.clone(),
            collect_services: Some(false),
            packet_filter: Some(packet_filter),
            user_profiles: profiles,
            ssh_policy,
            control_time: Some(now),
            debug: Some(wire::Debug {
                disable_log_tail: true,
            }),
            health: Some(Vec::new()),
            ..Default::default()
        };
        if peers.is_empty() {
            // An empty list would read as "no change": a first map without peers omits it.
            rest.node = Some(me);
            return vec![super::encode_message(&rest)];
        }
        let head = serde_json::to_vec(&MapResponse {
            node: Some(me),
            ..Default::default()
        })
        .expect("map responses serialise");
        let tail = serde_json::to_vec(&rest).expect("map responses serialise");
        let render = |node: &Node| shared_peer_json(&base_domain, node, now);

        let mut msg = MessageBuilder::default();
        // `{"Node":{…}` + `,"Peers":[`
        msg.json().extend_from_slice(&head[..head.len() - 1]);
        msg.json().extend_from_slice(br#","Peers":["#);
        // Every peer is followed by a comma but the array's last.
        for (i, segment) in peers.iter().enumerate() {
            let last = i + 1 == peers.len();
            match segment {
                PeerSegment::Shared(chunk) => msg.frame(chunk.frame(render, last)),
                PeerSegment::Own(views) => {
                    for view in views {
                        let json = match render_peer(&base_domain, view, now) {
                            NodeJson::Rendered(raw) => raw,
                            NodeJson::Built(node) => to_raw(&node),
                        };
                        msg.json().extend_from_slice(json.get().as_bytes());
                        msg.json().push(b',');
                    }
                    if last {
                        msg.json().pop();
                    }
                }
            }
        }
        // Close the array and append the other fields, `tail` without its opening brace.
        let json = msg.json();
        json.push(b']');
        if tail.len() > 2 {
            json.push(b',');
        }
        json.extend_from_slice(&tail[1..]);
        msg.finish()
    }

    pub fn peer_count(&self) -> usize {
        self.peer_count
    }
}

/// A node's JSON as viewers without routes of their own to see from it get it (cached per
/// node version).
fn shared_peer_json(base_domain: &str, node: &Node, now: OffsetDateTime) -> Arc<RawValue> {
    node.peer_json.get_or_render(|| {
        to_raw(&wire_node(
            base_domain,
            node,
            node.tailnet_addresses(),
            Vec::new(),
            now,
        ))
    })
}

#[cfg(test)]
mod tests {
    use time::OffsetDateTime;

    use crate::mapper::test_tailnet::tailnet_with;

    /// A full map never shows a node waiting for approval, not even in a chunk shared
    /// whole (where a chunk with an expired member is not shared either), and the waiting
    /// node's own map holds only itself, told it is not authorized yet, without a filter.
    #[test]
    fn a_full_map_leaves_out_nodes_waiting_for_approval() {
        use crate::mapper::build::FullMapSnapshot;
        use crate::mapper::chunks::PeerChunks;
        use crate::tailnet::model::Node;
        use crate::tailnet::nodes::{block_ids, block_of};
        let now = OffsetDateTime::now_utc();
        // The viewer, 1, and a whole other block: the one a viewer is sent shared.
        let other = block_ids(block_of(1) + 1);
        let held = other.end - 1;
        let mut nodes: Vec<Node> = std::iter::once(1)
            .chain(other.clone())
            .map(Node::sample)
            .collect();
        nodes.last_mut().unwrap().approved = false;
        let state = tailnet_with(nodes, now);
        let chunks = PeerChunks::default();

        let viewer = state.node(1).unwrap().clone();
        let map = FullMapSnapshot::take(&state, &chunks, &viewer, now);
        let sent = map.sent();
        assert!(!sent.contains(held), "the held node is nobody's peer");
        assert!(
            other
                .clone()
                .filter(|id| *id != held)
                .all(|id| sent.contains(id))
        );
        assert_eq!(map.peer_count(), other.count() - 1);
        assert!(map.me.machine_authorized && !map.packet_filter.is_empty());

        let waiting = state.node(held).unwrap().clone();
        let map = FullMapSnapshot::take(&state, &chunks, &waiting, now);
        assert_eq!(map.peer_count(), 0);
        assert!(map.sent().is_empty());
        assert!(map.packet_filter.is_empty(), "drops everything");
        assert!(!map.me.machine_authorized, "the client waits for approval");
    }
}
