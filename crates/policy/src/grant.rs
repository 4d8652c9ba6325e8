//! The `grants` section: network access (`ip`), application capabilities (`app`), routing
//! through named routers (`via`) and source posture (`srcPosture`).

use crate::PolicyError;
use crate::hujson::{JKind, JVal};
use crate::policy::{
    Alias, AutoGroup, PolicyDoc, ProtoPorts, check_self_sources, obj, parse_ports,
    proto_allows_ports, proto_numbers, strings, unknown_field,
};
use oxiscale_tailcfg::PortRange;

#[derive(Debug, Clone)]
pub struct Grant {
    pub src: Vec<Alias>,
    pub dst: Vec<Alias>,
    pub ip: Vec<ProtoPorts>,
    /// `app`: per capability name, the values granted with it, passed to the destination as
    /// they were written.
    pub app: Vec<(String, Vec<serde_json::Value>)>,
    /// `via`: the tags of the routers that carry the sources' traffic to the destinations.
    pub via: Vec<String>,
    /// `srcPosture`: the postures a source must satisfy.
    pub src_posture: Vec<String>,
}

impl PolicyDoc {
    pub(crate) fn parse_grant(&self, i: usize, rule: &JVal) -> Result<Grant, PolicyError> {
        let what = format!("grants[{i}]");
        let mut g = Grant {
            src: vec![],
            dst: vec![],
            ip: vec![],
            app: vec![],
            via: vec![],
            src_posture: vec![],
        };
        for (k, v) in obj(rule, &what)? {
            match k.as_str() {
                "src" => {
                    for (s, l, c) in strings(v, &what)? {
                        let a = self.alias_checked(&s, l, c, "src")?;
                        if a == Alias::AutoGroup(AutoGroup::SelfDevices) {
                            return Err(PolicyError::at(
                                l,
                                c,
                                "\"autogroup:self\" not valid on the src side of a rule",
                            ));
                        }
                        g.src.push(a);
                    }
                }
                "dst" => {
                    for (s, l, c) in strings(v, &what)? {
                        let a = self.alias_checked(&s, l, c, "dst")?;
                        check_grant_dst(&a, s.trim()).map_err(|m| PolicyError::at(l, c, m))?;
                        g.dst.push(a);
                    }
                }
                "ip" => {
                    for (s, l, c) in strings(v, &what)? {
                        g.ip.push(
                            parse_grant_ip(&s)
                                .map_err(|m| PolicyError::at(l, c, format!("{what}: ip: {m}")))?,
                        );
                    }
                }
                "app" => g.app = parse_app(v, &what)?,
                "via" => {
                    for (s, l, c) in strings(v, &what)? {
                        self.check_via(&s).map_err(|m| PolicyError::at(l, c, m))?;
                        g.via.push(s);
                    }
                }
                "srcPosture" => g.src_posture = self.posture_names(v, &what)?,
                _ if k.starts_with('#') => {}
                _ => return Err(unknown_field(k, v, &what)),
            }
        }
        if g.ip.is_empty() && g.app.is_empty() {
            return Err(rule.err("ip and app can not both be empty"));
        }
        if !g.app.is_empty() && g.dst.contains(&Alias::AutoGroup(AutoGroup::Internet)) {
            return Err(rule.err("cannot use app grants with autogroup:internet"));
        }
        // Stricter than ACLs: `*` is refused too, since it includes tagged nodes.
        check_self_sources(&g.src, g.dst.iter(), rule, false)?;
        Ok(g)
    }

    /// A `via` entry names the routers by tag, and the tag must be defined.
    fn check_via(&self, s: &str) -> Result<(), String> {
        if !s.starts_with("tag:") {
            return Err("via can only be a tag".into());
        }
        if !self.tag_owners.contains_key(s) {
            return Err(format!("tag {s:?} not found"));
        }
        Ok(())
    }
}

/// What a grant's destination may not be, beyond what any rule's destination may not be.
fn check_grant_dst(a: &Alias, written: &str) -> Result<(), String> {
    match a {
        Alias::AutoGroup(AutoGroup::DangerAll) => {
            Err("cannot use autogroup:danger-all as a dst".into())
        }
        // A default route would mean "every address"; the service wants that said with `*`
        // (the tailnet) or `autogroup:internet` (through exit nodes).
        Alias::Prefix(p) if p.prefix_len() == 0 => Err(format!(
            "dst {written:?}: to allow all IP addresses, use \"*\" or \"autogroup:internet\""
        )),
        _ => Ok(()),
    }
}

/// The `tailscale.com` capabilities a policy may grant; the others are the service's own
/// (companions such as `relay-target`, or features such as `funnel` and `ingress`).
const GRANTABLE_TAILSCALE_CAPS: &[&str] = &[
    "tailscale.com/cap/drive",
    "tailscale.com/cap/kubernetes",
    "tailscale.com/cap/relay",
    "tailscale.com/cap/secrets",
    "tailscale.com/cap/tsidp",
    "tailscale.com/cap/webui",
];

