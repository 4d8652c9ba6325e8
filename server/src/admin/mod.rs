//! Administration of the tailnet: the operations behind the CLI, the REST API and the
//! console, one implementation for all of them.

pub mod attributes;
pub mod devices;
pub mod dns;
pub mod dto;
pub mod identity;
pub mod logins;

use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::audit::AuditLog;
use crate::config::duration;
use crate::policy::{PolicyManager, PolicyStoreError, PolicyView};
use crate::tailnet::model::{KeyId, NodeId, UserId};
use crate::tailnet::state::{KeyExpiry, PreAuthKeySpec};
use crate::tailnet::{Tailnet, TailnetError};
use dto::{ApiKeyView, NodeView, PreAuthKeyView, RoutesView, UserView};

/// Default lifetime of a pre-auth key (headscale's).
pub const DEFAULT_PREAUTH_EXPIRATION: Duration = Duration::from_secs(3600);
/// Default lifetime of an API key (headscale's).
pub const DEFAULT_API_KEY_EXPIRATION: Duration = Duration::from_secs(90 * 86_400);

#[derive(Debug, Deserialize, Serialize, Default)]
pub struct CreateUser {
    pub name: String,
    #[serde(default)]
    pub display_name: String,
    #[serde(default)]
    pub email: String,
    /// A profile picture (http or https); people who sign in through the identity
    /// provider get theirs from it.
    #[serde(default)]
    pub picture_url: String,
}

#[derive(Debug, Deserialize, Serialize, Default)]
pub struct CreatePreAuthKey {
    pub user: Option<UserId>,
    #[serde(default)]
    pub reusable: bool,
    #[serde(default)]
    pub ephemeral: bool,
    /// A duration from now, e.g. `1h` or `90d`.
    pub expiration: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
}

#[derive(Debug, Deserialize, Serialize, Default)]
pub struct ExpireNode {
    /// RFC 3339 time; absent = now.
    pub at: Option<String>,
    #[serde(default)]
    pub disable: bool,
}

#[derive(Debug, Deserialize, Serialize, Default)]
pub struct CreateApiKey {
    pub expiration: Option<String>,
}

#[derive(Debug, Deserialize, Serialize, Default)]
pub struct KeySelector {
    pub id: Option<KeyId>,
    pub prefix: Option<String>,
}

#[derive(Debug, Deserialize, Serialize)]
pub struct CompleteRegistration {
    pub auth_id: String,
    pub user: UserId,
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(transparent)]
    Tailnet(#[from] TailnetError),
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Policy(#[from] PolicyStoreError),
    /// A policy given to `policy check` is refused: where and why.
    #[error("{0}")]
    PolicyInvalid(oxiscale_policy::PolicyError),
    /// The request is valid but the tailnet is not in a state that allows it.
    #[error("{0}")]
    Precondition(String),
}

#[derive(Debug, Deserialize, Serialize, Default)]
pub struct PolicyBody {
    /// The policy text (HuJSON).
    pub policy: String,
}

fn to_json(v: &impl Serialize) -> Option<serde_json::Value> {
    serde_json::to_value(v).ok()
}

/// `now` plus the lifetime `text` asks for (`default` when absent). A lifetime past the
/// calendar's end is refused, not a panic.
fn expiration_after(
    now: OffsetDateTime,
    text: Option<&str>,
    default: Duration,
) -> Result<OffsetDateTime, AdminError> {
    let lifetime = match text.map(str::trim) {
        None | Some("") => default,
        // headscale's clients send the time itself (RFC 3339).
        Some(t) => match OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339) {
            Ok(at) if at <= now => {
                return Err(AdminError::BadRequest(format!(
                    "expiration {t:?} is in the past"
                )));
            }
            Ok(at) => (at - now).try_into().unwrap_or(Duration::MAX),
            Err(_) => duration::parse(t).map_err(|e| AdminError::BadRequest(e.to_string()))?,
        },
    };
    time::Duration::try_from(lifetime)
        .ok()
        .and_then(|d| now.checked_add(d))
        .filter(|t| t.year() <= 9999)
        .ok_or_else(|| {
            AdminError::BadRequest(format!(
                "expiration {:?} is too far in the future",
                text.unwrap_or_default()
            ))
        })
}

