//! The console's policy area over the admin service.
//!
//! The preview is computed here, on the server: it needs the live tailnet (users, machines,
//! addresses, tags, routes), which the browser does not have, and it uses the same compiler
//! the server enforces. "Which rule" is found by compiling each rule on its own.

use std::net::IpAddr;

use app::backend::BackendFuture;
use app::dto::ConsoleError;
use app::dto::policy::{PolicyDoc, PolicyIssue, Preview, PreviewRow, SaveOutcome, Subject};
use ipnet::IpNet;
use oxiscale_policy::{Compiled, DEFAULT_CONTROL_URL, Policy, Topology, hujson_to_json};
use serde_json::Value;

use super::Backend;
use crate::admin::AdminError;
use crate::config::PolicyMode;
use crate::policy::PolicyStoreError;

impl app::backend::PolicyBackend for Backend {
    fn policy(&self) -> BackendFuture<'_, PolicyDoc> {
        Box::pin(async move {
            let view = self.admin.get_policy().await;
            let editable = view.mode == PolicyMode::Database;
            Ok(PolicyDoc {
                text: view.policy.unwrap_or_default(),
                editable,
                file: (!editable).then(|| match &view.path {
                    Some(p) => p.display().to_string(),
                    None => "none (policy.path is not set: everyone may reach everyone)".into(),
                }),
                problem: view.problem,
            })
        })
    }

    fn save_policy(&self, text: String) -> BackendFuture<'_, SaveOutcome> {
        Box::pin(async move {
            match self.admin.set_policy(text).await {
                Ok(view) => Ok(SaveOutcome::Saved(PolicyDoc {
                    text: view.policy.unwrap_or_default(),
                    editable: true,
                    file: None,
                    problem: view.problem,
                })),
                Err(AdminError::Policy(PolicyStoreError::Invalid(e))) => {
                    Ok(SaveOutcome::Refused(PolicyIssue::from(e)))
                }
                Err(AdminError::Policy(e @ PolicyStoreError::FileMode(_))) => {
                    Ok(SaveOutcome::Refused(PolicyIssue {
                        line: None,
                        column: None,
                        message: e.to_string(),
                    }))
                }
                Err(e) => Err(ConsoleError::Internal(e.to_string())),
            }
        })
    }

    fn preview_subjects(&self) -> BackendFuture<'_, Vec<Subject>> {
        Box::pin(async move {
            Ok(self.admin.tailnet().read(|s| {
                let users = s.users().map(|u| Subject {
                    key: format!("user:{}", u.id),
                    label: format!("User {}", u.name),
                });
                let nodes = s.nodes().map(|n| Subject {
                    key: format!("node:{}", n.id),
                    label: format!(
                        "Machine {}{}",
                        n.given_name,
                        n.ipv4.map(|ip| format!(" ({ip})")).unwrap_or_default()
                    ),
                });
                users.chain(nodes).collect()
            }))
        })
    }

    fn preview_policy(&self, text: String, subject: String) -> BackendFuture<'_, Preview> {
        Box::pin(async move {
            let topo = self.admin.tailnet().read(|s| s.policy_topology());
            preview(&text, &subject, &topo)
        })
    }
}

fn refused(e: impl std::fmt::Display) -> ConsoleError {
    ConsoleError::Refused(e.to_string())
}

