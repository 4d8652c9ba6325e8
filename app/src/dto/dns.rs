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

/// Splits a list typed by hand (one entry per line, or separated by commas or spaces).
pub fn split_list(text: &str) -> Vec<String> {
    text.split(|c: char| c == ',' || c.is_whitespace())
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_split_on_lines_commas_and_spaces() {
        assert_eq!(
            split_list(" 1.1.1.1,\n9.9.9.9  fd7a::1\n\n"),
            vec!["1.1.1.1", "9.9.9.9", "fd7a::1"]
        );
        assert!(split_list(" \n ").is_empty());
    }
}
