//! Tailscale SSH "check" mode (protocol/03 §4): the destination node of an SSH connection
//! that a `"action": "check"` rule covers asks, over its Noise connection,
//! `GET /machine/ssh/action/{src}/to/{dst}?local_user=…` what to do.
//!
//! - If the source node's owner passed a check for this (source, destination, local user)
//!   within the check period, the answer is `accept` at once.
//! - Otherwise a pending check is opened: the answer's `message` (shown to the SSH user)
//!   names a console page, `/ssh-check/<token>`, where the owner signs in and approves, and
//!   its `holdAndDelegate` names `…/wait/<id>`, which the node long-polls: at most
//!   [`WAIT_PER_POLL`] per request, then a "still waiting" answer (the same URL again) that
//!   the client polls anew, until the owner approves (`accept`), someone else answers or the
//!   owner denies (`reject`), or the check expires (`reject`).
//!
//! Only the destination node itself may ask (its machine key is the Noise peer's), only
//! while it and the source are admitted, and only while its SSH policy still holds a check
//! rule for the source and the local user: every doubt is a refusal, never an accept.
//! Pending checks and passes live in this process's memory: a restart forgets them (the SSH
//! user is asked again).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use http::{Method, Response, StatusCode};
use oxiscale_tailcfg::{MachinePublic, SshAction, SshPolicy};
use time::OffsetDateTime;
use tracing::{info, warn};

use super::{ControlBody, ControlPlane, json, text};
use crate::tailnet::model::NodeId;
use crate::tailnet::state::State;

mod checks;

pub use checks::*;

/// Why a request for a check is not answered with a check.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Denial {
    /// The asker may not ask (not the destination, unknown, expired): an HTTP error.
    Refused(StatusCode, &'static str),
    /// The asker may ask, and the answer is no: an SSHAction `reject` the client shows.
    Rejected(String),
}

/// The route of a check request.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    Action {
        src: NodeId,
        dst: NodeId,
    },
    Wait {
        src: NodeId,
        dst: NodeId,
        id: String,
    },
}

fn parse_route(path: &str) -> Option<Route> {
    let rest = path.strip_prefix(PATH_PREFIX)?;
    let parts: Vec<&str> = rest.splitn(6, '/').collect();
    let id_of = |s: &str| s.parse::<NodeId>().ok().filter(|id| *id > 0);
    match parts.as_slice() {
        [src, "to", dst] => Some(Route::Action {
            src: id_of(src)?,
            dst: id_of(dst)?,
        }),
        [src, "to", dst, "wait", id]
            if id.len() == ID_CHARS && id.bytes().all(|b| b.is_ascii_hexdigit()) =>
        {
            Some(Route::Wait {
                src: id_of(src)?,
                dst: id_of(dst)?,
                id: (*id).to_owned(),
            })
        }
        _ => None,
    }
}

fn local_user_of(query: Option<&str>) -> Option<String> {
    let user = form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == "local_user")
        .map(|(_, v)| v.into_owned())?;
    let ok = !user.is_empty()
        && user.len() <= MAX_LOCAL_USER_BYTES
        && !user.chars().any(|c| c.is_control());
    ok.then_some(user)
}

/// Whether `policy` (the destination's) holds a check rule that the source matches and that
/// maps some requested user to `local_user`.
fn policy_asks_check(
    policy: Option<&SshPolicy>,
    src_ips: &[IpAddr],
    src_stable_id: &str,
    src_login: &str,
    local_user: &str,
) -> bool {
    let Some(policy) = policy else {
        return false;
    };
    policy.rules.iter().any(|rule| {
        let is_check = rule
            .action
            .as_ref()
            .is_some_and(|a| !a.hold_and_delegate.is_empty() && !a.accept && !a.reject);
        let principal = rule.principals.iter().any(|p| {
            p.any
                || (!p.node.is_empty() && p.node == src_stable_id)
                || (!p.user_login.is_empty() && p.user_login == src_login)
                || (!p.node_ip.is_empty()
                    && p.node_ip
                        .parse::<IpAddr>()
                        .is_ok_and(|ip| src_ips.contains(&ip)))
        });
        // As the client maps a requested user: its own entry, else `*`; `=` is itself.
        let maps_to = |requested: &str| {
            let v = rule
                .ssh_users
                .get(requested)
                .or_else(|| rule.ssh_users.get("*"))?;
            Some(if v == "=" {
                requested.to_owned()
            } else {
                v.clone()
            })
        };
        let user = maps_to(local_user).as_deref() == Some(local_user)
            || rule
                .ssh_users
                .iter()
                .any(|(requested, local)| requested != "*" && local == local_user)
            || rule.ssh_users.get("*").is_some_and(|v| v == local_user);
        is_check && principal && user
    })
}

