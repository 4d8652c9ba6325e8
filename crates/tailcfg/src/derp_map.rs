//! `tailcfg.DERPMap` (protocol/04 §5): where the relays are.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct DerpMap {
    #[serde(rename = "Regions", default)]
    pub regions: BTreeMap<i64, DerpRegion>,
    #[serde(
        rename = "omitDefaultRegions",
        default,
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub omit_default_regions: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct DerpRegion {
    #[serde(rename = "RegionID")]
    pub region_id: i64,
    #[serde(default)]
    pub region_code: String,
    #[serde(default)]
    pub region_name: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub avoid: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_measure_no_home: bool,
    #[serde(default)]
    pub nodes: Vec<DerpNode>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct DerpNode {
    pub name: String,
    #[serde(rename = "RegionID")]
    pub region_id: i64,
    pub host_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cert_name: String,
    #[serde(rename = "IPv4", default, skip_serializing_if = "String::is_empty")]
    pub ipv4: String,
    #[serde(rename = "IPv6", default, skip_serializing_if = "String::is_empty")]
    pub ipv6: String,
    /// 0 means 3478; -1 disables STUN.
    #[serde(rename = "STUNPort", default, skip_serializing_if = "is_zero")]
    pub stun_port: i64,
    #[serde(
        rename = "STUNOnly",
        default,
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub stun_only: bool,
    /// 0 means 443.
    #[serde(rename = "DERPPort", default, skip_serializing_if = "is_zero")]
    pub derp_port: i64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure_for_tests: bool,
    #[serde(
        rename = "CanPort80",
        default,
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub can_port80: bool,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}
