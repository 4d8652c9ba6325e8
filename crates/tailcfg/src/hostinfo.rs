//! `tailcfg.Hostinfo`: what a client says about itself. The server reads a few fields and
//! echoes the whole object to peers, so unknown fields are kept verbatim.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct Hostinfo {
    #[serde(rename = "Hostname", default, skip_serializing_if = "String::is_empty")]
    pub hostname: String,
    #[serde(rename = "OS", default, skip_serializing_if = "String::is_empty")]
    pub os: String,
    #[serde(
        rename = "IPNVersion",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub ipn_version: String,
    /// Routes the node offers: subnets, and `0.0.0.0/0` + `::/0` for an exit node.
    #[serde(rename = "RoutableIPs", default, skip_serializing_if = "Vec::is_empty")]
    pub routable_ips: Vec<ipnet::IpNet>,
    #[serde(rename = "RequestTags", default, skip_serializing_if = "Vec::is_empty")]
    pub request_tags: Vec<String>,
    #[serde(rename = "NetInfo", default, skip_serializing_if = "Option::is_none")]
    pub net_info: Option<NetInfo>,
    /// Everything else, passed through unchanged.
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

impl Hostinfo {
    /// `OSVersion` (kept with the fields the server passes through).
    pub fn os_version(&self) -> &str {
        self.rest
            .get("OSVersion")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct NetInfo {
    #[serde(rename = "PreferredDERP", default, skip_serializing_if = "is_zero")]
    pub preferred_derp: i64,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

impl Hostinfo {
    pub fn preferred_derp(&self) -> i64 {
        self.net_info.as_ref().map_or(0, |n| n.preferred_derp)
    }
}