/// What the machines of `subject` reach under `text`, each destination with the rules that
/// allow it.
fn preview(text: &str, subject: &str, topo: &Topology) -> Result<Preview, ConsoleError> {
    let sources: Vec<&oxiscale_policy::Node> = match subject.split_once(':') {
        Some(("user", id)) => {
            let id: u64 = id.parse().map_err(|_| refused("unknown subject"))?;
            topo.nodes
                .iter()
                .filter(|n| !n.is_tagged() && n.user == Some(id))
                .collect()
        }
        Some(("node", id)) => {
            let id: u64 = id.parse().map_err(|_| refused("unknown subject"))?;
            topo.nodes.iter().filter(|n| n.id == id).collect()
        }
        _ => return Err(refused(format!("unknown subject {subject:?}"))),
    };
    if sources.is_empty() {
        return Ok(Preview {
            rows: vec![],
            note: Some("No machines: connect one to see what it may reach.".into()),
        });
    }
    if text.trim().is_empty() {
        return Ok(Preview {
            rows: vec![],
            note: Some("No policy: every machine may reach every other.".into()),
        });
    }
    let policy = Policy::parse(text).map_err(refused)?;
    let compiled = policy
        .compile_untested(topo, DEFAULT_CONTROL_URL)
        .map_err(refused)?;
    let ips: Vec<IpAddr> = sources
        .iter()
        .flat_map(|n| {
            n.ipv4
                .map(IpAddr::V4)
                .into_iter()
                .chain(n.ipv6.map(IpAddr::V6))
        })
        .collect();
    let source_ids: Vec<u64> = sources.iter().map(|n| n.id).collect();
    let reached: Vec<_> = topo
        .nodes
        .iter()
        .filter(|dst| !source_ids.contains(&dst.id))
        .map(|dst| (dst, reach(&compiled, dst.id, &ips, &source_ids)))
        .filter(|(_, r)| !r.is_empty())
        .collect();
    if reached.is_empty() {
        return Ok(Preview {
            rows: vec![],
            note: Some("Nothing: no rule lets these machines reach another machine.".into()),
        });
    }
    // Only now, with something to attribute, compile each rule on its own.
    let per_rule = single_rule_policies(text)
        .into_iter()
        .filter_map(|(label, text)| {
            let c = Policy::parse(&text)
                .ok()?
                .compile_untested(topo, DEFAULT_CONTROL_URL)
                .ok()?;
            Some((label, c))
        })
        .collect::<Vec<_>>();
    let rows = reached
        .into_iter()
        .map(|(dst, r)| PreviewRow {
            destination: format!(
                "{}{}",
                dst.name,
                dst.ipv4.map(|ip| format!(" ({ip})")).unwrap_or_default()
            ),
            rules: per_rule
                .iter()
                .filter(|(_, c)| !reach(c, dst.id, &ips, &source_ids).is_empty())
                .map(|(label, _)| label.clone())
                .collect(),
            ports: r.ports,
            capabilities: r.capabilities,
            routes: r.routes,
        })
        .collect();
    Ok(Preview { rows, note: None })
}

/// What the subject's machines (`sources`, with addresses `ips`) get from machine `dst`.
#[derive(Debug, Default)]
struct Reach {
    /// `ip:ports` in `dst`'s packet filter open to them.
    ports: Vec<String>,
    /// Capabilities `dst` learns they have.
    capabilities: Vec<String>,
    /// Prefixes they route through `dst`.
    routes: Vec<String>,
}

impl Reach {
    fn is_empty(&self) -> bool {
        self.ports.is_empty() && self.capabilities.is_empty() && self.routes.is_empty()
    }
}

fn reach(compiled: &Compiled, dst: u64, ips: &[IpAddr], sources: &[u64]) -> Reach {
    let mut routes: Vec<String> = sources
        .iter()
        .flat_map(|s| compiled.peers(*s))
        .filter(|p| p.id == dst)
        .flat_map(|p| p.allowed_ips)
        .filter(|r| r.prefix_len() < r.max_prefix_len())
        .map(|r| r.to_string())
        .collect();
    routes.sort();
    routes.dedup();
    let (ports, capabilities) = reachable(compiled, dst, ips);
    Reach {
        ports,
        capabilities,
        routes,
    }
}