#[derive(Clone)]
pub struct Admin {
    tailnet: Arc<Tailnet>,
    /// `None` until the server wires its policy source in: then there is no policy at all.
    policy: Option<Arc<PolicyManager>>,
    /// The DNS settings in force (see `dns.rs`); every server has some.
    dns: Arc<dns::DnsService>,
    /// The OpenID Connect settings in force (see `identity.rs`), once the server wires them in.
    identity: Option<Arc<identity::IdentityService>>,
    /// Every change made through here is recorded, with who made it.
    audit: AuditLog,
}

impl Admin {
    pub fn new(tailnet: Arc<Tailnet>, dns: Arc<dns::DnsService>) -> Admin {
        let audit = AuditLog::new(tailnet.store().pool().clone());
        Admin {
            tailnet,
            policy: None,
            dns,
            identity: None,
            audit,
        }
    }

    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    /// Records a change made by whoever acts in this request. The change is already
    /// committed: a log that cannot be written is reported, not a reason to undo it.
    async fn record(
        &self,
        action: &str,
        target: impl AsRef<str>,
        before: Option<serde_json::Value>,
        after: Option<serde_json::Value>,
    ) {
        if let Err(e) = self
            .audit
            .record(action, target.as_ref(), before, after)
            .await
        {
            tracing::error!(error = %e, action, "a change could not be written to the audit log");
        }
    }

    /// Gives the administration the OpenID Connect settings (the console's Identity page).
    pub fn with_identity(mut self, identity: Arc<identity::IdentityService>) -> Admin {
        self.identity = Some(identity);
        self
    }

    /// Gives the administration the policy source (`policy get|set`).
    pub fn with_policy(mut self, policy: Arc<PolicyManager>) -> Admin {
        self.policy = Some(policy);
        self
    }

    // policy

    pub async fn get_policy(&self) -> PolicyView {
        match &self.policy {
            Some(p) => p.view().await,
            None => PolicyView {
                policy: None,
                mode: crate::config::PolicyMode::File,
                path: None,
                problem: None,
            },
        }
    }

    /// When the policy in force was stored: database mode only (headscale's `updatedAt`;
    /// a policy file has none).
    pub async fn policy_updated_at(&self) -> Option<String> {
        let p = self.policy.as_ref()?;
        if p.mode() != crate::config::PolicyMode::Database {
            return None;
        }
        match self.tailnet.store().latest_policy_time().await {
            Ok(t) => t.map(dto::rfc3339),
            Err(e) => {
                tracing::warn!(error = %e, "the policy's time could not be read");
                None
            }
        }
    }

    /// Stores a new policy (database mode) once it is valid for the live tailnet.
    pub async fn set_policy(&self, text: String) -> Result<PolicyView, AdminError> {
        match &self.policy {
            Some(p) => {
                let before = p.view().await.policy;
                let view = p.set(text).await?;
                self.record(
                    "policy.set",
                    "policy",
                    before.map(serde_json::Value::String),
                    view.policy.clone().map(serde_json::Value::String),
                )
                .await;
                Ok(view)
            }
            None => Err(AdminError::Policy(PolicyStoreError::FileMode(
                "policy.path, which is not set".into(),
            ))),
        }
    }

    /// The per-node report of `text` compiled against the live tailnet (nothing changes).
    pub fn check_policy(&self, text: &str) -> Result<serde_json::Value, AdminError> {
        crate::policy::check_live(&self.tailnet, text).map_err(AdminError::PolicyInvalid)
    }

    pub fn tailnet(&self) -> &Arc<Tailnet> {
        &self.tailnet
    }

    // users

    pub fn list_users(&self) -> Vec<UserView> {
        self.tailnet
            .read(|s| s.users().map(UserView::from).collect())
    }

    pub async fn create_user(&self, req: CreateUser) -> Result<UserView, AdminError> {
        let now = OffsetDateTime::now_utc();
        let user = self
            .tailnet
            .mutate(move |s, fx| {
                s.create_user(
                    fx,
                    &req.name,
                    &req.display_name,
                    &req.email,
                    &req.picture_url,
                    now,
                )
            })
            .await?;
        let view = UserView::from(&user);
        self.record(
            "user.create",
            format!("user {}", view.name),
            None,
            to_json(&view),
        )
        .await;
        Ok(view)
    }

