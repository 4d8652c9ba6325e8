//! The tailnet's DNS settings (MagicDNS, nameservers, split DNS, search domains, extra
//! records): their validation, their `DNSConfig` form, and their effect on node names.
//!
//! The config file's `dns.*` keys are the first settings; once an administrator saves new
//! ones (console or CLI) they are stored in the database and win over the file.

use std::collections::BTreeMap;
use std::net::IpAddr;

use oxiscale_tailcfg::{DnsConfig, DnsRecord, Resolver};
use serde::{Deserialize, Serialize};

use super::effects::{Change, Effects};
use super::state::State;
use crate::config;

/// Key of the stored settings in the `settings` table.
pub const DNS_SETTING_KEY: &str = "dns";

/// Bounds on list lengths: a DNSConfig goes to every node in every full map.
const MAX_ENTRIES: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsSettings {
    pub magic_dns: bool,
    /// Names of nodes are `<name>.<base_domain>`.
    pub base_domain: String,
    /// Send the global nameservers as the node's resolvers (instead of as fallbacks).
    pub override_local_dns: bool,
    pub nameservers: Vec<String>,
    /// Domain → resolvers.
    pub split: BTreeMap<String, Vec<String>>,
    pub search_domains: Vec<String>,
    pub extra_records: Vec<ExtraRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtraRecord {
    pub name: String,
    /// `A` or `AAAA`.
    pub record_type: String,
    pub value: String,
}

/// Why DNS settings were refused; the text names the field and the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct DnsError {
    pub field: String,
    pub message: String,
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> DnsError {
    DnsError {
        field: field.into(),
        message: message.into(),
    }
}

impl DnsSettings {
    /// The settings the config file's `dns.*` keys describe.
    pub fn from_config(dns: &config::DnsConfig) -> DnsSettings {
        DnsSettings {
            magic_dns: dns.magic_dns,
            base_domain: dns.base_domain.trim_matches('.').to_owned(),
            override_local_dns: dns.override_local_dns,
            nameservers: dns.nameservers.global.clone(),
            split: dns.nameservers.split.clone(),
            search_domains: dns.search_domains.clone(),
            extra_records: dns
                .extra_records
                .iter()
                .map(|r| ExtraRecord {
                    name: r.name.clone(),
                    record_type: r.record_type.clone(),
                    value: r.value.clone(),
                })
                .collect(),
        }
    }

    /// Checks every field and returns the settings in canonical form (trimmed, domains in
    /// lower case without a trailing dot). `server_host` is the host of `server_url`: the
    /// base domain must not contain it, or clients would resolve the server inside the
    /// tailnet.
    pub fn validated(self, server_host: &str) -> Result<DnsSettings, DnsError> {
        let base_domain = self
            .base_domain
            .trim()
            .trim_matches('.')
            .to_ascii_lowercase();
        if base_domain.is_empty() {
            if self.magic_dns {
                return Err(invalid("base domain", "required while MagicDNS is on"));
            }
        } else {
            check_domain("base domain", &base_domain)?;
            let host = server_host.trim_matches('.').to_ascii_lowercase();
            if host == base_domain || host.ends_with(&format!(".{base_domain}")) {
                return Err(invalid(
                    "base domain",
                    format!(
                        "{base_domain:?} must not be the server's host name {host:?} or a suffix of it"
                    ),
                ));
            }
        }
        let nameservers = self
            .nameservers
            .iter()
            .map(|n| check_nameserver("global nameservers", n))
            .collect::<Result<Vec<_>, _>>()?;
        bounded("global nameservers", nameservers.len())?;
        no_duplicates("global nameservers", &nameservers)?;
        if self.override_local_dns && nameservers.is_empty() {
            return Err(invalid(
                "override local DNS",
                "needs at least one global nameserver",
            ));
        }
        let mut split = BTreeMap::new();
        for (domain, servers) in &self.split {
            let domain = domain.trim().trim_matches('.').to_ascii_lowercase();
            let field = format!("split DNS {domain}");
            check_domain(&field, &domain)?;
            let servers = servers
                .iter()
                .map(|n| check_nameserver(&field, n))
                .collect::<Result<Vec<_>, _>>()?;
            if servers.is_empty() {
                return Err(invalid(field, "needs at least one nameserver"));
            }
            bounded(&field, servers.len())?;
            no_duplicates(&field, &servers)?;
            if split.insert(domain.clone(), servers).is_some() {
                return Err(invalid("split DNS", format!("{domain:?} appears twice")));
            }
        }
        bounded("split DNS", split.len())?;
        let search_domains = self
            .search_domains
            .iter()
            .map(|d| {
                let d = d.trim().trim_matches('.').to_ascii_lowercase();
                check_domain("search domains", &d).map(|()| d)
            })
            .collect::<Result<Vec<_>, _>>()?;
        bounded("search domains", search_domains.len())?;
        no_duplicates("search domains", &search_domains)?;
        let extra_records = self
            .extra_records
            .iter()
            .map(check_record)
            .collect::<Result<Vec<_>, _>>()?;
        bounded("extra records", extra_records.len())?;
        Ok(DnsSettings {
            magic_dns: self.magic_dns,
            base_domain,
            override_local_dns: self.override_local_dns,
            nameservers,
            split,
            search_domains,
            extra_records,
        })
    }

    /// The `DNSConfig` every node gets, with headscale's meanings of the settings.
    pub fn to_tailcfg(&self) -> DnsConfig {
        let resolvers = |addrs: &[String]| -> Vec<Resolver> {
            addrs.iter().map(|a| Resolver { addr: a.clone() }).collect()
        };
        let fqdn = |domain: &str| format!("{}.", domain.trim_matches('.'));
        let mut out = DnsConfig::default();
        if self.override_local_dns {
            out.resolvers = resolvers(&self.nameservers);
        } else {
            out.fallback_resolvers = resolvers(&self.nameservers);
        }
        out.routes = self
            .split
            .iter()
            .map(|(domain, addrs)| (fqdn(domain), resolvers(addrs)))
            .collect();
        if self.magic_dns {
            out.proxied = true;
            let base = self.base_domain.trim_matches('.').to_owned();
            // An empty route tells the client to answer names under the base domain itself.
            out.routes.entry(fqdn(&base)).or_default();
            out.domains.push(base);
        }
        for d in &self.search_domains {
            if !out.domains.contains(d) {
                out.domains.push(d.clone());
            }
        }
        out.extra_records = self
            .extra_records
            .iter()
            .map(|r| DnsRecord {
                name: r.name.clone(),
                record_type: r.record_type.clone(),
                value: r.value.clone(),
            })
            .collect();
        out
    }
}

impl State {
    /// Puts new DNS settings' naming part in force. Node names include the base domain, so
    /// when it changes every node hears about itself and every peer again.
    pub fn set_dns_names(&mut self, fx: &mut Effects, settings: &DnsSettings) {
        let base = settings.base_domain.trim_matches('.');
        self.settings.magic_dns = settings.magic_dns;
        if self.settings.base_domain != base {
            self.settings.base_domain = base.to_owned();
            self.renew_node_versions(fx);
        }
        fx.announce(Change::DnsConfig);
    }
}

fn bounded(field: &str, len: usize) -> Result<(), DnsError> {
    if len > MAX_ENTRIES {
        return Err(invalid(field, format!("at most {MAX_ENTRIES} entries")));
    }
    Ok(())
}

fn no_duplicates(field: &str, items: &[String]) -> Result<(), DnsError> {
    for (i, item) in items.iter().enumerate() {
        if items[..i].contains(item) {
            return Err(invalid(field, format!("{item:?} appears twice")));
        }
    }
    Ok(())
}

/// A DNS name: labels of letters, digits and hyphens (not at either end), 1–63 characters
/// each, 253 in all. At least two labels: a bare `local` would capture a whole TLD.
fn check_domain(field: &str, domain: &str) -> Result<(), DnsError> {
    if domain.is_empty() {
        return Err(invalid(field, "a domain name is required"));
    }
    if domain.len() > 253 {
        return Err(invalid(
            field,
            format!("{domain:?} is longer than 253 characters"),
        ));
    }
    for label in domain.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(invalid(
                field,
                format!(
                    "{domain:?} is not a valid domain name (labels of letters, digits and inner hyphens, 1-63 characters)"
                ),
            ));
        }
    }
    if !domain.contains('.') {
        return Err(invalid(
            field,
            format!("{domain:?} needs at least two labels, e.g. \"{domain}.example\""),
        ));
    }
    Ok(())
}

