//! The web side of device sign-in (headscale's paths, so links and proxies carry over):
//!
//! - `GET /register/{auth_id}`: the AuthURL a client shows. Sends the browser to the
//!   provider, with a cookie that binds the sign-in to this browser; while no provider is in
//!   force, says how an administrator approves the machine instead.
//! - `GET /oidc/callback`: the provider sends the browser back; every check runs here, then
//!   a page names the machine and asks the person to confirm.
//! - `POST /register/confirm/{auth_id}`: the confirmation; the machine joins as the person's.
//!
//! The provider is read from the [`OidcHandle`] at each request: settings changed in the
//! console apply to the next sign-in.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use time::OffsetDateTime;
use tracing::{info, warn};

use super::pages::{self, MachineSummary};
use super::pending::ShortLived;
use super::{Oidc, OidcHandle, Purpose, SignInError, SignedIn};
use crate::audit::{self, Actor, ActorKind, AuditLog};
use crate::tailnet::Tailnet;
use crate::tailnet::secret::{random_token, tokens_equal};
use crate::tailnet::state::{KeyExpiry, ProviderProfile};

/// Cookie that carries the `state` of a sign-in started in this browser.
pub const STATE_COOKIE: &str = "oxiscale_oidc_state";
/// Cookie that carries the token of the confirmation shown to this browser.
const CONFIRM_COOKIE: &str = "oxiscale_oidc_confirm";
/// Cookie that carries a verified console sign-in to [`HANDOVER_PATH`].
pub const HANDOVER_COOKIE: &str = "oxiscale_oidc_handover";
/// The console's route that turns a verified sign-in into a session.
pub const HANDOVER_PATH: &str = "/login/oidc/finish";
/// How long a person may look at the confirmation page.
const CONFIRM_LIFETIME: Duration = Duration::from_secs(10 * 60);
const CONFIRMS_IN_FLIGHT: usize = 10_000;

/// A verified person waiting to confirm a machine.
struct Confirmation {
    auth_id: String,
    hostname: String,
    profile: ProviderProfile,
    key_expiry: KeyExpiry,
}

#[derive(Clone)]
struct Web {
    oidc: OidcHandle,
    tailnet: Arc<Tailnet>,
    confirmations: Arc<ShortLived<Confirmation>>,
    /// Registrations are recorded with the person who confirmed them.
    audit: AuditLog,
    /// Cookies get `Secure` when the server is reached over https.
    secure: bool,
    server_url: String,
}

pub fn routes(oidc: OidcHandle, tailnet: Arc<Tailnet>, server_url: &str) -> Router {
    let web = Web {
        oidc,
        audit: AuditLog::new(tailnet.store().pool().clone()),
        tailnet,
        confirmations: Arc::new(ShortLived::new(CONFIRM_LIFETIME, CONFIRMS_IN_FLIGHT)),
        secure: server_url.starts_with("https://"),
        server_url: server_url.to_owned(),
    };
    Router::new()
        .route("/register/{auth_id}", get(start))
        .route("/oidc/callback", get(callback))
        .route("/register/confirm/{auth_id}", post(confirm))
        .with_state(web)
}

pub fn cookie(name: &str, value: &str, path: &str, max_age: Duration, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path={path}; Max-Age={}; HttpOnly; SameSite=Lax{secure}",
        max_age.as_secs()
    ))
    .expect("tokens and paths are header-safe")
}

pub fn read_cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn with_cookie(mut response: Response, cookie: HeaderValue) -> Response {
    response.headers_mut().append(header::SET_COOKIE, cookie);
    response
}

/// `GET /register/{auth_id}`: off to the provider (or, without one, how an administrator
/// approves the machine).
async fn start(State(web): State<Web>, Path(auth_id): Path<String>) -> Response {
    let pending = web.tailnet.read(|s| {
        s.pending_login(&auth_id)
            .map(|p| (p.hostinfo.hostname.clone(), p.machine.short()))
    });
    let Some((hostname, machine)) = pending else {
        return pages::failed(
            StatusCode::NOT_FOUND,
            "This login link is unknown or has expired. Run `tailscale up` again",
        );
    };
    let Some(oidc) = web.oidc.get() else {
        return pages::needs_approval(&hostname, &machine, &web.server_url, &auth_id);
    };
    match oidc.start(Purpose::Device { auth_id }) {
        Ok((url, state)) => with_cookie(
            Redirect::to(url.as_str()).into_response(),
            cookie(
                STATE_COOKIE,
                &state,
                "/oidc",
                super::SIGN_IN_LIFETIME,
                web.secure,
            ),
        ),
        Err(busy) => {
            warn!("device sign-in refused: {busy}");
            pages::failed(StatusCode::SERVICE_UNAVAILABLE, &busy.to_string())
        }
    }
}

