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
                        g.dst.push(self.alias_checked(&s, l, c, "dst")?);
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
                "via" => g.via = strings(v, &what)?.into_iter().map(|s| s.0).collect(),
                "srcPosture" => {
                    g.src_posture = strings(v, &what)?.into_iter().map(|s| s.0).collect()
                }
                _ if k.starts_with('#') => {}
                _ => return Err(unknown_field(k, v, &what)),
            }
        }
        check_self_sources(&g.src, g.dst.iter(), rule)?;
        Ok(g)
    }
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
