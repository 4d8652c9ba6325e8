//! The policy document: parsed from HuJSON into typed sections and checked for everything
//! that does not depend on the tailnet's users and nodes.

use crate::PolicyError;
pub use crate::grant::Grant;
use crate::hujson::{self, JKind, JVal};
use ipnet::IpNet;
use oxiscale_tailcfg::PortRange;
use std::collections::BTreeMap;
use std::net::IpAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AutoGroup {
    Internet,
    Member,
    Tagged,
    SelfDevices,
    NonRoot,
    DangerAll,
}

impl AutoGroup {
    fn parse(s: &str) -> Option<AutoGroup> {
        Some(match s {
            "autogroup:internet" => AutoGroup::Internet,
            "autogroup:member" => AutoGroup::Member,
            "autogroup:tagged" => AutoGroup::Tagged,
            "autogroup:self" => AutoGroup::SelfDevices,
            "autogroup:nonroot" => AutoGroup::NonRoot,
            "autogroup:danger-all" => AutoGroup::DangerAll,
            _ => return None,
        })
    }
}

/// Something that names a set of addresses.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Alias {
    Wildcard,
    /// `name@`, `name@domain` or an email; matched against user names and emails.
    User(String),
    /// `user:*@domain`: every user whose email is in that domain.
    UserDomain(String),
    Group(String),
    /// `idpgroup:<name>`: the people whose identity provider put them in group `<name>` at
    /// their last sign-in. A prefix of its own, so it can never mean a `group:` entry.
    IdpGroup(String),
    Tag(String),
    Host(String),
    Prefix(IpNet),
    AutoGroup(AutoGroup),
}

/// The alias prefix of identity-provider groups.
pub const IDP_GROUP_PREFIX: &str = "idpgroup:";

#[derive(Debug, Clone)]
pub struct AliasPorts {
    pub alias: Alias,
    pub ports: Vec<PortRange>,
}

/// One `ip` entry of a grant, or the `proto` + ports of an ACL destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtoPorts {
    /// IANA numbers; empty = TCP, UDP, ICMP (the client's default).
    pub protos: Vec<u8>,
    pub ports: Vec<PortRange>,
}