/// The destinations (`ip:ports`) in `dst`'s packet filter open to any of `ips`, and the
/// capabilities its filter grants them.
fn reachable(compiled: &Compiled, dst: u64, ips: &[IpAddr]) -> (Vec<String>, Vec<String>) {
    let mut out = Vec::new();
    let mut caps = Vec::new();
    for rule in compiled.packet_filter(dst) {
        if !rule
            .src_ips
            .iter()
            .any(|src| ips.iter().any(|ip| src_admits(src, *ip)))
        {
            continue;
        }
        for grant in &rule.cap_grant {
            let names = grant.get("CapMap").and_then(Value::as_object);
            for name in names.into_iter().flat_map(|m| m.keys()) {
                if !caps.contains(name) {
                    caps.push(name.clone());
                }
            }
        }
        for d in &rule.dst_ports {
            let ports = if d.ports.first == 0 && d.ports.last == 65535 {
                "*".to_owned()
            } else if d.ports.first == d.ports.last {
                d.ports.first.to_string()
            } else {
                format!("{}-{}", d.ports.first, d.ports.last)
            };
            let entry = format!("{}:{ports}", d.ip);
            if !out.contains(&entry) {
                out.push(entry);
            }
        }
    }
    (out, caps)
}

/// Whether a `SrcIPs` entry (`*`, an address, a prefix or a range `a-b`) covers `ip`.
fn src_admits(src: &str, ip: IpAddr) -> bool {
    if src == "*" {
        return true;
    }
    if let Ok(net) = src.parse::<IpNet>() {
        return net.contains(&ip);
    }
    if let Some((a, b)) = src.split_once('-') {
        return match (a.parse::<IpAddr>(), b.parse::<IpAddr>()) {
            (Ok(a), Ok(b)) => a <= ip && ip <= b,
            _ => false,
        };
    }
    src.parse::<IpAddr>().is_ok_and(|a| a == ip)
}