#[derive(Deserialize)]
struct CallbackQuery {
    #[serde(default)]
    state: String,
    #[serde(default)]
    code: String,
    error: Option<String>,
    error_description: Option<String>,
}

/// `GET /oidc/callback`: verify, then ask for confirmation.
async fn callback(
    State(web): State<Web>,
    headers: HeaderMap,
    Query(q): Query<CallbackQuery>,
) -> Response {
    let Some(oidc) = web.oidc.get() else {
        return pages::failed(
            StatusCode::SERVICE_UNAVAILABLE,
            "Sign-in through the identity provider is not available at the moment. Start again later",
        );
    };
    let issuer = oidc.issuer().to_owned();
    if let Some(error) = &q.error {
        let said = match &q.error_description {
            Some(d) => format!("{error}: {d}"),
            None => error.clone(),
        };
        info!(issuer, error = %said, "the identity provider ended a sign-in");
        return pages::failed(
            StatusCode::BAD_REQUEST,
            &format!("The identity provider said: {said}"),
        );
    }
    let signed = oidc
        .finish(&q.state, read_cookie(&headers, STATE_COOKIE), &q.code)
        .await;
    let signed = match signed {
        Ok(s) => s,
        Err(SignInError::Refused(why)) => {
            info!(issuer, reason = %why, "sign-in refused by the oidc restrictions");
            return pages::refused(&why.to_string());
        }
        Err(e) => {
            warn!(issuer, error = %e, "sign-in failed");
            let status = match e {
                SignInError::ProviderUnreachable(_) => StatusCode::BAD_GATEWAY,
                SignInError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::BAD_REQUEST,
            };
            return pages::failed(status, &e.to_string());
        }
    };
    let auth_id = match signed.purpose.clone() {
        Purpose::Device { auth_id } => auth_id,
        Purpose::Console { .. } => return hand_to_console(&web, &oidc, signed),
    };
    let machine = web.tailnet.read(|s| {
        s.pending_login(&auth_id).map(|p| MachineSummary {
            hostname: p.hostinfo.hostname.clone(),
            os: p.hostinfo.os.clone(),
            node_key: p.node_key.short(),
        })
    });
    let Some(machine) = machine else {
        return pages::failed(
            StatusCode::GONE,
            "The machine's login expired while you signed in. Run `tailscale up` again",
        );
    };
    let person = person_label(&signed.profile);
    let token = random_token();
    let confirmation = Confirmation {
        auth_id: auth_id.clone(),
        hostname: machine.hostname.clone(),
        key_expiry: key_expiry(&oidc, &signed, OffsetDateTime::now_utc()),
        profile: signed.profile,
    };
    if let Err(busy) = web
        .confirmations
        .insert(token.clone(), confirmation, Instant::now())
    {
        return pages::failed(StatusCode::SERVICE_UNAVAILABLE, &busy.to_string());
    }
    info!(
        issuer,
        person,
        machine = machine.hostname,
        "sign-in verified; waiting for the person to confirm the machine"
    );
    let mut response = pages::confirm(&machine, &person, &auth_id, &token);
    let headers = response.headers_mut();
    headers.append(
        header::SET_COOKIE,
        cookie(
            CONFIRM_COOKIE,
            &token,
            "/register/confirm",
            CONFIRM_LIFETIME,
            web.secure,
        ),
    );
    // The state has been used: the cookie goes too.
    headers.append(
        header::SET_COOKIE,
        cookie(STATE_COOKIE, "", "/oidc", Duration::ZERO, web.secure),
    );
    response
}

