//! `PATCH /machine/set-device-attr` (protocol/02 §4): a node sets or removes posture
//! attributes of its own (`SetDeviceAttributesRequest {"Version","NodeKey","Update"}`, a
//! value or `null` per key).
//!
//! Off unless `node.attributes_from_device` is set: a device must not vouch for its own
//! posture unless the operator trusts it to. Only `custom:*` keys are accepted, with the same
//! bounds as through the admin API
//! (`tailnet::attributes`): which `node:*` keys Tailscale's service lets a client report is
//! not public, and `node:*` here comes from Hostinfo. The machine must own `NodeKey`. The
//! change is all or nothing.

use std::collections::BTreeMap;
use std::sync::Arc;

use http::{Method, Response, StatusCode};
use oxiscale_tailcfg::{MachinePublic, NodePublic};
use serde::Deserialize;
use time::OffsetDateTime;
use tracing::{info, warn};

use super::errors::ControlError;
use super::{ControlBody, ControlPlane, empty, text};
use crate::tailnet::attributes::{AttrUpdate, AttrValue, CustomAttr, MAX_ATTRIBUTES};

/// Largest request body: the most attributes with the longest keys and values fit well.
pub const MAX_BODY: usize = 16 * 1024;

#[derive(Deserialize)]
struct SetDeviceAttributesRequest {
    #[serde(rename = "NodeKey")]
    node_key: NodePublic,
    #[serde(rename = "Update", default)]
    update: BTreeMap<String, serde_json::Value>,
}

pub async fn handle(
    cp: &Arc<ControlPlane>,
    machine: MachinePublic,
    method: &Method,
    body: &[u8],
) -> Response<ControlBody> {
    if method != Method::PATCH {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only PATCH is allowed");
    }
    if !cp.settings.attributes_from_device {
        return text(
            StatusCode::FORBIDDEN,
            "devices may not set their own attributes here (node.attributes_from_device)",
        );
    }
    if body.len() > MAX_BODY {
        return text(
            StatusCode::PAYLOAD_TOO_LARGE,
            "set-device-attr request too large",
        );
    }
    let req: SetDeviceAttributesRequest = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            warn!(machine = %machine.short(), error = %e, "invalid set-device-attr request");
            return text(StatusCode::BAD_REQUEST, "invalid set-device-attr request");
        }
    };
    let updates = match updates(&req.update) {
        Ok(u) => u,
        Err(message) => return text(StatusCode::BAD_REQUEST, &message),
    };
    let owner = cp.tailnet.read(|s| {
        s.node_by_key(&req.node_key)
            .map(|n| (n.id, n.machine_key == machine))
    });
    let id = match owner {
        Some((id, true)) => id,
        // Someone else's node looks like no node at all.
        Some((_, false)) | None => {
            return text(StatusCode::NOT_FOUND, "node not found");
        }
    };
    let now = OffsetDateTime::now_utc();
    let keys: Vec<String> = updates.iter().map(|u| u.key.clone()).collect();
    match cp
        .tailnet
        .mutate(move |s, fx| s.update_custom_attributes(fx, id, &updates, now))
        .await
    {
        Ok(_) => {
            info!(node = id, attributes = ?keys, "node set its posture attributes");
            empty(StatusCode::OK)
        }
        Err(e) => match ControlError::from(&e) {
            ControlError::Refused(message) => text(StatusCode::BAD_REQUEST, &message),
            other => {
                warn!(node = id, error = %e, "set-device-attr failed");
                text(other.status(), &other.to_string())
            }
        },
    }
}

/// The request's `Update` as changes: a value sets, `null` removes. Bounds on keys and
/// values are checked by the tailnet rule; here only what JSON can say wrongly.
fn updates(update: &BTreeMap<String, serde_json::Value>) -> Result<Vec<AttrUpdate>, String> {
    if update.len() > MAX_ATTRIBUTES * 2 {
        return Err(format!(
            "at most {} attribute changes per request",
            MAX_ATTRIBUTES * 2
        ));
    }
    update
        .iter()
        .map(|(key, v)| {
            let set = match v {
                serde_json::Value::Null => None,
                v => Some(CustomAttr {
                    value: AttrValue::from_json(key, v).map_err(|e| e.to_string())?,
                    expiry: None,
                }),
            };
            Ok(AttrUpdate {
                key: key.clone(),
                set,
            })
        })
        .collect()
}