#[derive(Debug, Clone)]
pub struct Acl {
    pub src: Vec<Alias>,
    pub dst: Vec<AliasPorts>,
    pub protos: Vec<u8>,
    /// `srcPosture`: the postures a source must meet one of.
    pub src_posture: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SshActionKind {
    Accept,
    Check,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SshUser {
    Root,
    NonRoot,
    /// `localpart:*@domain`: each source user may log in as the local part of their email.
    Localpart(String),
    Named(String),
}

#[derive(Debug, Clone)]
pub struct SshRule {
    pub action: SshActionKind,
    pub src: Vec<Alias>,
    pub dst: Vec<Alias>,
    pub users: Vec<SshUser>,
    pub accept_env: Vec<String>,
    /// Nanoseconds; `None` = service default, `Some(0)` = "always".
    pub check_period: Option<i64>,
    /// `srcPosture`: the postures a source must meet one of.
    pub src_posture: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct PolicyTest {
    pub src: String,
    pub protos: Vec<u8>,
    pub proto_given: bool,
    pub accept: Vec<String>,
    pub deny: Vec<String>,
    pub line: u32,
    pub col: u32,
}

#[derive(Debug, Clone)]
pub struct SshTest {
    pub src: String,
    pub dst: Vec<String>,
    pub accept: Vec<String>,
    pub check: Vec<String>,
    pub deny: Vec<String>,
    pub line: u32,
    pub col: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    User(String),
    Group(String),
    Tag(String),
    UserDomain(String),
}

#[derive(Debug, Clone)]
pub struct NodeAttr {
    pub target: Vec<Alias>,
    pub attr: Vec<String>,
}

/// A parsed, structurally valid policy. Immutable; resolve it against a tailnet with
/// [`Policy::compile`](crate::Policy::compile).
#[derive(Debug, Clone, Default)]
pub struct PolicyDoc {
    pub groups: BTreeMap<String, Vec<String>>,
    pub hosts: BTreeMap<String, IpNet>,
    pub tag_owners: BTreeMap<String, Vec<Owner>>,
    /// `None` when neither `acls` nor `grants` is present: allow-all.
    pub acls: Option<Vec<Acl>>,
    pub grants: Option<Vec<Grant>>,
    pub ssh: Option<Vec<SshRule>>,
    pub auto_routes: Vec<(IpNet, Vec<Owner>)>,
    pub auto_exit: Vec<Owner>,
    pub tests: Vec<PolicyTest>,
    pub ssh_tests: Vec<SshTest>,
    pub node_attrs: Vec<NodeAttr>,
    /// Every node picks a random UDP port instead of 41641.
    pub randomize_client_port: bool,
    /// `postures`: named lists of conditions on node attributes.
    pub postures: BTreeMap<String, Vec<crate::posture::Condition>>,
    /// `defaultSrcPosture`: the postures of every rule that names none.
    pub default_src_posture: Vec<String>,
}

pub(crate) fn obj<'a>(v: &'a JVal, what: &str) -> Result<&'a [(String, JVal)], PolicyError> {
    match &v.kind {
        JKind::Obj(m) => Ok(m),
        _ => Err(v.err(format!("{what}: expected an object, got {}", v.type_name()))),
    }
}

/// `null` counts as absent, as Go's decoder treats it.
pub(crate) fn arr<'a>(v: &'a JVal, what: &str) -> Result<&'a [JVal], PolicyError> {
    match &v.kind {
        JKind::Arr(a) => Ok(a),
        JKind::Null => Ok(&[]),
        _ => Err(v.err(format!("{what}: expected an array, got {}", v.type_name()))),
    }
}

pub(crate) fn string<'a>(v: &'a JVal, what: &str) -> Result<&'a str, PolicyError> {
    v.as_str()
        .ok_or_else(|| v.err(format!("{what}: expected a string, got {}", v.type_name())))
}

pub(crate) fn strings(v: &JVal, what: &str) -> Result<Vec<(String, u32, u32)>, PolicyError> {
    arr(v, what)?
        .iter()
        .map(|e| Ok((string(e, what)?.to_string(), e.line, e.col)))
        .collect()
}

pub fn is_valid_tag(t: &str) -> bool {
    t.strip_prefix("tag:")
        .and_then(|r| r.chars().next())
        .is_some_and(|c| c.is_ascii_alphabetic())
}

/// Parses one alias as written in `src`, `dst` (without ports), groups' users, owners.
pub fn parse_alias(raw: &str, hosts: &BTreeMap<String, IpNet>) -> Result<Alias, String> {
    let s = raw.trim();
    if s == "*" {
        return Ok(Alias::Wildcard);
    }
    if let Some(d) = s.strip_prefix("user:*@") {
        return Ok(Alias::UserDomain(d.to_string()));
    }
    if s.starts_with("group:") {
        return Ok(Alias::Group(s.to_string()));
    }
    if let Some(name) = s.strip_prefix(IDP_GROUP_PREFIX) {
        if name.is_empty() {
            return Err(format!(
                "{s:?}: name the identity provider's group after {IDP_GROUP_PREFIX}"
            ));
        }
        return Ok(Alias::IdpGroup(name.to_string()));
    }
    if s.starts_with("tag:") {
        if !is_valid_tag(s) {
            return Err(format!(
                "{s:?}: tag names must start with a letter, after 'tag:'"
            ));
        }
        return Ok(Alias::Tag(s.to_string()));
    }
    if s.starts_with("autogroup:") {
        return AutoGroup::parse(s)
            .map(Alias::AutoGroup)
            .ok_or_else(|| format!("unknown autogroup {s:?}"));
    }
    if s.contains('@') {
        return Ok(Alias::User(s.to_string()));
    }
    if let Some(p) = hosts.get(s) {
        let _ = p;
        return Ok(Alias::Host(s.to_string()));
    }
    if let Some(p) = parse_prefix(s) {
        return Ok(Alias::Prefix(p));
    }
    if s.is_empty() {
        return Err("empty alias".into());
    }
    Err(format!("host {s:?} not found"))
}