/// Decides whether `machine` may ask about `src` → `dst` as `local_user`, and who answers.
fn authorize(
    s: &State,
    machine: MachinePublic,
    src: NodeId,
    dst: NodeId,
    local_user: &str,
    now: OffsetDateTime,
) -> Result<CheckKey, Denial> {
    let Some(dst_node) = s.node(dst) else {
        return Err(Denial::Refused(StatusCode::NOT_FOUND, "node not found"));
    };
    if dst_node.machine_key != machine {
        return Err(Denial::Refused(
            StatusCode::FORBIDDEN,
            "only the destination node may ask for its SSH checks",
        ));
    }
    if !dst_node.is_admitted(now) {
        return Err(Denial::Refused(
            StatusCode::FORBIDDEN,
            "the node is expired or not approved",
        ));
    }
    let Some(src_node) = s.node(src).filter(|n| n.is_admitted(now)) else {
        return Err(Denial::Rejected(
            "the source device is unknown, expired or not approved".into(),
        ));
    };
    let owner = match src_node.user.and_then(|u| s.user(u)) {
        Some(owner) if src_node.tags.is_empty() => owner,
        _ => {
            return Err(Denial::Rejected(
                "SSH check mode needs a source device owned by a person; tagged devices cannot re-authenticate"
                    .into(),
            ));
        }
    };
    let ips: Vec<IpAddr> = src_node
        .ipv4
        .map(IpAddr::V4)
        .into_iter()
        .chain(src_node.ipv6.map(IpAddr::V6))
        .collect();
    let policy = s.ssh_policy(dst_node);
    if !policy_asks_check(
        policy.as_ref(),
        &ips,
        &src_node.stable_id(),
        &owner.login_name(),
        local_user,
    ) {
        return Err(Denial::Rejected(
            "the tailnet policy holds no SSH check rule for this connection".into(),
        ));
    }
    Ok(CheckKey {
        src,
        dst,
        local_user: local_user.to_owned(),
        owner: owner.id,
    })
}

fn accept() -> SshAction {
    SshAction {
        accept: true,
        allow_agent_forwarding: true,
        allow_local_port_forwarding: true,
        allow_remote_port_forwarding: true,
        ..Default::default()
    }
}

fn reject(message: &str) -> Response<ControlBody> {
    json(&SshAction {
        reject: true,
        message: format!("{message}\n"),
        ..Default::default()
    })
}

fn denial(d: Denial) -> Response<ControlBody> {
    match d {
        Denial::Refused(status, why) => text(status, why),
        Denial::Rejected(why) => reject(&why),
    }
}

/// `GET /machine/ssh/action/…` on the Noise channel.
pub async fn handle(
    cp: &Arc<ControlPlane>,
    machine: MachinePublic,
    method: &Method,
    path: &str,
    query: Option<&str>,
) -> Response<ControlBody> {
    if method != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "use GET");
    }
    let Some(route) = parse_route(path) else {
        return text(StatusCode::NOT_FOUND, "not found");
    };
    match route {
        Route::Action { src, dst } => {
            let Some(local_user) = local_user_of(query) else {
                return text(StatusCode::BAD_REQUEST, "local_user is missing or invalid");
            };
            action(cp, machine, src, dst, &local_user).await
        }
        Route::Wait { src, dst, id } => wait(cp, machine, src, dst, &id).await,
    }
}