    pub async fn rename_user(&self, id: UserId, new_name: String) -> Result<UserView, AdminError> {
        let before = self.tailnet.read(|s| s.user(id).map(UserView::from));
        let user = self
            .tailnet
            .mutate(move |s, fx| s.rename_user(fx, id, &new_name))
            .await?;
        let view = UserView::from(&user);
        self.record(
            "user.rename",
            format!("user {id}"),
            before.as_ref().and_then(to_json),
            to_json(&view),
        )
        .await;
        Ok(view)
    }

    pub async fn delete_user(&self, id: UserId) -> Result<(), AdminError> {
        let before = self.tailnet.read(|s| s.user(id).map(UserView::from));
        self.tailnet
            .mutate(move |s, fx| s.delete_user(fx, id))
            .await?;
        self.record(
            "user.delete",
            format!("user {id}"),
            before.as_ref().and_then(to_json),
            None,
        )
        .await;
        Ok(())
    }

    /// Resolves a user given by id or by name.
    pub fn resolve_user(&self, id_or_name: &str) -> Result<UserId, AdminError> {
        self.tailnet.read(|s| {
            id_or_name
                .parse::<UserId>()
                .ok()
                .filter(|id| s.user(*id).is_some())
                .or_else(|| s.user_by_name(id_or_name).map(|u| u.id))
                .ok_or_else(|| {
                    AdminError::Tailnet(TailnetError::NotFound {
                        what: "user",
                        id: id_or_name.to_owned(),
                    })
                })
        })
    }

    // pre-auth keys

    pub fn list_preauth_keys(&self) -> Vec<PreAuthKeyView> {
        let now = OffsetDateTime::now_utc();
        self.tailnet.read(|s| {
            s.preauth_keys()
                .map(|k| PreAuthKeyView::from(s, k, None, now))
                .collect()
        })
    }

    pub async fn create_preauth_key(
        &self,
        req: CreatePreAuthKey,
    ) -> Result<PreAuthKeyView, AdminError> {
        let now = OffsetDateTime::now_utc();
        let expiration =
            expiration_after(now, req.expiration.as_deref(), DEFAULT_PREAUTH_EXPIRATION)?;
        let (key, secret) = self
            .tailnet
            .mutate(move |s, fx| {
                let spec = PreAuthKeySpec {
                    user: req.user,
                    reusable: req.reusable,
                    ephemeral: req.ephemeral,
                    expiration,
                    tags: req.tags,
                };
                s.create_preauth_key(fx, spec, now)
            })
            .await?;
        // The log gets the masked key; only the caller sees the secret, once.
        let (logged, view) = self.tailnet.read(|s| {
            (
                PreAuthKeyView::from(s, &key, None, now),
                PreAuthKeyView::from(s, &key, Some(secret), now),
            )
        });
        self.record(
            "preauthkey.create",
            format!("pre-auth key {}", key.id),
            None,
            to_json(&logged),
        )
        .await;
        Ok(view)
    }

    pub async fn expire_preauth_key(&self, id: KeyId) -> Result<PreAuthKeyView, AdminError> {
        let now = OffsetDateTime::now_utc();
        let key = self
            .tailnet
            .mutate(move |s, fx| s.expire_preauth_key(fx, id, now))
            .await?;
        let view = self
            .tailnet
            .read(|s| PreAuthKeyView::from(s, &key, None, now));
        self.record(
            "preauthkey.expire",
            format!("pre-auth key {id}"),
            None,
            to_json(&view),
        )
        .await;
        Ok(view)
    }

    pub async fn delete_preauth_key(&self, id: KeyId) -> Result<(), AdminError> {
        self.tailnet
            .mutate(move |s, fx| s.delete_preauth_key(fx, id))
            .await?;
        self.record(
            "preauthkey.delete",
            format!("pre-auth key {id}"),
            None,
            None,
        )
        .await;
        Ok(())
    }

    // API keys

    pub fn list_api_keys(&self) -> Vec<ApiKeyView> {
        let now = OffsetDateTime::now_utc();
        self.tailnet.read(|s| {
            s.api_keys()
                .map(|k| ApiKeyView::from(k, None, now))
                .collect()
        })
    }

    pub async fn create_api_key(&self, req: CreateApiKey) -> Result<ApiKeyView, AdminError> {
        let now = OffsetDateTime::now_utc();
        let expiration =
            expiration_after(now, req.expiration.as_deref(), DEFAULT_API_KEY_EXPIRATION)?;
        let (key, secret) = self
            .tailnet
            .mutate(move |s, fx| s.create_api_key(fx, expiration, now))
            .await?;
        let logged = ApiKeyView::from(&key, None, now);
        self.record(
            "apikey.create",
            format!("API key {}", key.prefix),
            None,
            to_json(&logged),
        )
        .await;
        Ok(ApiKeyView::from(&key, Some(secret), now))
    }

