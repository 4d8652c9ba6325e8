//! `/machine/map` (protocol/02 §2–§3): the long poll that carries a node's view of the tailnet.

use std::collections::BTreeMap;
use std::sync::Arc;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use time::OffsetDateTime;

use crate::derp_map::DerpMap;
use crate::dns::DnsConfig;
use crate::filter::FilterRule;
use crate::hostinfo::Hostinfo;
use crate::key::{DiscoPublic, MachinePublic, NodePublic};
use crate::ssh::SshPolicy;
use crate::time_fmt;

pub type NodeId = u64;
pub type UserId = u64;

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct MapRequest {
    pub version: u32,
    pub compress: String,
    pub keep_alive: bool,
    pub node_key: NodePublic,
    pub disco_key: DiscoPublic,
    /// Long poll when true; otherwise one response (or, with `omit_peers`, a "lite" update).
    pub stream: bool,
    pub hostinfo: Option<Hostinfo>,
    pub endpoints: Vec<String>,
    pub endpoint_types: Vec<i64>,
    pub omit_peers: bool,
    pub debug_flags: Vec<String>,
}

impl MapRequest {
    /// A lite update: new endpoints/hostinfo, no response expected but a 200.
    pub fn is_lite_update(&self) -> bool {
        !self.stream && self.omit_peers
    }
}

/// A message on the map stream. Absent fields mean "unchanged" (delta encoding).
#[derive(Debug, Clone, Serialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct MapResponse {
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub keep_alive: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<Node>,
    /// The complete peer list. Must be non-empty to mean anything: an empty list is "absent".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peers: Option<Vec<NodeJson>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub peers_changed: Vec<NodeJson>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub peers_removed: Vec<NodeId>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub peers_changed_patch: Vec<PeerChange>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub online_change: BTreeMap<NodeId, bool>,
    #[serde(rename = "DERPMap", skip_serializing_if = "Option::is_none")]
    pub derp_map: Option<DerpMap>,
    #[serde(rename = "DNSConfig", skip_serializing_if = "Option::is_none")]
    pub dns_config: Option<DnsConfig>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub domain: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub collect_services: Option<bool>,
    /// `None`: unchanged. `Some(vec![])`: deny all inbound.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packet_filter: Option<Vec<FilterRule>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub user_profiles: Vec<UserProfile>,
    #[serde(rename = "SSHPolicy", skip_serializing_if = "Option::is_none")]
    pub ssh_policy: Option<SshPolicy>,
    #[serde(with = "time_fmt::optional", skip_serializing_if = "Option::is_none")]
    pub control_time: Option<OffsetDateTime>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub debug: Option<Debug>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<Vec<String>>,
}

#[derive(Debug, Clone, Serialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct Debug {
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub disable_log_tail: bool,
}

/// A peer `Node` in a response: built for this message, or serialised once and shared by
/// every message that carries it (servers render each node version once, not per viewer).
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum NodeJson {
    Built(Box<Node>),
    Rendered(Arc<RawValue>),
}

/// `tailcfg.Node`, as a peer or as the node itself.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct Node {
    #[serde(rename = "ID")]
    pub id: NodeId,
    #[serde(rename = "StableID")]
    pub stable_id: String,
    /// FQDN with a trailing dot.
    pub name: String,
    pub user: UserId,
    pub key: NodePublic,
    #[serde(with = "time_fmt::zero_is_none")]
    pub key_expiry: Option<OffsetDateTime>,
    /// The node's machine key: set in the node's own `Node` only. A peer's is none of its
    /// peers' business (it names the node towards the control plane, nothing else), the
    /// field is `omitzero` in tailcfg, and clients read a peer's only to compare it with
    /// the one sent before. Leaving it out made a 10,000-node storm's bytes 27 % smaller
    /// (BENCHMARKS.md): the key is 32 bytes of entropy in a ~130-byte compressed peer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<MachinePublic>,
    pub disco_key: DiscoPublic,
    pub addresses: Vec<IpNet>,
    #[serde(rename = "AllowedIPs")]
    pub allowed_ips: Vec<IpNet>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<String>,
    /// Pre-capver-111 form of `HomeDERP`; still sent for older clients.
    #[serde(rename = "DERP", default, skip_serializing_if = "String::is_empty")]
    pub legacy_derp: String,
    #[serde(rename = "HomeDERP", default, skip_serializing_if = "is_zero_i64")]
    pub home_derp: i64,
    #[serde(default)]
    pub hostinfo: Hostinfo,
    #[serde(with = "time_fmt::required")]
    pub created: OffsetDateTime,
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub cap: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub primary_routes: Vec<IpNet>,
    #[serde(
        default,
        with = "time_fmt::optional",
        skip_serializing_if = "Option::is_none"
    )]
    pub last_seen: Option<OffsetDateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub online: Option<bool>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub machine_authorized: bool,
    #[serde(rename = "CapMap", default, skip_serializing_if = "BTreeMap::is_empty")]
    pub cap_map: BTreeMap<String, Option<Vec<Value>>>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub expired: bool,
}