/// A console sign-in: the console's own route (inside its session layer) picks it up.
fn hand_to_console(web: &Web, oidc: &Oidc, signed: SignedIn) -> Response {
    match oidc.hand_over(signed) {
        Ok(token) => {
            let mut response = Redirect::to(HANDOVER_PATH).into_response();
            let headers = response.headers_mut();
            headers.append(
                header::SET_COOKIE,
                cookie(
                    HANDOVER_COOKIE,
                    &token,
                    HANDOVER_PATH,
                    Duration::from_secs(60),
                    web.secure,
                ),
            );
            headers.append(
                header::SET_COOKIE,
                cookie(STATE_COOKIE, "", "/oidc", Duration::ZERO, web.secure),
            );
            response
        }
        Err(busy) => pages::failed(StatusCode::SERVICE_UNAVAILABLE, &busy.to_string()),
    }
}

fn person_label(p: &ProviderProfile) -> String {
    [&p.email, &p.display_name, &p.preferred_username, &p.subject]
        .into_iter()
        .find(|s| !s.is_empty())
        .cloned()
        .unwrap_or_default()
}

/// The node's key expiry: the ID token's when `use_expiry_from_token`, else `oidc.expiry`
/// (`0`: never), else `node.expiry`.
fn key_expiry(oidc: &Oidc, signed: &SignedIn, now: OffsetDateTime) -> KeyExpiry {
    let config = oidc.config();
    if config.use_expiry_from_token && signed.token_expiry > now {
        return KeyExpiry::At(signed.token_expiry);
    }
    match config.expiry {
        Some(d) if d.is_zero() => KeyExpiry::Never,
        Some(d) => time::Duration::try_from(d.0)
            .ok()
            .and_then(|d| now.checked_add(d))
            .map_or(KeyExpiry::Never, KeyExpiry::At),
        None => KeyExpiry::Default,
    }
}

#[derive(Deserialize)]
struct ConfirmForm {
    #[serde(default)]
    token: String,
}

/// `POST /register/confirm/{auth_id}`: the person confirmed; the machine joins.
async fn confirm(
    State(web): State<Web>,
    Path(auth_id): Path<String>,
    headers: HeaderMap,
    axum::Form(form): axum::Form<ConfirmForm>,
) -> Response {
    let from_this_browser = read_cookie(&headers, CONFIRM_COOKIE)
        .is_some_and(|c| !form.token.is_empty() && tokens_equal(c, &form.token));
    if !from_this_browser {
        return pages::failed(
            StatusCode::BAD_REQUEST,
            "This confirmation was not shown to this browser. Start again from your device",
        );
    }
    let Some(confirmation) = web
        .confirmations
        .take(&form.token, Instant::now())
        .filter(|c| c.auth_id == auth_id)
    else {
        return pages::failed(
            StatusCode::BAD_REQUEST,
            "This confirmation is unknown, was already used or has expired. Start again from your device",
        );
    };
    let now = OffsetDateTime::now_utc();
    let profile = confirmation.profile.clone();
    let user = match web
        .tailnet
        .mutate(move |s, fx| s.sign_in_user(fx, &profile, now))
        .await
    {
        Ok(user) => user,
        Err(e) => {
            warn!(error = %e, "cannot record the person who signed in");
            return pages::failed(
                StatusCode::INTERNAL_SERVER_ERROR,
                "The server could not record your account",
            );
        }
    };
    let key_expiry = confirmation.key_expiry;
    let user_id = user.id;
    let completed = web
        .tailnet
        .mutate(move |s, fx| s.complete_login(fx, &auth_id, user_id, key_expiry, now))
        .await;
    match completed {
        Ok(node) => {
            info!(user = %user.name, node, machine = confirmation.hostname, "machine registered through the identity provider");
            let person = Actor::new(ActorKind::Sso, person_label(&confirmation.profile));
            let after = serde_json::json!({ "node": node, "hostname": confirmation.hostname, "user": user.name });
            let target = format!("node {node} ({})", confirmation.hostname);
            if let Err(e) = audit::acting_as(
                person,
                web.audit
                    .record("node.register", &target, None, Some(after)),
            )
            .await
            {
                tracing::error!(error = %e, "a registration could not be written to the audit log");
            }
            with_cookie(
                pages::connected(&confirmation.hostname),
                cookie(
                    CONFIRM_COOKIE,
                    "",
                    "/register/confirm",
                    Duration::ZERO,
                    web.secure,
                ),
            )
        }
        Err(e) => {
            warn!(user = %user.name, error = %e, "machine registration after sign-in failed");
            pages::failed(
                StatusCode::CONFLICT,
                &format!("The machine could not join: {e}"),
            )
        }
    }
}