/// An IP address, or a DNS-over-HTTPS URL.
fn check_nameserver(field: &str, text: &str) -> Result<String, DnsError> {
    let text = text.trim();
    if text.parse::<IpAddr>().is_ok() {
        return Ok(text.to_owned());
    }
    if let Some(rest) = text.strip_prefix("https://") {
        let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if !host.is_empty() && !text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Ok(text.to_owned());
        }
    }
    Err(invalid(
        field,
        format!("{text:?} is neither an IP address nor an https:// (DNS over HTTPS) URL"),
    ))
}

fn check_record(record: &ExtraRecord) -> Result<ExtraRecord, DnsError> {
    let name = record
        .name
        .trim()
        .trim_end_matches('.')
        .to_ascii_lowercase();
    check_domain("extra records", &name)?;
    let record_type = record.record_type.trim().to_ascii_uppercase();
    let value = record.value.trim();
    let ok = match record_type.as_str() {
        "A" => value.parse::<std::net::Ipv4Addr>().is_ok(),
        "AAAA" => value.parse::<std::net::Ipv6Addr>().is_ok(),
        other => {
            return Err(invalid(
                "extra records",
                format!("{name}: type {other:?} is not supported (A or AAAA)"),
            ));
        }
    };
    if !ok {
        return Err(invalid(
            "extra records",
            format!(
                "{name}: {value:?} is not an IPv{} address",
                if record_type == "A" { 4 } else { 6 }
            ),
        ));
    }
    Ok(ExtraRecord {
        name,
        record_type,
        value: value.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> DnsSettings {
        DnsSettings {
            magic_dns: true,
            base_domain: "tail.example".into(),
            override_local_dns: false,
            nameservers: vec![],
            split: BTreeMap::new(),
            search_domains: vec![],
            extra_records: vec![],
        }
    }

    fn err(s: DnsSettings) -> String {
        s.validated("vpn.example.com").unwrap_err().to_string()
    }

    #[test]
    fn canonical_form_trims_and_lowercases() {
        let mut s = base();
        s.base_domain = " Tail.Example. ".into();
        s.nameservers = vec![" 1.1.1.1 ".into(), "https://dns.example/q".into()];
        s.split
            .insert("Corp.Example.".into(), vec!["10.0.0.53".into()]);
        s.search_domains = vec!["Corp.Example".into()];
        s.extra_records = vec![ExtraRecord {
            name: "NAS.corp.example.".into(),
            record_type: "a".into(),
            value: "100.64.0.9".into(),
        }];
        let v = s.validated("vpn.example.com").unwrap();
        assert_eq!(v.base_domain, "tail.example");
        assert_eq!(v.nameservers, vec!["1.1.1.1", "https://dns.example/q"]);
        assert_eq!(v.split["corp.example"], vec!["10.0.0.53"]);
        assert_eq!(v.search_domains, vec!["corp.example"]);
        assert_eq!(v.extra_records[0].name, "nas.corp.example");
        assert_eq!(v.extra_records[0].record_type, "A");
    }

    #[test]
    fn bad_input_is_refused_with_the_field_and_value() {
        let mut s = base();
        s.base_domain = String::new();
        assert!(err(s).contains("base domain: required"));
        let mut s = base();
        s.base_domain = "example.com".into();
        assert!(
            err(s).contains("server's host name"),
            "suffix of vpn.example.com"
        );
        let mut s = base();
        s.base_domain = "bad_domain.example".into();
        assert!(err(s).contains("not a valid domain name"));
        let mut s = base();
        s.nameservers = vec!["dns.google".into()];
        assert!(err(s).contains("\"dns.google\" is neither an IP address"));
        let mut s = base();
        s.override_local_dns = true;
        assert!(err(s).contains("needs at least one global nameserver"));
        let mut s = base();
        s.split.insert("corp.example".into(), vec![]);
        assert!(err(s).contains("split DNS corp.example: needs at least one nameserver"));
        let mut s = base();
        s.search_domains = vec!["a.example".into(), "A.example.".into()];
        assert!(err(s).contains("appears twice"));
        let mut s = base();
        s.extra_records = vec![ExtraRecord {
            name: "nas.example".into(),
            record_type: "A".into(),
            value: "fd7a::1".into(),
        }];
        assert!(err(s).contains("nas.example: \"fd7a::1\" is not an IPv4 address"));
        let mut s = base();
        s.extra_records = vec![ExtraRecord {
            name: "nas.example".into(),
            record_type: "CNAME".into(),
            value: "x.example".into(),
        }];
        assert!(err(s).contains("not supported"));
        let mut s = base();
        s.search_domains = (0..101).map(|i| format!("d{i}.example")).collect();
        assert!(err(s).contains("at most 100"));
    }

    #[test]
    fn magic_dns_off_needs_no_base_domain() {
        let mut s = base();
        s.magic_dns = false;
        s.base_domain = String::new();
        let d = s.validated("vpn.example.com").unwrap().to_tailcfg();
        assert!(!d.proxied);
        assert!(d.domains.is_empty());
    }

    #[test]
    fn tailcfg_form_matches_the_config_file_meaning() {
        let mut c = config::DnsConfig {
            base_domain: "tail.test".into(),
            ..Default::default()
        };
        c.nameservers.global = vec!["1.1.1.1".into()];
        c.nameservers
            .split
            .insert("corp.example".into(), vec!["10.0.0.53".into()]);
        c.extra_records = vec![config::ExtraRecord {
            name: "nas.tail.test".into(),
            record_type: "A".into(),
            value: "100.64.0.9".into(),
        }];
        let d = DnsSettings::from_config(&c).to_tailcfg();
        assert!(d.proxied);
        assert_eq!(d.domains, vec!["tail.test"]);
        assert!(d.routes["tail.test."].is_empty());
        assert_eq!(d.routes["corp.example."][0].addr, "10.0.0.53");
        assert_eq!(d.fallback_resolvers[0].addr, "1.1.1.1");
        assert_eq!(d.extra_records[0].value, "100.64.0.9");
    }
}
