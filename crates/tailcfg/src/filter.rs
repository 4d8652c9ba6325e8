//! `tailcfg.FilterRule`: the inbound allow-list a node enforces (protocol/03 §1).

use serde::{Deserialize, Serialize};

/// One rule of a node's packet filter. `SrcIPs` entries are `*`, an IP, a CIDR without host
/// bits, an inclusive `a-b` range, or `cap:<capability>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub struct FilterRule {
    #[serde(rename = "SrcIPs")]
    pub src_ips: Vec<String>,
    #[serde(rename = "DstPorts", default, skip_serializing_if = "Vec::is_empty")]
    pub dst_ports: Vec<NetPortRange>,
    /// IANA protocol numbers; empty means TCP, UDP, ICMPv4 and ICMPv6.
    #[serde(rename = "IPProto", default, skip_serializing_if = "Vec::is_empty")]
    pub ip_proto: Vec<u8>,
    /// Application capabilities granted to the sources (raw JSON, passed through).
    #[serde(rename = "CapGrant", default, skip_serializing_if = "Vec::is_empty")]
    pub cap_grant: Vec<serde_json::Value>,
}

/// A destination: an IP, CIDR, range or `*`, with a port range.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NetPortRange {
    #[serde(rename = "IP")]
    pub ip: String,
    #[serde(rename = "Ports")]
    pub ports: PortRange,
}

/// An inclusive port range; `{0, 65535}` is any port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PortRange {
    #[serde(rename = "First")]
    pub first: u16,
    #[serde(rename = "Last")]
    pub last: u16,
}

impl PortRange {
    pub const ANY: PortRange = PortRange {
        first: 0,
        last: 65535,
    };
}

impl FilterRule {
    /// `tailcfg.FilterAllowAll`: every source may reach every port. What a tailnet with no
    /// policy gets.
    pub fn allow_all() -> Vec<FilterRule> {
        vec![FilterRule {
            src_ips: vec!["*".into()],
            dst_ports: vec![NetPortRange {
                ip: "*".into(),
                ports: PortRange::ANY,
            }],
            ..Default::default()
        }]
    }
}
