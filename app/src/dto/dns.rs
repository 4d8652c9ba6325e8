//! Data of the dns area, exchanged between its server functions and pages.

use serde::{Deserialize, Serialize};

/// The tailnet's DNS settings as the DNS page edits them. The server validates them and
/// answers with their canonical form (or refuses them, saying which field is wrong).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsSettings {
    pub magic_dns: bool,
    pub base_domain: String,
    pub override_local_dns: bool,
    pub nameservers: Vec<String>,
    pub split_dns: Vec<SplitDns>,
    pub search_domains: Vec<String>,
    pub extra_records: Vec<ExtraRecord>,
}

/// Queries under `domain` go to `nameservers`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitDns {
    pub domain: String,
    pub nameservers: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtraRecord {
    pub name: String,
    /// `A` or `AAAA`.
    pub record_type: String,
    pub value: String,
}

/// The record types the server accepts.
pub const RECORD_TYPES: &[&str] = &["A", "AAAA"];