/// A light change to one peer; only the fields that are set are applied.
#[derive(Debug, Clone, Serialize, Default, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct PeerChange {
    #[serde(rename = "NodeID")]
    pub node_id: NodeId,
    #[serde(rename = "DERPRegion", skip_serializing_if = "Option::is_none")]
    pub derp_region: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cap: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<NodePublic>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disco_key: Option<DiscoPublic>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub online: Option<bool>,
    #[serde(with = "time_fmt::optional", skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<OffsetDateTime>,
    #[serde(with = "time_fmt::optional", skip_serializing_if = "Option::is_none")]
    pub key_expiry: Option<OffsetDateTime>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct UserProfile {
    #[serde(rename = "ID")]
    pub id: UserId,
    pub login_name: String,
    pub display_name: String,
    #[serde(rename = "ProfilePicURL", default)]
    pub profile_pic_url: String,
}

fn is_zero_i64(v: &i64) -> bool {
    *v == 0
}

fn is_zero_u32(v: &u32) -> bool {
    *v == 0
}

/// Node attributes (self `CapMap` keys) the server sets.
pub mod node_attr {
    pub const ADMIN: &str = "https://tailscale.com/cap/is-admin";
    pub const SSH: &str = "https://tailscale.com/cap/ssh";
    pub const FILE_SHARING: &str = "https://tailscale.com/cap/file-sharing";
    pub const DEFAULT_AUTO_UPDATE: &str = "default-auto-update";
    pub const DISABLE_CAPTIVE_PORTAL_DETECTION: &str = "disable-captive-portal-detection";
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> Node {
        Node {
            id: 2,
            stable_id: "n2".into(),
            name: "node-b.tail.test.".into(),
            user: 1,
            key: NodePublic([1; 32]),
            key_expiry: None,
            machine: None,
            disco_key: DiscoPublic([3; 32]),
            addresses: vec!["100.64.0.2/32".parse().unwrap()],
            allowed_ips: vec!["100.64.0.2/32".parse().unwrap()],
            endpoints: vec![],
            legacy_derp: String::new(),
            home_derp: 999,
            hostinfo: Hostinfo::default(),
            created: OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap(),
            cap: 130,
            tags: vec![],
            primary_routes: vec![],
            last_seen: None,
            online: Some(true),
            machine_authorized: true,
            cap_map: BTreeMap::new(),
            expired: false,
        }
    }

    #[test]
    fn node_json_has_go_field_names_and_zero_time() {
        let v: Value = serde_json::to_value(node()).unwrap();
        assert_eq!(v["ID"], 2);
        assert_eq!(v["StableID"], "n2");
        assert_eq!(v["KeyExpiry"], "0001-01-01T00:00:00Z");
        assert_eq!(v["Created"], "2023-11-14T22:13:20Z");
        assert_eq!(v["HomeDERP"], 999);
        assert_eq!(v["AllowedIPs"][0], "100.64.0.2/32");
        assert!(
            v.get("Endpoints").is_none(),
            "omitempty fields are left out"
        );
        assert!(v.get("LastSeen").is_none());
        assert!(
            v.get("Machine").is_none(),
            "a peer's machine key is left out"
        );
        let back: Node = serde_json::from_value(v).unwrap();
        assert_eq!(back, node());
        let me = Node {
            machine: Some(MachinePublic([2; 32])),
            ..node()
        };
        let v: Value = serde_json::to_value(&me).unwrap();
        assert_eq!(v["Machine"], format!("mkey:{}", "02".repeat(32)));
    }

    #[test]
    fn map_response_omits_unchanged_parts_and_keys_maps_by_decimal_id() {
        let mut r = MapResponse::default();
        r.online_change.insert(7, false);
        r.packet_filter = Some(vec![]);
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(json, r#"{"OnlineChange":{"7":false},"PacketFilter":[]}"#);
        let keep_alive = MapResponse {
            keep_alive: true,
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_string(&keep_alive).unwrap(),
            r#"{"KeepAlive":true}"#
        );
    }

    #[test]
    fn map_request_tolerates_unknown_fields() {
        let req: MapRequest = serde_json::from_str(
            r#"{"Version":130,"Compress":"zstd","KeepAlive":true,"Stream":true,
                "NodeKey":"nodekey:0101010101010101010101010101010101010101010101010101010101010101",
                "HardwareAttestationKey":"hwattestpub:00","Endpoints":["127.0.0.1:41641"],
                "Hostinfo":{"Hostname":"a","NetInfo":{"PreferredDERP":999,"WorkingUDP":true},"Future":1}}"#,
        )
        .unwrap();
        assert!(req.stream && !req.is_lite_update());
        let hi = req.hostinfo.unwrap();
        assert_eq!(hi.preferred_derp(), 999);
        assert_eq!(
            hi.rest["Future"], 1,
            "unknown Hostinfo fields are kept for peers"
        );
    }
}
