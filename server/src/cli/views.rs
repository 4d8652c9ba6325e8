//! The REST API answers in headscale's wire form (`api::wire`); the CLI prints the
//! administration's views (snake_case, numeric ids), as it always has: this reads the one
//! back into the other.

use anyhow::Context;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::api::wire;

fn read<T: DeserializeOwned>(v: Value, what: &str) -> anyhow::Result<T> {
    serde_json::from_value(v).with_context(|| format!("the server's answer is not {what}"))
}

fn json(v: impl Serialize) -> Value {
    serde_json::to_value(v).expect("views serialize")
}

pub fn user(v: Value) -> anyhow::Result<Value> {
    let r: wire::UserResponse = read(v, "a user")?;
    Ok(json(r.user.into_view()))
}

pub fn users(v: Value) -> anyhow::Result<Value> {
    let r: wire::UsersResponse = read(v, "a list of users")?;
    Ok(json(
        r.users
            .into_iter()
            .map(wire::User::into_view)
            .collect::<Vec<_>>(),
    ))
}

pub fn node(v: Value) -> anyhow::Result<Value> {
    let r: wire::NodeResponse = read(v, "a node")?;
    Ok(json(r.node.into_view()))
}

pub fn nodes(v: Value) -> anyhow::Result<Value> {
    let r: wire::NodesResponse = read(v, "a list of nodes")?;
    Ok(json(
        r.nodes
            .into_iter()
            .map(wire::Node::into_view)
            .collect::<Vec<_>>(),
    ))
}

pub fn preauth_key(v: Value) -> anyhow::Result<Value> {
    let r: wire::PreAuthKeyResponse = read(v, "a pre-auth key")?;
    Ok(json(r.pre_auth_key.into_view()))
}

pub fn preauth_keys(v: Value) -> anyhow::Result<Vec<Value>> {
    let r: wire::PreAuthKeysResponse = read(v, "a list of pre-auth keys")?;
    Ok(r.pre_auth_keys
        .into_iter()
        .map(|k| json(k.into_view()))
        .collect())
}

/// The API keys; `secret`, when given, is put in the `key` of the key it opens.
pub fn api_keys(v: Value, secret: Option<&str>) -> anyhow::Result<Vec<Value>> {
    let r: wire::ApiKeysResponse = read(v, "a list of API keys")?;
    let prefix = secret.and_then(|s| {
        crate::tailnet::secret::prefix_of(crate::tailnet::secret::SecretKind::Api, s)
    });
    Ok(r.api_keys
        .into_iter()
        .map(|k| {
            let mut view = k.into_view();
            if prefix == Some(view.prefix.as_str()) {
                view.key = secret.map(str::to_owned);
            }
            json(view)
        })
        .collect())
}

pub fn routes(v: Value) -> anyhow::Result<Value> {
    let r: wire::RoutesResponse = read(v, "a list of routes")?;
    Ok(json(
        r.routes
            .into_iter()
            .map(wire::Routes::into_view)
            .collect::<Vec<_>>(),
    ))
}

pub fn policy(v: Value) -> anyhow::Result<Value> {
    let r: wire::PolicyResponse = read(v, "a policy")?;
    let view = crate::policy::PolicyView {
        policy: Some(r.policy).filter(|p| !p.is_empty()),
        mode: serde_json::from_value(r.mode).context("the policy's mode")?,
        path: r.path,
        problem: r.problem,
    };
    Ok(json(view))
}

/// `{"changed": [ids]}` from a backfill's answer.
pub fn backfill(v: Value) -> anyhow::Result<Value> {
    let r: wire::BackfillResponse = read(v, "a backfill report")?;
    let ids = r
        .node_ids
        .iter()
        .map(|id| id.parse::<u64>())
        .collect::<Result<Vec<_>, _>>()
        .context("node ids")?;
    Ok(serde_json::json!({ "changed": ids }))
}

/// The entry with `id` (a number) in a list of views.
pub fn find_by_id(list: Vec<Value>, id: u64, what: &str) -> anyhow::Result<Value> {
    list.into_iter()
        .find(|k| k["id"].as_u64() == Some(id))
        .ok_or_else(|| anyhow::anyhow!("{what} {id} not found"))
}