    pub async fn expire_api_key(&self, sel: KeySelector) -> Result<ApiKeyView, AdminError> {
        let now = OffsetDateTime::now_utc();
        let key = self
            .tailnet
            .mutate(move |s, fx| {
                let id = s.find_api_key(sel.id, sel.prefix.as_deref())?;
                s.expire_api_key(fx, id, now)
            })
            .await?;
        let view = ApiKeyView::from(&key, None, now);
        self.record(
            "apikey.expire",
            format!("API key {}", key.prefix),
            None,
            to_json(&view),
        )
        .await;
        Ok(view)
    }

    pub async fn delete_api_key(&self, sel: KeySelector) -> Result<(), AdminError> {
        let target = match (&sel.prefix, sel.id) {
            (Some(prefix), _) => format!("API key {prefix}"),
            (None, id) => format!("API key {}", id.unwrap_or_default()),
        };
        self.tailnet
            .mutate(move |s, fx| {
                let id = s.find_api_key(sel.id, sel.prefix.as_deref())?;
                s.delete_api_key(fx, id)
            })
            .await?;
        self.record("apikey.delete", target, None, None).await;
        Ok(())
    }

    pub fn verify_api_key(&self, text: &str) -> bool {
        self.tailnet
            .read(|s| s.verify_api_key(text, OffsetDateTime::now_utc()))
    }

    // nodes

    pub fn list_nodes(&self, user: Option<UserId>) -> Vec<NodeView> {
        let now = OffsetDateTime::now_utc();
        self.tailnet.read(|s| {
            s.nodes()
                .filter(|n| user.is_none() || n.user == user)
                .map(|n| NodeView::from(s, n, now))
                .collect()
        })
    }

    pub fn node(&self, id: NodeId) -> Result<NodeView, AdminError> {
        let now = OffsetDateTime::now_utc();
        self.tailnet.read(|s| {
            s.node(id)
                .map(|n| NodeView::from(s, n, now))
                .ok_or_else(|| {
                    AdminError::Tailnet(TailnetError::NotFound {
                        what: "node",
                        id: id.to_string(),
                    })
                })
        })
    }