async fn action(
    cp: &Arc<ControlPlane>,
    machine: MachinePublic,
    src: NodeId,
    dst: NodeId,
    local_user: &str,
) -> Response<ControlBody> {
    let now = OffsetDateTime::now_utc();
    let (authorized, server_url) = cp.tailnet.read(|s| {
        (
            authorize(s, machine, src, dst, local_user, now),
            s.settings.server_url.trim_end_matches('/').to_owned(),
        )
    });
    let key = match authorized {
        Ok(key) => key,
        Err(d) => {
            info!(machine = %machine.short(), src, dst, ?d, "SSH check request refused");
            return denial(d);
        }
    };
    let checks = &cp.ssh_checks;
    let period = checks.check_period().await;
    if checks.passed(&key, Instant::now(), period) {
        return json(&accept());
    }
    match checks.open(key, Instant::now()) {
        Ok(opened) => {
            info!(src, dst, local_user, "SSH check opened");
            json(&SshAction {
                message: format!(
                    "# This SSH connection needs its owner to sign in again.\n\
                     # To approve it, visit: {server_url}{PAGE_PREFIX}{}\n",
                    opened.token
                ),
                hold_and_delegate: format!(
                    "{server_url}{PATH_PREFIX}{src}/to/{dst}/wait/{}",
                    opened.id
                ),
                ..Default::default()
            })
        }
        Err(e) => {
            warn!(src, dst, error = %e, "SSH check refused");
            reject(&e.to_string())
        }
    }
}