/// An IP (as a single-address prefix) or a CIDR; host bits are masked off.
pub fn parse_prefix(s: &str) -> Option<IpNet> {
    if s.contains('/') {
        s.parse::<IpNet>().ok().map(|n| n.trunc())
    } else {
        s.parse::<IpAddr>().ok().map(IpNet::from)
    }
}

/// `*`, `22`, `80,443`, `1000-2000`, or comma lists of those.
pub fn parse_ports(s: &str) -> Result<Vec<PortRange>, String> {
    if s == "*" {
        return Ok(vec![PortRange::ANY]);
    }
    let mut out = Vec::new();
    for part in s.split(',') {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a, Some(b)),
            None => (part, None),
        };
        let first: u16 = a
            .parse()
            .map_err(|_| format!("port range {part:?}: invalid first integer"))?;
        let last: u16 = match b {
            Some(b) => b
                .parse()
                .map_err(|_| format!("port range {part:?}: invalid last integer"))?,
            None => first,
        };
        if first == 0 {
            return Err(format!(
                "port range {part:?}: first port must be >0, or use '*' for wildcard"
            ));
        }
        if last < first {
            return Err(format!(
                "port range {part:?}: first port is after last port"
            ));
        }
        out.push(PortRange { first, last });
    }
    Ok(out)
}

/// Splits `alias:ports` at the last colon.
pub fn split_alias_ports(s: &str) -> Result<(&str, &str), String> {
    if let Some(rest) = s.strip_prefix('[') {
        // `[v6]:port`
        if let Some((addr, ports)) = rest.split_once("]:") {
            return Ok((addr, ports));
        }
    }
    s.rsplit_once(':')
        .ok_or_else(|| format!("{s:?}: missing port (use \"{s}:*\" for any port)"))
}

pub fn parse_proto(v: &JVal) -> Result<Vec<u8>, PolicyError> {
    let s = match &v.kind {
        JKind::Str(s) => s.to_lowercase(),
        JKind::Num(n) => n.clone(),
        JKind::Null => return Ok(vec![]),
        _ => return Err(v.err("proto: expected a string")),
    };
    proto_numbers(&s).map_err(|m| v.err(m))
}

pub fn proto_numbers(s: &str) -> Result<Vec<u8>, String> {
    Ok(match s {
        "" => vec![],
        "icmp" => vec![1],
        "igmp" => vec![2],
        "ipv4" | "ip-in-ip" => vec![4],
        "tcp" => vec![6],
        "egp" => vec![8],
        "igp" => vec![9],
        "udp" => vec![17],
        "gre" => vec![47],
        "esp" => vec![50],
        "ah" => vec![51],
        "ipv6-icmp" => vec![58],
        "sctp" => vec![132],
        "fc" => vec![133],
        "*" => {
            return Err(
                "proto name \"*\" not known; use protocol number 0-255 or protocol name".into(),
            );
        }
        n => {
            if n.len() > 1 && n.starts_with('0') || n == "0" {
                return Err(format!("proto {n:?}: leading zeros are not allowed"));
            }
            vec![
                n.parse::<u8>().map_err(|_| {
                    format!("proto {n:?} is not a known protocol name or number 0-255")
                })?,
            ]
        }
    })
}

/// Only TCP, UDP, SCTP (or the default set) carry ports.
pub(crate) fn proto_allows_ports(protos: &[u8]) -> bool {
    protos.is_empty() || protos.iter().all(|p| matches!(p, 6 | 17 | 132))
}

