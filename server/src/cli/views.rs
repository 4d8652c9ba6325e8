//! The REST API answers in headscale's wire form (`api::wire`). The CLI shows each answer
//! in two forms: headscale's `-o json` (`headscale_json`) for programs, and the
//! administration's views (with what oxiscale adds: expired, approval, fully qualified
//! names) for the tables and sentences people read.

use anyhow::Context;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::headscale_json as hs;
use crate::api::wire;

/// One result in both forms.
pub struct Shown<T> {
    pub machine: T,
    pub human: Value,
}

fn read<T: DeserializeOwned>(v: Value, what: &str) -> anyhow::Result<T> {
    serde_json::from_value(v).with_context(|| format!("the server's answer is not {what}"))
}

fn json(v: impl Serialize) -> Value {
    serde_json::to_value(v).expect("views serialize")
}

fn both<W, T, V: Serialize>(items: Vec<W>, view: impl Fn(W) -> V) -> Shown<Vec<T>>
where
    for<'a> T: From<&'a W>,
{
    Shown {
        machine: items.iter().map(T::from).collect(),
        human: Value::Array(items.into_iter().map(|w| json(view(w))).collect()),
    }
}

pub fn user(v: Value) -> anyhow::Result<Shown<hs::User>> {
    let r: wire::UserResponse = read(v, "a user")?;
    Ok(Shown {
        machine: hs::User::from(&r.user),
        human: json(r.user.into_view()),
    })
}

pub fn users(v: Value, keep: impl Fn(&wire::User) -> bool) -> anyhow::Result<Shown<Vec<hs::User>>> {
    let r: wire::UsersResponse = read(v, "a list of users")?;
    let users = r.users.into_iter().filter(|u| keep(u)).collect();
    Ok(both(users, wire::User::into_view))
}

pub fn node(v: Value) -> anyhow::Result<Shown<hs::Node>> {
    let r: wire::NodeResponse = read(v, "a node")?;
    Ok(Shown {
        machine: hs::Node::from(&r.node),
        human: json(r.node.into_view()),
    })
}

pub fn nodes(v: Value, keep: impl Fn(&wire::Node) -> bool) -> anyhow::Result<Shown<Vec<hs::Node>>> {
    let r: wire::NodesResponse = read(v, "a list of nodes")?;
    let nodes = r.nodes.into_iter().filter(|n| keep(n)).collect();
    Ok(both(nodes, wire::Node::into_view))
}

pub fn preauth_key(v: Value) -> anyhow::Result<Shown<hs::PreAuthKey>> {
    let r: wire::PreAuthKeyResponse = read(v, "a pre-auth key")?;
    Ok(Shown {
        machine: hs::PreAuthKey::from(&r.pre_auth_key),
        human: json(r.pre_auth_key.into_view()),
    })
}

pub fn preauth_keys(v: Value) -> anyhow::Result<Shown<Vec<hs::PreAuthKey>>> {
    let r: wire::PreAuthKeysResponse = read(v, "a list of pre-auth keys")?;
    Ok(both(r.pre_auth_keys, wire::PreAuthKey::into_view))
}

pub fn api_keys(v: Value) -> anyhow::Result<Shown<Vec<hs::ApiKey>>> {
    let r: wire::ApiKeysResponse = read(v, "a list of API keys")?;
    Ok(both(r.api_keys, wire::ApiKey::into_view))
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

pub fn backfill(v: Value) -> anyhow::Result<Shown<hs::Backfill>> {
    let r: wire::BackfillResponse = read(v, "a backfill report")?;
    Ok(Shown {
        machine: hs::Backfill::from(&r),
        human: serde_json::json!({ "changes": r.changes }),
    })
}