async fn wait(
    cp: &Arc<ControlPlane>,
    machine: MachinePublic,
    src: NodeId,
    dst: NodeId,
    id: &str,
) -> Response<ControlBody> {
    let started = Instant::now();
    // Who may ask is decided before anything about the check is told.
    let authorize_now = |local_user: &str| {
        let now = OffsetDateTime::now_utc();
        cp.tailnet
            .read(|s| authorize(s, machine, src, dst, local_user, now))
    };
    let owner_asks = cp
        .tailnet
        .read(|s| s.node(dst).is_some_and(|n| n.machine_key == machine));
    if !owner_asks {
        return text(
            StatusCode::FORBIDDEN,
            "only the destination node may ask for its SSH checks",
        );
    }
    let (key, mut outcome, expires) = match cp.ssh_checks.watch(id, src, dst, started) {
        Ok(w) => w,
        Err(e) => return reject(&e.to_string()),
    };
    match authorize_now(&key.local_user) {
        Ok(now_key) if now_key == key => {}
        Ok(_) => return reject("the source device changed owner; connect again"),
        Err(d) => return denial(d),
    }
    let deadline = tokio::time::Instant::from_std((started + WAIT_PER_POLL).min(expires));
    let mut shutdown = cp.shutdown.clone();
    loop {
        let current = outcome.borrow_and_update().clone();
        match current {
            Outcome::Approved { .. } => {
                // The policy or the parties may have changed while the owner was away.
                return match authorize_now(&key.local_user) {
                    Ok(now_key) if now_key == key => json(&accept()),
                    Ok(_) => reject("the source device changed owner; connect again"),
                    Err(d) => denial(d),
                };
            }
            Outcome::Rejected(why) => return reject(&why),
            Outcome::Waiting => {}
        }
        tokio::select! {
            changed = outcome.changed() => {
                if changed.is_err() {
                    return reject(&CheckError::Unknown.to_string());
                }
            }
            _ = tokio::time::sleep_until(deadline) => break,
            _ = shutdown.changed() => break,
        }
    }
    if Instant::now() >= expires {
        return reject("the SSH check expired");
    }
    let server_url = cp
        .tailnet
        .read(|s| s.settings.server_url.trim_end_matches('/').to_owned());
    json(&SshAction {
        hold_and_delegate: format!("{server_url}{PATH_PREFIX}{src}/to/{dst}/wait/{id}"),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use oxiscale_tailcfg::{SshPrincipal, SshRule};
    use std::time::Duration;

    fn key(dst: NodeId, user: &str) -> CheckKey {
        CheckKey {
            src: 1,
            dst,
            local_user: user.into(),
            owner: 7,
        }
    }

    #[test]
    fn routes_are_parsed_strictly() {
        assert_eq!(
            parse_route("/machine/ssh/action/3/to/4"),
            Some(Route::Action { src: 3, dst: 4 })
        );
        let id = "0123456789abcdef0123456789abcdef";
        assert_eq!(
            parse_route(&format!("/machine/ssh/action/3/to/4/wait/{id}")),
            Some(Route::Wait {
                src: 3,
                dst: 4,
                id: id.into()
            })
        );
        for bad in [
            "/machine/ssh/action/3/to/",
            "/machine/ssh/action/x/to/4",
            "/machine/ssh/action/0/to/4",
            "/machine/ssh/action/3/from/4",
            "/machine/ssh/action/3/to/4/wait/short",
            "/machine/ssh/action/3/to/4/wait/0123456789abcdef0123456789abcdeg",
            "/machine/ssh/action/3/to/4/extra",
        ] {
            assert_eq!(parse_route(bad), None, "{bad}");
        }
    }

    #[test]
    fn local_user_is_bounded() {
        assert_eq!(local_user_of(Some("local_user=root")), Some("root".into()));
        assert_eq!(local_user_of(Some("local_user=a%20b")), Some("a b".into()));
        assert_eq!(local_user_of(Some("local_user=")), None);
        assert_eq!(local_user_of(Some("local_user=a%0Ab")), None);
        assert_eq!(local_user_of(None), None);
        let long = "x".repeat(MAX_LOCAL_USER_BYTES + 1);
        assert_eq!(local_user_of(Some(&format!("local_user={long}"))), None);
    }

    #[test]
    fn only_a_matching_check_rule_asks() {
        let rule = |action: SshAction, users: &[(&str, &str)]| SshRule {
            principals: vec![SshPrincipal {
                node_ip: "100.64.0.1".into(),
                ..Default::default()
            }],
            ssh_users: users
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            action: Some(action),
            ..Default::default()
        };
        let check = SshAction {
            hold_and_delegate: "https://x/machine/ssh/action/$SRC_NODE_ID/to/$DST_NODE_ID".into(),
            ..Default::default()
        };
        let ip: IpAddr = "100.64.0.1".parse().unwrap();
        let other: IpAddr = "100.64.0.2".parse().unwrap();
        let policy = SshPolicy {
            rules: vec![rule(check.clone(), &[("*", "="), ("root", "")])],
        };
        assert!(policy_asks_check(
            Some(&policy),
            &[ip],
            "n1",
            "a@x",
            "alice"
        ));
        assert!(!policy_asks_check(
            Some(&policy),
            &[ip],
            "n1",
            "a@x",
            "root"
        ));
        assert!(!policy_asks_check(
            Some(&policy),
            &[other],
            "n2",
            "b@x",
            "alice"
        ));
        assert!(!policy_asks_check(None, &[ip], "n1", "a@x", "alice"));
        let root_only = SshPolicy {
            rules: vec![rule(check.clone(), &[("root", "root")])],
        };
        assert!(policy_asks_check(
            Some(&root_only),
            &[ip],
            "n1",
            "a@x",
            "root"
        ));
        assert!(!policy_asks_check(
            Some(&root_only),
            &[ip],
            "n1",
            "a@x",
            "alice"
        ));
        let accept_only = SshPolicy {
            rules: vec![rule(accept(), &[("*", "=")])],
        };
        assert!(!policy_asks_check(
            Some(&accept_only),
            &[ip],
            "n1",
            "a@x",
            "alice"
        ));
    }

    #[test]
    fn checks_are_bounded_per_destination_and_in_all() {
        let checks = SshChecks::default();
        let now = Instant::now();
        for i in 0..MAX_PENDING_PER_DESTINATION {
            checks.open(key(1, &format!("u{i}")), now).unwrap();
        }
        // The same check again is the same pending check, not a new one.
        let again = checks.open(key(1, "u0"), now).unwrap();
        assert_eq!(
            checks.by_token(&again.token, now).unwrap().key,
            key(1, "u0")
        );
        assert_eq!(
            checks.open(key(1, "one-more"), now).unwrap_err(),
            CheckError::FullForDestination(MAX_PENDING_PER_DESTINATION)
        );
        let mut dst = 2;
        while checks.pending_count() < MAX_PENDING {
            for i in 0..MAX_PENDING_PER_DESTINATION {
                if checks.pending_count() < MAX_PENDING {
                    checks.open(key(dst, &format!("u{i}")), now).unwrap();
                }
            }
            dst += 1;
        }
        assert_eq!(
            checks.open(key(dst + 1, "u"), now).unwrap_err(),
            CheckError::Full(MAX_PENDING)
        );
        // Once they expire, there is room again.
        let later = now + PENDING_LIFETIME;
        assert!(checks.open(key(dst + 1, "u"), later).is_ok());
        assert_eq!(checks.pending_count(), 1);
    }

    #[test]
    fn an_expired_check_is_rejected_and_forgotten() {
        let checks = SshChecks::default();
        let now = Instant::now();
        let opened = checks.open(key(1, "root"), now).unwrap();
        let (_, rx, expires) = checks.watch(&opened.id, 1, 1, now).unwrap();
        assert_eq!(expires, now + PENDING_LIFETIME);
        assert_eq!(
            checks.decide(&opened.token, Outcome::Approved { by: "x".into() }, expires),
            Err(CheckError::Unknown)
        );
        assert!(matches!(*rx.borrow(), Outcome::Rejected(_)));
        assert!(checks.by_token(&opened.token, expires).is_none());
    }

    #[test]
    fn an_approval_is_a_pass_for_the_check_period_only() {
        let checks = SshChecks::default();
        let now = Instant::now();
        let opened = checks.open(key(1, "root"), now).unwrap();
        let period = DEFAULT_CHECK_PERIOD;
        assert!(!checks.passed(&key(1, "root"), now, period));
        checks
            .decide(&opened.token, Outcome::Approved { by: "a".into() }, now)
            .unwrap();
        assert_eq!(
            checks.decide(&opened.token, Outcome::Rejected("no".into()), now),
            Err(CheckError::Decided)
        );
        assert!(checks.passed(&key(1, "root"), now, period));
        assert!(!checks.passed(&key(1, "other"), now, period));
        assert!(!checks.passed(
            &CheckKey {
                owner: 8,
                ..key(1, "root")
            },
            now,
            period
        ));
        assert!(!checks.passed(&key(1, "root"), now + period, period));
        // "always": a pass never counts.
        assert!(!checks.passed(&key(1, "root"), now, Duration::ZERO));
    }

    #[test]
    fn the_shortest_check_period_of_the_policy_applies() {
        let rule = |extra: &str| {
            format!(
                r#"{{"action": "check", "src": ["a@"], "dst": ["tag:x"], "users": ["root"]{extra}}}"#
            )
        };
        let period = |rules: &[String]| {
            let text = format!(
                r#"{{"tagOwners": {{"tag:x": []}}, "ssh": [{}]}}"#,
                rules.join(",")
            );
            check_period_of(&oxiscale_policy::Policy::parse(&text).unwrap())
        };
        assert_eq!(period(&[]), DEFAULT_CHECK_PERIOD);
        assert_eq!(period(&[rule("")]), DEFAULT_CHECK_PERIOD);
        assert_eq!(
            period(&[rule(r#", "checkPeriod": "1h30m""#), rule("")]),
            Duration::from_secs(5400)
        );
        assert_eq!(
            period(&[rule(r#", "checkPeriod": "always""#)]),
            Duration::ZERO
        );
        assert_eq!(
            period(&[rule(r#", "checkPeriod": "168h""#)]),
            MAX_CHECK_PERIOD
        );
    }
}
