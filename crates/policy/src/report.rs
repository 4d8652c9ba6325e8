//! The JSON shapes of the golden captures: a tailnet description in, a per-node report out.
//! Used by `oxiscale policy check --topology FILE` and by the golden test.

use crate::compile::Compiled;
use crate::{AttrValue, Attributes, Node, PolicyError, Topology, User};
use serde_json::{Map, Value, json};

fn field<'a>(v: &'a Value, k: &str, what: &str) -> Result<&'a Value, PolicyError> {
    v.get(k)
        .ok_or_else(|| PolicyError::msg(format!("{what}: missing {k:?}")))
}

fn str_list(v: Option<&Value>, what: &str) -> Result<Vec<String>, PolicyError> {
    match v {
        None | Some(Value::Null) => Ok(vec![]),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| PolicyError::msg(format!("{what}: expected strings")))
            })
            .collect(),
        Some(_) => Err(PolicyError::msg(format!("{what}: expected an array"))),
    }
}

/// Parses `{"users": [{id, name, email}], "nodes": {name: {hostname, tags, user, ipv4, ipv6,
/// routable_ips, approved_routes, id?, attributes?}}}`. `user` names a user by `name`; nodes without an
/// `id` are numbered in key order from 1.
pub fn topology_from_json(v: &Value) -> Result<Topology, PolicyError> {
    let mut topo = Topology::default();
    for u in field(v, "users", "topology")?
        .as_array()
        .ok_or_else(|| PolicyError::msg("users: expected an array"))?
    {
        topo.users.push(User {
            id: field(u, "id", "user")?
                .as_u64()
                .ok_or_else(|| PolicyError::msg("user id: expected a number"))?,
            name: u
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            email: u
                .get("email")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            // Optional: the groups the person's identity provider asserted.
            idp_groups: u
                .get("idp_groups")
                .and_then(Value::as_array)
                .map(|groups| {
                    groups
                        .iter()
                        .filter_map(|g| g.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
        });
    }
    let nodes = field(v, "nodes", "topology")?
        .as_object()
        .ok_or_else(|| PolicyError::msg("nodes: expected an object"))?;
    for (i, (name, n)) in nodes.iter().enumerate() {
        let what = format!("nodes[{name:?}]");
        let user = match n.get("user").and_then(Value::as_str) {
            Some(u) => Some(
                topo.users
                    .iter()
                    .find(|x| x.name == u)
                    .map(|x| x.id)
                    .ok_or_else(|| PolicyError::msg(format!("{what}: unknown user {u:?}")))?,
            ),
            None => None,
        };
        let ip = |k: &str| -> Result<Option<String>, PolicyError> {
            Ok(n.get(k)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string))
        };
        let nets = |k: &str| -> Result<Vec<ipnet::IpNet>, PolicyError> {
            str_list(n.get(k), &what)?
                .iter()
                .map(|s| {
                    s.parse()
                        .map_err(|_| PolicyError::msg(format!("{what}.{k}: bad prefix {s:?}")))
                })
                .collect()
        };
        let bad = |k: &str| PolicyError::msg(format!("{what}: bad {k}"));
        topo.nodes.push(Node {
            id: n.get("id").and_then(Value::as_u64).unwrap_or(i as u64 + 1),
            name: n
                .get("hostname")
                .and_then(Value::as_str)
                .unwrap_or(name)
                .to_string(),
            user: if str_list(n.get("tags"), &what)?.is_empty() {
                user
            } else {
                None
            },
            tags: str_list(n.get("tags"), &what)?,
            ipv4: ip("ipv4")?
                .map(|s| s.parse().map_err(|_| bad("ipv4")))
                .transpose()?,
            ipv6: ip("ipv6")?
                .map(|s| s.parse().map_err(|_| bad("ipv6")))
                .transpose()?,
            routable_ips: nets("routable_ips")?,
            approved_routes: nets("approved_routes")?,
            stable_id: n
                .get("stable_id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            attributes: attributes(n.get("attributes"), &what)?,
        });
    }
    Ok(topo)
}

/// Optional `attributes: {"node:os": "linux", "custom:score": 80, ...}` of a topology node.
fn attributes(v: Option<&Value>, what: &str) -> Result<Attributes, PolicyError> {
    let Some(v) = v else {
        return Ok(Attributes::new());
    };
    let m = v
        .as_object()
        .ok_or_else(|| PolicyError::msg(format!("{what}.attributes: expected an object")))?;
    m.iter()
        .map(|(k, v)| {
            let value = match v {
                Value::String(s) => AttrValue::Str(s.clone()),
                Value::Bool(b) => AttrValue::Bool(*b),
                Value::Number(n) => AttrValue::Num(n.as_f64().unwrap_or(f64::NAN)),
                _ => {
                    return Err(PolicyError::msg(format!(
                        "{what}.attributes[{k:?}]: a string, number or boolean"
                    )));
                }
            };
            Ok((k.clone(), value))
        })
        .collect()
}

/// Per node (by name): `packet_filter_rules` (absent when empty), `peers` with `AllowedIPs`
/// and `PrimaryRoutes`, `ssh_policy` (`{"rules": []}` when the policy has no `ssh`), the
/// node's own `addresses` and the `node_attrs` its policy gives it.
pub fn report(compiled: &Compiled, topo: &Topology) -> Value {
    let name_of = |id: u64| {
        topo.nodes
            .iter()
            .find(|n| n.id == id)
            .map(|n| n.name.clone())
            .unwrap_or(id.to_string())
    };
    let mut out = Map::new();
    for n in &topo.nodes {
        let mut e = Map::new();
        let filter = compiled.packet_filter(n.id);
        if !filter.is_empty() {
            e.insert(
                "packet_filter_rules".into(),
                serde_json::to_value(&filter).unwrap_or(Value::Null),
            );
        }
        let mut peers = Map::new();
        for p in compiled.peers(n.id) {
            let s = |v: &[ipnet::IpNet]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
            peers.insert(
                name_of(p.id),
                json!({"AllowedIPs": s(&p.allowed_ips), "PrimaryRoutes": s(&p.primary_routes)}),
            );
        }
        e.insert("peers".into(), Value::Object(peers));
        let ssh = compiled.ssh_policy(n.id).unwrap_or_default();
        e.insert(
            "ssh_policy".into(),
            serde_json::to_value(&ssh).unwrap_or(Value::Null),
        );
        let addresses: Vec<String> = compiled
            .self_addresses(n.id)
            .iter()
            .map(|a| a.to_string())
            .collect();
        e.insert("addresses".into(), json!(addresses));
        e.insert("node_attrs".into(), json!(compiled.node_attrs(n.id)));
        out.insert(n.name.clone(), Value::Object(e));
    }
    Value::Object(out)
}