/// An `app` capability name: `{domain}/{path}`, not a URL, and outside `tailscale.com` unless
/// it is one of the capabilities users may grant.
fn check_cap_name(name: &str) -> Result<(), String> {
    let form_ok = match name.split_once('/') {
        Some((domain, path)) => {
            !domain.is_empty()
                && !path.is_empty()
                && domain
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        }
        None => false,
    };
    if !form_ok {
        return Err("capability name must have the form {domain}/{path}".into());
    }
    if name.starts_with("tailscale.com/") && !GRANTABLE_TAILSCALE_CAPS.contains(&name) {
        return Err("capability name must not be in the tailscale.com domain".into());
    }
    Ok(())
}

/// `"app": {"example.com/cap/name": [{...}, ...]}`.
fn parse_app(v: &JVal, what: &str) -> Result<Vec<(String, Vec<serde_json::Value>)>, PolicyError> {
    let mut out = Vec::new();
    for (name, values) in obj(v, &format!("{what}: app"))? {
        let JKind::Arr(items) = &values.kind else {
            return Err(values.err(format!(
                "{what}: app: {name:?}: expected an array of objects, got {}",
                values.type_name()
            )));
        };
        check_cap_name(name).map_err(|m| values.err(m))?;
        out.push((name.clone(), items.iter().map(JVal::to_json).collect()));
    }
    Ok(out)
}

/// A grant's `ip` entry: `*`, `tcp:443`, `udp:*`, `443`, `icmp:*`, `80-90`.
pub(crate) fn parse_grant_ip(s: &str) -> Result<ProtoPorts, String> {
    let s = s.trim();
    if s == "*" {
        return Ok(ProtoPorts {
            protos: vec![],
            ports: vec![PortRange::ANY],
        });
    }
    let (proto, ports) = match s.split_once(':') {
        Some((p, ports)) => (proto_numbers(&p.to_lowercase())?, ports),
        None => (vec![], s),
    };
    let ports = parse_ports(ports)?;
    if !proto_allows_ports(&proto) && ports != [PortRange::ANY] {
        return Err(format!("{s:?}: ports are only valid with tcp, udp or sctp"));
    }
    Ok(ProtoPorts {
        protos: proto,
        ports,
    })
}

#[cfg(test)]
mod tests {
    use crate::policy::PolicyDoc;

    const TAGS: &str = r#""tagOwners": {"tag:router": [], "tag:server": []},
        "groups": {"group:admins": ["odin@example.com"]}"#;

    /// A policy with `grant` as its only grant.
    fn with_grant(grant: &str) -> String {
        format!("{{{TAGS}, \"grants\": [{grant}]}}")
    }

    fn refused(grant: &str) -> String {
        match PolicyDoc::parse(&with_grant(grant)) {
            Ok(_) => panic!("accepted: {grant}"),
            Err(e) => {
                assert!(e.line.is_some(), "no position: {e}");
                e.message
            }
        }
    }

    fn accepted(grant: &str) {
        if let Err(e) = PolicyDoc::parse(&with_grant(grant)) {
            panic!("refused {grant}: {e}");
        }
    }

