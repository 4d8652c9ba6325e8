//! `tailcfg.SSHPolicy`: what Tailscale SSH on a node allows (protocol/03 §4). Unlike the rest
//! of tailcfg, these JSON keys are camelCase.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub struct SshPolicy {
    /// Always present (possibly empty): `{"rules":[]}` tells the node SSH is governed.
    #[serde(default)]
    pub rules: Vec<SshRule>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct SshRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule_expires: Option<String>,
    #[serde(default)]
    pub principals: Vec<SshPrincipal>,
    /// Requested SSH user → local user; `*` is the fallback, `=` means "the same name",
    /// `""` means no match.
    #[serde(default)]
    pub ssh_users: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<SshAction>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accept_env: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct SshPrincipal {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node: String,
    #[serde(rename = "nodeIP", default, skip_serializing_if = "String::is_empty")]
    pub node_ip: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user_login: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub any: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct SshAction {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reject: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub accept: bool,
    /// Nanoseconds, as Go's `time.Duration`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub session_duration: i64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_agent_forwarding: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hold_and_delegate: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_local_port_forwarding: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_remote_port_forwarding: bool,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}
