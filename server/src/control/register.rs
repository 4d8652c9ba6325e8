//! `POST /machine/register` (protocol/02 §1).

use std::sync::Arc;

use http::{Response, StatusCode};
use oxiscale_tailcfg::{Login, MachinePublic, RegisterRequest, RegisterResponse, RegisterUser};
use time::OffsetDateTime;
use tracing::{info, warn};

use super::errors::ControlError;
use super::{ControlBody, ControlPlane, json, text};
use crate::mapper::build::{TAGGED_DEVICES_LOGIN, TAGGED_DEVICES_USER_ID};
use crate::tailnet::model::NodeId;
use crate::tailnet::state::PENDING_LOGIN_TTL;
use crate::tailnet::{RegisterOutcome, State};
use crate::telemetry;

pub async fn handle(
    cp: &Arc<ControlPlane>,
    machine: MachinePublic,
    body: &[u8],
) -> Response<ControlBody> {
    let req: RegisterRequest = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            warn!(machine = %machine.short(), error = %e, "invalid register request");
            telemetry::registration("invalid");
            return text(StatusCode::BAD_REQUEST, "invalid register request");
        }
    };
    if req.version < cp.settings.min_capability {
        telemetry::registration("client_too_old");
        return json(&RegisterResponse::error(format!(
            "this Tailscale client is too old (capability version {}); oxiscale needs {} (Tailscale 1.80) or newer",
            req.version, cp.settings.min_capability
        )));
    }
    if let Err(e) = req.check_bounds() {
        warn!(machine = %machine.short(), error = %e, "registration refused");
        telemetry::registration("invalid");
        return text(StatusCode::BAD_REQUEST, &e.to_string());
    }

    if !req.followup.is_empty()
        && let Some(resp) = wait_for_followup(cp, machine, &req.followup).await
    {
        return resp;
    }
    // Unknown or expired login: start over with a fresh URL.

    let now = OffsetDateTime::now_utc();
    let outcome = {
        let req = req.clone();
        cp.tailnet
            .mutate(move |s, fx| s.register(fx, machine, &req, now))
            .await
    };
    match outcome {
        Ok(RegisterOutcome::Authorized(id)) => {
            info!(machine = %machine.short(), node = id, "node registered");
            // Only authorized registrations count: anyone can send register requests.
            cp.first_maps.registration_seen();
            telemetry::registration("authorized");
            json(&authorized(cp, id))
        }
        Ok(RegisterOutcome::KeyExpired) => {
            telemetry::registration("key_expired");
            json(&RegisterResponse {
                node_key_expired: true,
                ..Default::default()
            })
        }
        Ok(RegisterOutcome::NeedsLogin { auth_url, auth_id }) => {
            info!(machine = %machine.short(), auth_id, "registration waits for approval: oxiscale auth register --auth-id {auth_id} --user <USER>");
            telemetry::registration("needs_login");
            json(&RegisterResponse {
                auth_url,
                ..Default::default()
            })
        }
        Ok(RegisterOutcome::Refused(reason)) => {
            info!(machine = %machine.short(), reason, "registration refused");
            telemetry::registration("refused");
            json(&RegisterResponse::error(reason))
        }
        Err(e) => {
            warn!(machine = %machine.short(), error = %e, "registration failed");
            telemetry::registration("failed");
            match ControlError::from(&e) {
                // Not the client's fault: it retries the request after a backoff.
                unavailable @ ControlError::Unavailable => {
                    text(unavailable.status(), &unavailable.to_string())
                }
                refused => json(&RegisterResponse::error(format!(
                    "registration failed: {refused}"
                ))),
            }
        }
    }
}

/// Holds a `Followup` request until the pending login completes (or expires). `None` when
/// there is no such pending login for this machine.
async fn wait_for_followup(
    cp: &Arc<ControlPlane>,
    machine: MachinePublic,
    url: &str,
) -> Option<Response<ControlBody>> {
    let auth_id = url.trim_end_matches('/').rsplit('/').next()?.to_owned();
    let mut rx = cp.tailnet.read(|s| s.watch_login(&auth_id, machine))?;
    let done = tokio::time::timeout(PENDING_LOGIN_TTL, rx.wait_for(|v| v.is_some())).await;
    let result = match done {
        Ok(Ok(v)) => v.clone().expect("waited for Some"),
        _ => Err("login timed out".to_owned()),
    };
    Some(match result {
        Ok(id) => {
            telemetry::registration("authorized");
            json(&authorized(cp, id))
        }
        Err(reason) => {
            telemetry::registration("refused");
            json(&RegisterResponse::error(reason))
        }
    })
}

fn authorized(cp: &ControlPlane, id: NodeId) -> RegisterResponse {
    cp.tailnet.read(|s| {
        let (user, login) = identity(s, id);
        RegisterResponse {
            user,
            login,
            // Registered, but held for an administrator (`node.approval_required`): the
            // client goes on to poll its map, which says so too (its own `Node`).
            machine_authorized: s.node(id).is_some_and(|n| n.approved),
            ..Default::default()
        }
    })
}

/// The user and login a node's owner is shown as.
fn identity(s: &State, id: NodeId) -> (RegisterUser, Login) {
    let owner = s.node(id).and_then(|n| n.user).and_then(|u| s.user(u));
    match owner {
        Some(u) => {
            let display = if u.display_name.is_empty() {
                u.name.clone()
            } else {
                u.display_name.clone()
            };
            (
                RegisterUser {
                    id: u.id,
                    display_name: display.clone(),
                    profile_pic_url: String::new(),
                    created: Some(u.created),
                },
                Login {
                    id: u.id,
                    provider: "oxiscale".into(),
                    login_name: u.login_name(),
                    display_name: display,
                    profile_pic_url: String::new(),
                },
            )
        }
        None => (
            RegisterUser {
                id: TAGGED_DEVICES_USER_ID,
                display_name: "Tagged devices".into(),
                ..Default::default()
            },
            Login {
                id: TAGGED_DEVICES_USER_ID,
                provider: "oxiscale".into(),
                login_name: TAGGED_DEVICES_LOGIN.into(),
                display_name: "Tagged devices".into(),
                profile_pic_url: String::new(),
            },
        ),
    }
}