/// Go `time.ParseDuration` for the units a policy uses.
pub fn parse_go_duration(s: &str) -> Result<i64, String> {
    let bad = || format!("time: invalid duration {s:?}");
    let (neg, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        if n == 0 {
            return Err(bad());
        }
        let num: f64 = rest[..n].parse().map_err(|_| bad())?;
        rest = &rest[n..];
        let u = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = match &rest[..u] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(bad()),
        };
        rest = &rest[u..];
        total += num * unit;
    }
    if total > i64::MAX as f64 {
        return Err(bad());
    }
    Ok(if neg { -(total as i64) } else { total as i64 })
}

/// Go's `time.Duration.String()`, for messages.
pub fn go_duration_string(ns: i64) -> String {
    let neg = ns < 0;
    let mut s = ns.unsigned_abs() / 1_000_000_000;
    let h = s / 3600;
    s %= 3600;
    let m = s / 60;
    s %= 60;
    let body = if h > 0 {
        format!("{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    };
    if neg { format!("-{body}") } else { body }
}

const MAX_CHECK_PERIOD: i64 = 168 * 3600 * 1_000_000_000;

pub(crate) fn unknown_field(k: &str, v: &JVal, section: &str) -> PolicyError {
    v.err(format!("{section}: unknown field {k:?}"))
}

fn parse_owner(s: &str) -> Result<Owner, String> {
    let s = s.trim();
    if s.starts_with("group:") {
        Ok(Owner::Group(s.into()))
    } else if s.starts_with("tag:") {
        if !is_valid_tag(s) {
            return Err(format!(
                "{s:?}: tag names must start with a letter, after 'tag:'"
            ));
        }
        Ok(Owner::Tag(s.into()))
    } else if let Some(d) = s.strip_prefix("user:*@") {
        Ok(Owner::UserDomain(d.into()))
    } else if s.contains('@') {
        Ok(Owner::User(s.into()))
    } else if s == "autogroup:admin" || s == "autogroup:owner" || s == "autogroup:member" {
        // Role groups: nobody in a self-hosted tailnet holds them; keep the name.
        Ok(Owner::User(s.into()))
    } else {
        Err(format!("{s:?} is not a valid owner (user, group or tag)"))
    }
}

impl PolicyDoc {
    pub fn parse(text: &str) -> Result<PolicyDoc, PolicyError> {
        let root = hujson::parse(text)?;
        let top = obj(&root, "policy")?;
        let mut doc = PolicyDoc::default();
        let get = |name: &str| top.iter().find(|(k, _)| k == name).map(|(_, v)| v);
        for (k, v) in top {
            match k.as_str() {
                "groups" | "hosts" | "tagOwners" | "acls" | "grants" | "ssh" | "autoApprovers"
                | "tests" | "sshTests" | "nodeAttrs" | "disableIPv4" | "derpMap" | "postures"
                | "defaultSrcPosture" | "ipsets" | "OneCGNATRoute" => {}
                "randomizeClientPort" => match v.kind {
                    JKind::Bool(b) => doc.randomize_client_port = b,
                    _ => {
                        return Err(v.err(format!(
                            "randomizeClientPort: expected true or false, got {}",
                            v.type_name()
                        )));
                    }
                },
                _ => return Err(unknown_field(k, v, "policy")),
            }
        }
        // hosts first: aliases elsewhere are resolved against them.
        if let Some(h) = get("hosts")
            && !matches!(h.kind, JKind::Null)
        {
            for (name, v) in obj(h, "hosts")? {
                let s = string(v, &format!("hosts[{name:?}]"))?;
                let p = parse_prefix(s.trim()).ok_or_else(|| {
                    v.err(format!(
                        "hosts[{name:?}]: {s:?} is not an IP address or CIDR"
                    ))
                })?;
                if name.contains(':') || name.contains('@') || name.is_empty() {
                    return Err(v.err(format!("hosts: invalid host name {name:?}")));
                }
                doc.hosts.insert(name.clone(), p);
            }
        }
        // postures before the rules that name them.
        if let Some(p) = get("postures")
            && !matches!(p.kind, JKind::Null)
        {
            doc.postures = crate::posture::parse_postures(obj(p, "postures")?)?;
        }
        if let Some(d) = get("defaultSrcPosture") {
            doc.default_src_posture = doc.posture_names(d, "defaultSrcPosture")?;
        }
        if let Some(g) = get("groups")
            && !matches!(g.kind, JKind::Null)
        {
            for (name, v) in obj(g, "groups")? {
                if !name.starts_with("group:") {
                    return Err(v.err(format!("groups: {name:?} must start with \"group:\"")));
                }
                let mut members = Vec::new();
                for (m, l, c) in strings(v, &format!("groups[{name:?}]"))? {
                    let m = m.trim().to_string();
                    if m.starts_with("group:") {
                        return Err(PolicyError::at(
                            l,
                            c,
                            format!("groups[{name:?}]: {m:?}: group members cannot be recursive"),
                        ));
                    }
                    if m.starts_with("tag:") || m.starts_with("autogroup:") || !m.contains('@') {
                        return Err(PolicyError::at(
                            l,
                            c,
                            format!("groups[{name:?}]: {m:?}: group members must be users"),
                        ));
                    }
                    members.push(m);
                }
                doc.groups.insert(name.clone(), members);
            }
        }
        if let Some(t) = get("tagOwners")
            && !matches!(t.kind, JKind::Null)
        {
            for (name, v) in obj(t, "tagOwners")? {
                if !is_valid_tag(name) {
                    return Err(v.err(format!(
                        "tagOwners[{name:?}]: tag names must start with a letter, after 'tag:'"
                    )));
                }
                let mut owners = Vec::new();
                for (o, l, c) in strings(v, &format!("tagOwners[{name:?}]"))? {
                    owners.push(
                        parse_owner(&o).map_err(|m| {
                            PolicyError::at(l, c, format!("tagOwners[{name:?}]: {m}"))
                        })?,
                    );
                }
                doc.tag_owners.insert(name.clone(), owners);
            }
        }
        doc.check_owner_refs()?;
        if let Some(a) = get("acls") {
            let mut acls = Vec::new();
            for (i, rule) in arr(a, "acls")?.iter().enumerate() {
                acls.push(doc.parse_acl(i, rule)?);
            }
            doc.acls = Some(acls);
        }
        if let Some(g) = get("grants") {
            let mut grants = Vec::new();
            for (i, rule) in arr(g, "grants")?.iter().enumerate() {
                grants.push(doc.parse_grant(i, rule)?);
            }
            doc.grants = Some(grants);
        }
        if let Some(s) = get("ssh") {
            let mut rules = Vec::new();
            for (i, rule) in arr(s, "ssh")?.iter().enumerate() {
                rules.push(doc.parse_ssh(i, rule)?);
            }
            doc.ssh = Some(rules);
        }
        if let Some(a) = get("autoApprovers") {
            doc.parse_auto_approvers(a)?;
        }
        if let Some(n) = get("nodeAttrs") {
            for (i, e) in arr(n, "nodeAttrs")?.iter().enumerate() {
                let what = format!("nodeAttrs[{i}]");
                let mut na = NodeAttr {
                    target: vec![],
                    attr: vec![],
                };
                for (k, v) in obj(e, &what)? {
                    match k.as_str() {
                        "target" => {
                            for (s, l, c) in strings(v, &what)? {
                                na.target.push(doc.alias_checked(&s, l, c, &what)?);
                            }
                        }
                        "attr" => na.attr = strings(v, &what)?.into_iter().map(|x| x.0).collect(),
                        "app" | "ipPool" => {}
                        _ => return Err(unknown_field(k, v, &what)),
                    }
                }
                doc.node_attrs.push(na);
            }
        }
        if let Some(t) = get("tests") {
            for (i, e) in arr(t, "tests")?.iter().enumerate() {
                let what = format!("tests[{i}]");
                let mut t = PolicyTest {
                    src: String::new(),
                    protos: vec![],
                    proto_given: false,
                    accept: vec![],
                    deny: vec![],
                    line: e.line,
                    col: e.col,
                };
                for (k, v) in obj(e, &what)? {
                    match k.as_str() {
                        "src" => t.src = string(v, &what)?.to_string(),
                        "proto" => {
                            t.proto_given = !matches!(v.kind, JKind::Null);
                            t.protos = parse_proto(v)?;
                        }
                        "accept" => {
                            t.accept = strings(v, &what)?.into_iter().map(|x| x.0).collect()
                        }
                        "deny" => t.deny = strings(v, &what)?.into_iter().map(|x| x.0).collect(),
                        _ if k.starts_with('#') => {}
                        _ => return Err(unknown_field(k, v, &what)),
                    }
                }
                doc.tests.push(t);
            }
        }
        if let Some(t) = get("sshTests") {
            for (i, e) in arr(t, "sshTests")?.iter().enumerate() {
                let what = format!("sshTests[{i}]");
                let mut t = SshTest {
                    src: String::new(),
                    dst: vec![],
                    accept: vec![],
                    check: vec![],
                    deny: vec![],
                    line: e.line,
                    col: e.col,
                };
                for (k, v) in obj(e, &what)? {
                    let list = || -> Result<Vec<String>, PolicyError> {
                        Ok(strings(v, &what)?.into_iter().map(|x| x.0).collect())
                    };
                    match k.as_str() {
                        "src" => t.src = string(v, &what)?.to_string(),
                        "dst" => {
                            for (d, l, c) in strings(v, &what)? {
                                check_ssh_test_dst(&d).map_err(|m| {
                                    PolicyError::at(l, c, format!("test(s) failed: {what}: {m}"))
                                })?;
                                t.dst.push(d);
                            }
                        }
                        "accept" => t.accept = list()?,
                        "check" => t.check = list()?,
                        "deny" => t.deny = list()?,
                        _ => return Err(unknown_field(k, v, &what)),
                    }
                }
                // A test that asserts nothing fails, as the service has it.
                if t.accept.is_empty() && t.check.is_empty() && t.deny.is_empty() {
                    return Err(e.err(format!(
                        "test(s) failed: {what}: give at least one user in accept, check or deny"
                    )));
                }
                doc.ssh_tests.push(t);
            }
        }
        Ok(doc)
    }

    fn check_owner_refs(&self) -> Result<(), PolicyError> {
        for (tag, owners) in &self.tag_owners {
            for o in owners {
                match o {
                    Owner::Group(g) if !self.groups.contains_key(g) => {
                        return Err(PolicyError::msg(format!(
                            "tagOwners[{tag:?}]: group not found: {g:?}"
                        )));
                    }
                    Owner::Tag(t) if !self.tag_owners.contains_key(t) => {
                        return Err(PolicyError::msg(format!(
                            "tagOwners[{tag:?}]: tag not found: {t:?}"
                        )));
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// Parses an alias and checks that groups, tags and hosts it names are defined.
    /// A `srcPosture` list: names of postures this policy defines.
    pub(crate) fn posture_names(&self, v: &JVal, what: &str) -> Result<Vec<String>, PolicyError> {
        strings(v, what)?
            .into_iter()
            .map(|(name, l, c)| {
                if self.postures.contains_key(&name) {
                    Ok(name)
                } else {
                    Err(PolicyError::at(
                        l,
                        c,
                        format!("{what}: posture {name:?} not found"),
                    ))
                }
            })
            .collect()
    }

    pub(crate) fn alias_checked(
        &self,
        s: &str,
        line: u32,
        col: u32,
        what: &str,
    ) -> Result<Alias, PolicyError> {
        let a = parse_alias(s, &self.hosts)
            .map_err(|m| PolicyError::at(line, col, format!("{what}: {m}")))?;
        match &a {
            Alias::Group(g) if !self.groups.contains_key(g) => Err(PolicyError::at(
                line,
                col,
                format!("{what}: group not found: {g:?}"),
            )),
            Alias::Tag(t) if !self.tag_owners.contains_key(t) => Err(PolicyError::at(
                line,
                col,
                format!("{what}=tag not found: {t:?}"),
            )),
            _ => Ok(a),
        }
    }

    fn parse_auto_approvers(&mut self, a: &JVal) -> Result<(), PolicyError> {
        if matches!(a.kind, JKind::Null) {
            return Ok(());
        }
        for (k, v) in obj(a, "autoApprovers")? {
            match k.as_str() {
                "routes" => {
                    if matches!(v.kind, JKind::Null) {
                        continue;
                    }
                    for (prefix, owners) in obj(v, "autoApprovers.routes")? {
                        let p = prefix.parse::<IpNet>().map_err(|_| {
                            owners.err(format!("autoApprovers.routes: {prefix:?} is not a CIDR"))
                        })?;
                        let list = self.owners(owners, "autoApprovers.routes")?;
                        self.auto_routes.push((p, list));
                    }
                }
                "exitNode" => self.auto_exit = self.owners(v, "autoApprovers.exitNode")?,
                _ => return Err(unknown_field(k, v, "autoApprovers")),
            }
        }
        Ok(())
    }

    fn owners(&self, v: &JVal, what: &str) -> Result<Vec<Owner>, PolicyError> {
        let mut out = Vec::new();
        for (s, l, c) in strings(v, what)? {
            let o = parse_owner(&s).map_err(|m| PolicyError::at(l, c, format!("{what}: {m}")))?;
            match &o {
                Owner::Group(g) if !self.groups.contains_key(g) => {
                    return Err(PolicyError::at(
                        l,
                        c,
                        format!("{what}: group not found: {g:?}"),
                    ));
                }
                Owner::Tag(t) if !self.tag_owners.contains_key(t) => {
                    return Err(PolicyError::at(
                        l,
                        c,
                        format!("{what}: tag not found: {t:?}"),
                    ));
                }
                _ => {}
            }
            out.push(o);
        }
        Ok(out)
    }
}

/// An `sshTests` destination names devices; a bare IPv6 address is refused (a bare IPv4
/// address is accepted), as the service does.
fn check_ssh_test_dst(d: &str) -> Result<(), String> {
    if d.trim().parse::<IpAddr>().is_ok_and(|a| a.is_ipv6()) {
        return Err(format!(
            "dst {d:?}: an IPv6 address is not a valid SSH test destination"
        ));
    }
    Ok(())
}

fn strip_what(m: &str) -> &str {
    m.strip_prefix("dst: ")
        .or_else(|| m.strip_prefix("dst="))
        .unwrap_or(m)
}

/// `autogroup:self` as a destination only combines with sources that are users: users,
/// groups, `autogroup:member`, and `*` where the rule allows it (ACLs do; grants do not,
/// since `*` takes in tagged nodes).
pub(crate) fn check_self_sources<'a>(
    src: &[Alias],
    mut dst: impl Iterator<Item = &'a Alias>,
    rule: &JVal,
    wildcard_allowed: bool,
) -> Result<(), PolicyError> {
    if !dst.any(|d| *d == Alias::AutoGroup(AutoGroup::SelfDevices)) {
        return Ok(());
    }
    let ok = src.iter().all(|s| {
        (wildcard_allowed && *s == Alias::Wildcard)
            || matches!(
                s,
                Alias::User(_)
                    | Alias::UserDomain(_)
                    | Alias::Group(_)
                    | Alias::IdpGroup(_)
                    | Alias::AutoGroup(AutoGroup::Member)
            )
    });
    if ok {
        Ok(())
    } else {
        Err(rule.err("autogroup:self can only be used with users, groups, or supported autogroups"))
    }
}

mod rules;
#[cfg(test)]
mod tests;
