//! What administrators see of the tailnet, in headscale's CLI JSON shapes (snake_case
//! field names; a created pre-auth key has `key`).

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::tailnet::State;
use crate::tailnet::model::{ApiKey, Node, PreAuthKey, User};

pub fn rfc3339(t: OffsetDateTime) -> String {
    oxiscale_tailcfg::time_fmt::format(t)
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct UserView {
    pub id: u64,
    pub name: String,
    pub display_name: String,
    pub email: String,
    pub created_at: String,
    pub provider: String,
    pub provider_id: String,
    pub profile_pic_url: String,
}

impl UserView {
    pub fn from(u: &User) -> Self {
        UserView {
            id: u.id,
            name: u.name.clone(),
            display_name: u.display_name.clone(),
            email: u.email.clone(),
            created_at: rfc3339(u.created),
            // headscale's shape: "oidc" and `<issuer>/<subject>` for provider sign-ins.
            provider: if u.provider.is_some() {
                "oidc".into()
            } else {
                String::new()
            },
            provider_id: u
                .provider
                .as_ref()
                .map(|p| format!("{}/{}", p.issuer.trim_end_matches('/'), p.subject))
                .unwrap_or_default(),
            profile_pic_url: u.picture_url.clone(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeView {
    pub id: u64,
    pub machine_key: String,
    pub node_key: String,
    pub disco_key: String,
    pub ip_addresses: Vec<String>,
    /// The hostname the client reported.
    pub name: String,
    /// The MagicDNS name (unique in the tailnet).
    pub given_name: String,
    pub fqdn: String,
    pub user: Option<UserView>,
    pub tags: Vec<String>,
    pub online: bool,
    pub last_seen: Option<String>,
    pub expiry: Option<String>,
    pub expired: bool,
    /// `false` while the node waits for an administrator (`node.approval_required`).
    pub approved: bool,
    pub created_at: String,
    pub register_method: String,
    pub ephemeral: bool,
    pub approved_routes: Vec<String>,
    pub available_routes: Vec<String>,
    pub subnet_routes: Vec<String>,
    pub os: String,
    pub client_version: String,
    pub endpoints: Vec<String>,
    pub home_derp: i64,
}

impl NodeView {
    pub fn from(s: &State, n: &Node, now: OffsetDateTime) -> Self {
        NodeView {
            id: n.id,
            machine_key: n.machine_key.to_string(),
            node_key: n.node_key.to_string(),
            disco_key: n.disco_key.to_string(),
            ip_addresses: n.addresses().iter().map(|a| a.addr().to_string()).collect(),
            name: n.hostname.clone(),
            given_name: n.given_name.clone(),
            fqdn: s.fqdn(n).trim_end_matches('.').to_owned(),
            user: n.user.and_then(|u| s.user(u)).map(UserView::from),
            tags: n.tags.clone(),
            online: n.online,
            last_seen: n.last_seen.map(rfc3339),
            expiry: n.expiry.map(rfc3339),
            expired: n.is_expired(now),
            approved: n.approved,
            created_at: rfc3339(n.created),
            register_method: n.register_method.as_str().to_owned(),
            ephemeral: n.ephemeral,
            approved_routes: n.approved_routes.iter().map(ToString::to_string).collect(),
            available_routes: n
                .hostinfo
                .routable_ips
                .iter()
                .map(ToString::to_string)
                .collect(),
            subnet_routes: s
                .primary_routes_of(n.id)
                .iter()
                .map(ToString::to_string)
                .collect(),
            os: n.hostinfo.os.clone(),
            client_version: n.hostinfo.ipn_version.clone(),
            endpoints: n.endpoints.clone(),
            home_derp: n.hostinfo.preferred_derp(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PreAuthKeyView {
    pub id: u64,
    /// The whole secret when just created; a masked form afterwards.
    pub key: String,
    pub user: Option<UserView>,
    pub reusable: bool,
    pub ephemeral: bool,
    pub used: bool,
    pub expired: bool,
    pub expiration: String,
    pub created_at: String,
    pub acl_tags: Vec<String>,
}

impl PreAuthKeyView {
    pub fn from(s: &State, k: &PreAuthKey, secret: Option<String>, now: OffsetDateTime) -> Self {
        PreAuthKeyView {
            id: k.id,
            // A key taken over from headscale keeps headscale's masked form.
            key: secret.unwrap_or_else(|| match k.hash {
                crate::tailnet::model::KeyHash::Bcrypt { .. } => {
                    format!("hskey-auth-{}-***", k.prefix)
                }
                crate::tailnet::model::KeyHash::Sha256(_) => {
                    format!("oxskey-auth-{}-***", k.prefix)
                }
            }),
            user: k.user.and_then(|u| s.user(u)).map(UserView::from),
            reusable: k.reusable,
            ephemeral: k.ephemeral,
            used: k.used,
            expired: k.is_expired(now),
            expiration: rfc3339(k.expiration),
            created_at: rfc3339(k.created),
            acl_tags: k.tags.clone(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ApiKeyView {
    pub id: u64,
    pub prefix: String,
    /// The whole secret when just created; absent afterwards.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub key: Option<String>,
    pub expiration: String,
    pub created_at: String,
    pub last_seen: Option<String>,
    pub expired: bool,
}

impl ApiKeyView {
    pub fn from(k: &ApiKey, secret: Option<String>, now: OffsetDateTime) -> Self {
        ApiKeyView {
            id: k.id,
            prefix: k.prefix.clone(),
            key: secret,
            expiration: rfc3339(k.expiration),
            created_at: rfc3339(k.created),
            last_seen: k.last_seen.map(rfc3339),
            expired: k.expiration <= now,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RoutesView {
    pub id: u64,
    pub name: String,
    pub approved_routes: Vec<String>,
    pub available_routes: Vec<String>,
    pub subnet_routes: Vec<String>,
}