/// One policy per `acls`/`grants` entry: the document with only that rule (and without its
/// tests), labelled like `acls[0]: alice@ → tag:server:22`.
fn single_rule_policies(text: &str) -> Vec<(String, String)> {
    let Ok(Value::Object(doc)) = hujson_to_json(text) else {
        return vec![];
    };
    let mut out = Vec::new();
    for section in ["acls", "grants"] {
        let Some(Value::Array(rules)) = doc.get(section) else {
            continue;
        };
        for (i, rule) in rules.iter().enumerate() {
            let mut one = doc.clone();
            one.remove("tests");
            one.remove("sshTests");
            one.remove("acls");
            one.remove("grants");
            one.insert(section.into(), Value::Array(vec![rule.clone()]));
            let list = |k: &str| {
                rule.get(k)
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .unwrap_or_default()
            };
            let mut label = format!("{section}[{i}]: {} → {}", list("src"), list("dst"));
            if rule.get("app").is_some() {
                label.push_str(" (app)");
            }
            if !list("via").is_empty() {
                label.push_str(&format!(" via {}", list("via")));
            }
            out.push((label, Value::Object(one).to_string()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use oxiscale_policy::{Node, User};

    fn topo() -> Topology {
        let node = |id: u64, name: &str, user: Option<u64>, tags: &[&str], ip: &str| Node {
            id,
            name: name.into(),
            user,
            tags: tags.iter().map(|t| t.to_string()).collect(),
            ipv4: Some(ip.parse().unwrap()),
            ..Default::default()
        };
        Topology {
            users: vec![
                User {
                    id: 1,
                    name: "alice".into(),
                    ..Default::default()
                },
                User {
                    id: 2,
                    name: "bob".into(),
                    ..Default::default()
                },
            ],
            nodes: vec![
                node(1, "laptop", Some(1), &[], "100.64.0.1"),
                node(2, "server", None, &["tag:server"], "100.64.0.2"),
                node(3, "phone", Some(2), &[], "100.64.0.3"),
            ],
        }
    }

    const POLICY: &str = r#"{
  // alice may ssh to servers; bob nothing
  "tagOwners": { "tag:server": ["alice@"], },
  "acls": [
    { "action": "accept", "src": ["alice@"], "dst": ["tag:server:22"] }, /* one */
    { "action": "accept", "src": ["alice@"], "dst": ["tag:server:80,443"] },
  ],
  "tests": [ { "src": "alice@", "accept": ["tag:server:22"] } ],
}"#;

    #[test]
    fn hujson_becomes_json() {
        let v = hujson_to_json(POLICY).unwrap();
        assert_eq!(v["acls"].as_array().unwrap().len(), 2);
        let v = hujson_to_json(r#"{"a": "x // not a comment, ]",}"#).unwrap();
        assert_eq!(v["a"], "x // not a comment, ]");
    }

    #[test]
    fn preview_lists_destinations_ports_and_the_rules() {
        let p = preview(POLICY, "user:1", &topo()).unwrap();
        assert_eq!(p.rows.len(), 1, "{p:?}");
        let row = &p.rows[0];
        assert_eq!(row.destination, "server (100.64.0.2)");
        assert!(row.ports.contains(&"100.64.0.2:22".to_owned()), "{row:?}");
        assert!(row.ports.contains(&"100.64.0.2:443".to_owned()), "{row:?}");
        assert_eq!(row.rules.len(), 2, "{row:?}");
        assert!(row.rules[0].starts_with("acls[0]: alice@ → tag:server:22"));
        let bob = preview(POLICY, "user:2", &topo()).unwrap();
        assert!(bob.rows.is_empty());
        assert!(bob.note.unwrap().contains("Nothing"));
        let err = preview("{ nope", "user:1", &topo()).unwrap_err();
        assert!(matches!(err, ConsoleError::Refused(_)));
    }

    #[test]
    fn preview_shows_capabilities_and_routes_through_a_named_router() {
        let mut t = topo();
        let router = |id: u64, name: &str, tag: &str| oxiscale_policy::Node {
            id,
            name: name.into(),
            tags: vec![tag.into()],
            ipv4: Some(format!("100.64.0.{id}").parse().unwrap()),
            routable_ips: vec!["10.0.0.0/24".parse().unwrap()],
            approved_routes: vec!["10.0.0.0/24".parse().unwrap()],
            ..Default::default()
        };
        t.nodes.push(router(4, "router-a", "tag:a"));
        t.nodes.push(router(5, "router-b", "tag:b"));
        let policy = r#"{
  "tagOwners": { "tag:server": [], "tag:a": [], "tag:b": [] },
  "grants": [
    { "src": ["alice@"], "dst": ["tag:server"], "app": { "example.com/cap/web": [{}] } },
    { "src": ["alice@"], "dst": ["10.0.0.0/24"], "ip": ["*"], "via": ["tag:b"] },
  ],
}"#;
        let p = preview(policy, "user:1", &t).unwrap();
        let row = |name: &str| p.rows.iter().find(|r| r.destination.starts_with(name));
        let server = row("server").expect("the server is listed for its capability");
        assert_eq!(server.capabilities, ["example.com/cap/web"]);
        assert!(server.ports.is_empty(), "{server:?}");
        assert_eq!(server.rules, ["grants[0]: alice@ → tag:server (app)"]);
        let b = row("router-b").expect("the via router is listed");
        assert_eq!(b.routes, ["10.0.0.0/24"]);
        assert_eq!(b.rules, ["grants[1]: alice@ → 10.0.0.0/24 via tag:b"]);
        assert!(row("router-a").is_none(), "{p:?}");
    }

    #[test]
    fn src_entries_match_addresses_prefixes_and_ranges() {
        let ip: IpAddr = "100.64.0.5".parse().unwrap();
        assert!(src_admits("*", ip));
        assert!(src_admits("100.64.0.0/10", ip));
        assert!(src_admits("100.64.0.1-100.64.0.9", ip));
        assert!(src_admits("100.64.0.5", ip));
        assert!(!src_admits("100.64.0.6", ip));
    }
}