    #[test]
    fn capability_names_are_domain_slash_path() {
        assert_eq!(
            refused(
                r#"{"src": ["*"], "dst": ["*"], "app": {"https://tailscale.com/cap/ingress": [{}]}}"#
            ),
            "capability name must have the form {domain}/{path}"
        );
        assert_eq!(
            refused(r#"{"src": ["*"], "dst": ["*"], "app": {"nodomain": [{}]}}"#),
            "capability name must have the form {domain}/{path}"
        );
        accepted(r#"{"src": ["*"], "dst": ["*"], "app": {"example.com/a/b/c/d/e/f": [{}]}}"#);
        accepted(
            r#"{"src": ["*"], "dst": ["*"], "app": {"my-company.internal/cap/access": [{}]}}"#,
        );
    }

    #[test]
    fn only_some_tailscale_capabilities_may_be_granted() {
        for name in [
            "tailscale.com/cap/relay-target",
            "tailscale.com/cap/ingress",
            "tailscale.com/cap/funnel",
        ] {
            assert_eq!(
                refused(&format!(
                    r#"{{"src": ["*"], "dst": ["*"], "app": {{"{name}": [{{}}]}}}}"#
                )),
                "capability name must not be in the tailscale.com domain"
            );
        }
        for name in [
            "tailscale.com/cap/drive",
            "tailscale.com/cap/relay",
            "tailscale.com/cap/webui",
            "tailscale.com/cap/kubernetes",
        ] {
            accepted(&format!(
                r#"{{"src": ["*"], "dst": ["*"], "app": {{"{name}": [{{}}]}}}}"#
            ));
        }
    }

    #[test]
    fn a_grant_needs_ip_or_app() {
        for g in [
            r#"{"src": ["*"], "dst": ["*"]}"#,
            r#"{"src": ["*"], "dst": ["*"], "ip": []}"#,
            r#"{"src": ["*"], "dst": ["*"], "app": {}}"#,
            r#"{"src": ["*"], "dst": ["*"], "ip": [], "app": {}}"#,
        ] {
            assert_eq!(refused(g), "ip and app can not both be empty", "{g}");
        }
        // A capability with no values still counts.
        accepted(r#"{"src": ["*"], "dst": ["*"], "app": {"example.com/cap/test": []}}"#);
        accepted(r#"{"src": ["*"], "dst": ["*"], "ip": ["*"], "app": {}}"#);
    }

    #[test]
    fn self_destination_needs_user_sources() {
        let msg = "autogroup:self can only be used with users, groups, or supported autogroups";
        for src in [r#""*""#, r#""tag:server""#, r#""autogroup:member", "*""#] {
            assert_eq!(
                refused(&format!(
                    r#"{{"src": [{src}], "dst": ["autogroup:self"], "ip": ["*"]}}"#
                )),
                msg
            );
        }
        assert_eq!(
            refused(
                r#"{"src": ["*"], "dst": ["autogroup:self", "tag:server"], "ip": ["*", "22"]}"#
            ),
            msg
        );
        assert_eq!(
            refused(
                r#"{"src": ["*"], "dst": ["autogroup:self"], "app": {"example.com/cap/test": [{}]}}"#
            ),
            msg
        );
        for src in [
            r#""autogroup:member""#,
            r#""odin@example.com""#,
            r#""group:admins""#,
        ] {
            accepted(&format!(
                r#"{{"src": [{src}], "dst": ["autogroup:self"], "ip": ["*"]}}"#
            ));
        }
        // ACLs, unlike grants, take `*` with autogroup:self.
        PolicyDoc::parse(
            r#"{"acls": [{"action": "accept", "src": ["*"], "dst": ["autogroup:self:*"]}]}"#,
        )
        .unwrap();
    }

    #[test]
    fn via_names_defined_tags() {
        assert_eq!(
            refused(
                r#"{"src": ["*"], "dst": ["10.33.0.0/16"], "ip": ["*"], "via": ["autogroup:tagged"]}"#
            ),
            "via can only be a tag"
        );
        assert_eq!(
            refused(
                r#"{"src": ["*"], "dst": ["10.33.0.0/16"], "ip": ["*"], "via": ["tag:router", "tag:nonexistent"]}"#
            ),
            r#"tag "tag:nonexistent" not found"#
        );
        let doc = PolicyDoc::parse(&with_grant(
            r#"{"src": ["*"], "dst": ["10.33.0.0/16"], "ip": ["*"], "via": ["tag:router"]}"#,
        ))
        .unwrap();
        assert_eq!(doc.grants.unwrap()[0].via, ["tag:router"]);
    }

    #[test]
    fn danger_all_is_a_source_only() {
        assert_eq!(
            refused(r#"{"src": ["*"], "dst": ["autogroup:danger-all"], "ip": ["tcp:22"]}"#),
            "cannot use autogroup:danger-all as a dst"
        );
        accepted(r#"{"src": ["autogroup:danger-all"], "dst": ["tag:server"], "ip": ["tcp:22"]}"#);
    }

    #[test]
    fn no_app_grants_to_the_internet() {
        let msg = "cannot use app grants with autogroup:internet";
        assert_eq!(
            refused(
                r#"{"src": ["*"], "dst": ["autogroup:internet"], "app": {"example.com/cap/x": [{}]}}"#
            ),
            msg
        );
        assert_eq!(
            refused(
                r#"{"src": ["autogroup:member"], "dst": ["autogroup:internet"], "ip": ["tcp:443"], "app": {"example.com/cap/x": [{}]}}"#
            ),
            msg
        );
        accepted(
            r#"{"src": ["*"], "dst": ["autogroup:internet"], "ip": ["*"], "via": ["tag:router"]}"#,
        );
    }

    #[test]
    fn default_routes_are_not_destinations() {
        assert_eq!(
            refused(r#"{"src": ["*"], "dst": ["0.0.0.0/0"], "ip": ["tcp:80"]}"#),
            r#"dst "0.0.0.0/0": to allow all IP addresses, use "*" or "autogroup:internet""#
        );
        assert_eq!(
            refused(
                r#"{"src": ["*"], "dst": ["::/0"], "app": {"example.com/cap/x": [{}]}, "via": ["tag:router"]}"#
            ),
            r#"dst "::/0": to allow all IP addresses, use "*" or "autogroup:internet""#
        );
        accepted(r#"{"src": ["*"], "dst": ["10.33.0.0/16", "192.168.1.0/24"], "ip": ["*"]}"#);
    }

    #[test]
    fn port_zero_is_refused() {
        let msg = refused(r#"{"src": ["*"], "dst": ["tag:server"], "ip": ["tcp:0"]}"#);
        assert!(
            msg.ends_with(r#"port range "0": first port must be >0, or use '*' for wildcard"#),
            "{msg}"
        );
        accepted(r#"{"src": ["*"], "dst": ["tag:server"], "ip": ["tcp:1-65535", "udp:*"]}"#);
    }
}
