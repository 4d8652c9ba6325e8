//! `tailcfg.DNSConfig`: MagicDNS and resolvers pushed to nodes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct DnsConfig {
    /// Resolvers for all queries (override the node's local DNS).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resolvers: Vec<Resolver>,
    /// Split DNS: domain (with trailing dot) → resolvers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub routes: BTreeMap<String, Vec<Resolver>>,
    /// Fallback resolvers used when `resolvers` is empty and the node keeps its own DNS.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fallback_resolvers: Vec<Resolver>,
    /// Search domains.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub domains: Vec<String>,
    /// MagicDNS on.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub proxied: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_records: Vec<DnsRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct Resolver {
    pub addr: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct DnsRecord {
    pub name: String,
    #[serde(rename = "Type", default, skip_serializing_if = "String::is_empty")]
    pub record_type: String,
    pub value: String,
}