    /// The NetInfo facts a node reported (UDP, NAT mapping, port mapping, DERP latency…) as
    /// sorted (name, value) pairs; empty when it reported none.
    pub fn node_net_info(&self, id: NodeId) -> Result<Vec<(String, String)>, AdminError> {
        self.tailnet.read(|s| {
            let node = s.node(id).ok_or_else(|| {
                AdminError::Tailnet(TailnetError::NotFound {
                    what: "node",
                    id: id.to_string(),
                })
            })?;
            let mut facts: Vec<(String, String)> = node
                .hostinfo
                .net_info
                .iter()
                .flat_map(|ni| ni.rest.iter())
                .map(|(k, v)| {
                    let value = match v {
                        serde_json::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    (k.clone(), value)
                })
                .collect();
            facts.sort();
            Ok(facts)
        })
    }

    pub async fn expire_node(&self, id: NodeId, req: ExpireNode) -> Result<NodeView, AdminError> {
        let now = OffsetDateTime::now_utc();
        let before = self.node(id)?;
        let action = if req.disable {
            "node.disable_expiry"
        } else {
            "node.expire"
        };
        if req.disable {
            self.tailnet
                .mutate(move |s, fx| s.disable_node_expiry(fx, id))
                .await?;
        } else {
            let at = match req.at.as_deref() {
                None | Some("") => None,
                Some(t) => Some(
                    OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
                        .map_err(|e| {
                            AdminError::BadRequest(format!(
                                "expiry {t:?} is not an RFC 3339 time: {e}"
                            ))
                        })?,
                ),
            };
            self.tailnet
                .mutate(move |s, fx| s.expire_node(fx, id, at, now))
                .await?;
        }
        self.node_changed(action, before).await
    }

    /// Records a change of node `before.id` with its view before and now; answers the view.
    async fn node_changed(&self, action: &str, before: NodeView) -> Result<NodeView, AdminError> {
        let after = self.node(before.id)?;
        self.record(
            action,
            format!("node {} ({})", before.id, before.given_name),
            to_json(&before),
            to_json(&after),
        )
        .await;
        Ok(after)
    }

    /// Lets a node held by `node.approval_required` into the tailnet (nothing changes for
    /// an approved node).
    pub async fn approve_node(&self, id: NodeId) -> Result<NodeView, AdminError> {
        let before = self.node(id)?;
        self.tailnet
            .mutate(move |s, fx| s.approve_node(fx, id))
            .await?;
        self.node_changed("node.approve", before).await
    }

    pub async fn rename_node(&self, id: NodeId, new_name: String) -> Result<NodeView, AdminError> {
        let before = self.node(id)?;
        self.tailnet
            .mutate(move |s, fx| s.rename_node(fx, id, &new_name))
            .await?;
        self.node_changed("node.rename", before).await
    }

    pub async fn delete_node(&self, id: NodeId) -> Result<NodeView, AdminError> {
        let before = self.node(id)?;
        self.tailnet
            .mutate(move |s, fx| s.delete_node(fx, id))
            .await?;
        self.record(
            "node.delete",
            format!("node {id} ({})", before.given_name),
            to_json(&before),
            None,
        )
        .await;
        Ok(before)
    }

    pub async fn set_tags(&self, id: NodeId, tags: Vec<String>) -> Result<NodeView, AdminError> {
        let before = self.node(id)?;
        self.tailnet
            .mutate(move |s, fx| s.set_tags(fx, id, tags))
            .await?;
        self.node_changed("node.tag", before).await
    }

    pub async fn approve_routes(
        &self,
        id: NodeId,
        routes: Vec<String>,
    ) -> Result<NodeView, AdminError> {
        let routes = routes
            .iter()
            .filter(|r| !r.trim().is_empty())
            .map(|r| {
                r.trim()
                    .parse::<IpNet>()
                    .map_err(|e| AdminError::BadRequest(format!("route {r:?}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let before = self.node(id)?;
        self.tailnet
            .mutate(move |s, fx| s.approve_routes(fx, id, routes))
            .await?;
        self.node_changed("node.approve_routes", before).await
    }

    pub fn list_routes(&self, id: Option<NodeId>) -> Result<Vec<RoutesView>, AdminError> {
        let nodes = match id {
            Some(id) => vec![self.node(id)?],
            None => self.list_nodes(None),
        };
        Ok(nodes
            .into_iter()
            .filter(|n| {
                id.is_some() || !n.available_routes.is_empty() || !n.approved_routes.is_empty()
            })
            .map(|n| RoutesView {
                id: n.id,
                name: n.given_name,
                approved_routes: n.approved_routes,
                available_routes: n.available_routes,
                subnet_routes: n.subnet_routes,
            })
            .collect())
    }

    pub async fn backfill_ips(&self) -> Result<Vec<NodeId>, AdminError> {
        let changed = self.tailnet.mutate(|s, fx| s.backfill_ips(fx)).await?;
        if !changed.is_empty() {
            self.record("node.backfill_ips", "nodes", None, to_json(&changed))
                .await;
        }
        Ok(changed)
    }

    pub async fn complete_registration(
        &self,
        req: CompleteRegistration,
    ) -> Result<NodeView, AdminError> {
        let now = OffsetDateTime::now_utc();
        let id = self
            .tailnet
            .mutate(move |s, fx| {
                let by = crate::tailnet::model::RegisterMethod::Cli;
                s.complete_login_by(fx, &req.auth_id, req.user, KeyExpiry::Default, by, now)
            })
            .await?;
        let view = self.node(id)?;
        self.record(
            "node.register",
            format!("node {id} ({})", view.given_name),
            None,
            to_json(&view),
        )
        .await;
        Ok(view)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_expiration_past_the_calendar_is_refused_not_a_panic() {
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        for text in ["10000y", "99999999999999999999y", "5000000d"] {
            let err = expiration_after(now, Some(text), DEFAULT_API_KEY_EXPIRATION).unwrap_err();
            assert!(matches!(err, AdminError::BadRequest(_)), "{text}: {err:?}");
        }
        assert_eq!(
            expiration_after(now, Some("1h"), DEFAULT_API_KEY_EXPIRATION).unwrap(),
            now + time::Duration::hours(1)
        );
        assert_eq!(
            expiration_after(now, None, DEFAULT_API_KEY_EXPIRATION).unwrap(),
            now + DEFAULT_API_KEY_EXPIRATION
        );
    }
}
