//! A node's posture attributes for administrators: the `node:*` ones the device reports
//! (read-only) and the `custom:*` ones set here, through the tailnet writer, so that the
//! policy is recompiled with them. Tailscale's API v2 shapes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::dto::rfc3339;
use super::{Admin, AdminError};
use crate::tailnet::attributes::{AttrUpdate, AttrValue, CustomAttr, check_key};
use crate::tailnet::model::{Node, NodeId};

/// `GET /api/v2/device/{id}/attributes`: values by key, and the expiry of those that expire.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AttributesView {
    pub attributes: BTreeMap<String, serde_json::Value>,
    pub expiries: BTreeMap<String, String>,
}

impl AttributesView {
    /// What `node` has at `now`: its `node:*` attributes and its unexpired custom ones.
    pub fn of(node: &Node, now: OffsetDateTime) -> Self {
        let mut attributes: BTreeMap<String, serde_json::Value> = oxiscale_policy::node_attributes(
            &node.hostinfo.os,
            node.hostinfo.os_version(),
            &node.hostinfo.ipn_version,
        )
        .into_iter()
        .map(|(k, v)| (k, policy_value_json(&v)))
        .collect();
        let mut expiries = BTreeMap::new();
        for (key, attr) in &node.custom_attributes {
            if attr.is_expired(now) {
                continue;
            }
            attributes.insert(key.clone(), attr.value.to_json());
            if let Some(expiry) = attr.expiry {
                expiries.insert(key.clone(), rfc3339(expiry));
            }
        }
        AttributesView {
            attributes,
            expiries,
        }
    }
}

fn policy_value_json(v: &oxiscale_policy::AttrValue) -> serde_json::Value {
    match v {
        oxiscale_policy::AttrValue::Str(s) => serde_json::Value::String(s.clone()),
        oxiscale_policy::AttrValue::Num(n) => serde_json::Number::from_f64(*n)
            .map_or(serde_json::Value::Null, serde_json::Value::Number),
        oxiscale_policy::AttrValue::Bool(b) => serde_json::Value::Bool(*b),
    }
}

/// `POST /api/v2/device/{id}/attributes/{key}`'s body.
#[derive(Debug, Deserialize, Serialize, Default)]
pub struct SetAttribute {
    /// A string, number or boolean.
    pub value: Option<serde_json::Value>,
    /// RFC 3339; absent = never expires.
    #[serde(default)]
    pub expiry: Option<String>,
    /// Why (Tailscale keeps it in its audit log; here it goes to the audit log too).
    #[serde(default)]
    pub comment: Option<String>,
}

/// Longest comment kept in the audit log.
const MAX_COMMENT_LEN: usize = 200;

/// A device id as Tailscale's API names it: the node id, or its stable id (`n<id>`).
pub fn parse_device_id(text: &str) -> Result<NodeId, AdminError> {
    let t = text.trim();
    t.strip_prefix('n')
        .unwrap_or(t)
        .parse()
        .map_err(|_| AdminError::BadRequest(format!("device id {text:?} is not a node id")))
}

impl Admin {
    pub fn node_attributes(&self, id: NodeId) -> Result<AttributesView, AdminError> {
        let now = OffsetDateTime::now_utc();
        self.tailnet.read(|s| {
            s.node(id)
                .map(|n| AttributesView::of(n, now))
                .ok_or_else(|| {
                    crate::tailnet::TailnetError::NotFound {
                        what: "node",
                        id: id.to_string(),
                    }
                    .into()
                })
        })
    }

    /// Sets custom attribute `key` of node `id`; refused with nothing changed if the key,
    /// the value or the expiry is not valid or the node would hold too many.
    pub async fn set_node_attribute(
        &self,
        id: NodeId,
        key: String,
        req: SetAttribute,
    ) -> Result<AttributesView, AdminError> {
        let now = OffsetDateTime::now_utc();
        check_key(&key).map_err(|e| AdminError::BadRequest(e.to_string()))?;
        let value = req
            .value
            .as_ref()
            .ok_or_else(|| {
                AdminError::BadRequest(format!("attribute {key}: \"value\" is required"))
            })
            .and_then(|v| {
                AttrValue::from_json(&key, v).map_err(|e| AdminError::BadRequest(e.to_string()))
            })?;
        let expiry = match req.expiry.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(t) => {
                let at = OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
                    .map_err(|e| {
                    AdminError::BadRequest(format!(
                        "attribute {key}: expiry {t:?} is not an RFC 3339 time: {e}"
                    ))
                })?;
                if at <= now {
                    return Err(AdminError::BadRequest(format!(
                        "attribute {key}: expiry {t:?} is in the past"
                    )));
                }
                Some(at)
            }
        };
        let before = self.node_attributes(id)?;
        let update = AttrUpdate {
            key: key.clone(),
            set: Some(CustomAttr { value, expiry }),
        };
        self.tailnet
            .mutate(move |s, fx| s.update_custom_attributes(fx, id, &[update], now))
            .await?;
        let comment: Option<String> = req
            .comment
            .map(|c| c.chars().take(MAX_COMMENT_LEN).collect());
        self.attributes_changed("node.set_attribute", id, &key, before, comment)
            .await
    }

    /// Removes custom attribute `key` of node `id` (nothing changes if it has none).
    pub async fn delete_node_attribute(
        &self,
        id: NodeId,
        key: String,
    ) -> Result<AttributesView, AdminError> {
        let now = OffsetDateTime::now_utc();
        check_key(&key).map_err(|e| AdminError::BadRequest(e.to_string()))?;
        let before = self.node_attributes(id)?;
        let update = AttrUpdate {
            key: key.clone(),
            set: None,
        };
        self.tailnet
            .mutate(move |s, fx| s.update_custom_attributes(fx, id, &[update], now))
            .await?;
        self.attributes_changed("node.delete_attribute", id, &key, before, None)
            .await
    }

    async fn attributes_changed(
        &self,
        action: &str,
        id: NodeId,
        key: &str,
        before: AttributesView,
        comment: Option<String>,
    ) -> Result<AttributesView, AdminError> {
        let after = self.node_attributes(id)?;
        let target = match comment {
            Some(c) if !c.is_empty() => format!("node {id} attribute {key} ({c})"),
            _ => format!("node {id} attribute {key}"),
        };
        self.record(
            action,
            target,
            before.attributes.get(key).cloned(),
            after.attributes.get(key).cloned(),
        )
        .await;
        Ok(after)
    }
}

#[cfg(test)]
mod tests {
    use super::parse_device_id;

    #[test]
    fn a_device_id_is_the_node_id_or_its_stable_id() {
        assert_eq!(parse_device_id("12").unwrap(), 12);
        assert_eq!(parse_device_id("n12").unwrap(), 12);
        for bad in ["", "n", "x12", "nn1", "-1"] {
            assert!(parse_device_id(bad).is_err(), "{bad}");
        }
    }
}
