//! Console sign-in through the identity provider ("Sign in with …" on /login).
//!
//! `GET /login/oidc` sends the browser to the provider; the provider's answer is verified at
//! `/oidc/callback` (`crate::identity::routes`), which hands the verified person over, by a
//! cookie, to `GET /login/oidc/finish` here: inside the session layer, where the person's
//! console role is decided from their groups (`console.roles`) and the session starts.
//! Local accounts keep working beside it (break-glass).
//!
//! The provider is read from the [`OidcHandle`] at each request: the link appears, goes, or
//! names another provider as soon as the settings in force change.

use std::sync::Arc;
use std::time::Duration;

use app::api::{AuthMethod, ConsoleIdentity};
use axum::extract::{Query, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use tracing::{info, warn};

use super::{ConsoleAuth, HOME, internal, safe_next, session_of, sign_in};
use crate::config::oidc::ConsoleRolesConfig;
use crate::identity::routes::{HANDOVER_COOKIE, HANDOVER_PATH, STATE_COOKIE, cookie, read_cookie};
use crate::identity::{OidcHandle, Purpose, pages};
use crate::tailnet::Tailnet;

/// What console sign-in through the provider needs.
pub struct ConsoleSso {
    /// The provider in force (none while OpenID Connect is off or not discovered yet).
    pub oidc: OidcHandle,
    pub tailnet: Arc<Tailnet>,
    pub roles: ConsoleRolesConfig,
    /// Cookies get `Secure` when the server is reached over https.
    pub secure: bool,
}

impl ConsoleSso {
    /// What the sign-in page's link says, while sign-in through a provider is possible.
    pub fn label(&self) -> Option<String> {
        let oidc = self.oidc.get()?;
        let host = oidc
            .issuer()
            .parse::<http::Uri>()
            .ok()
            .and_then(|u| u.host().map(str::to_owned))
            .unwrap_or_else(|| "your identity provider".into());
        Some(format!("Sign in with {host}"))
    }
}

#[derive(Deserialize)]
pub(super) struct StartQuery {
    #[serde(default)]
    next: String,
}

/// `GET /login/oidc`: off to the provider.
pub(super) async fn start(
    State(auth): State<Arc<ConsoleAuth>>,
    Query(q): Query<StartQuery>,
) -> Response {
    let Some((sso, oidc)) = auth.sso.as_ref().and_then(|s| Some((s, s.oidc.get()?))) else {
        return Redirect::to("/login").into_response();
    };
    let next = safe_next(&q.next).unwrap_or(HOME).to_owned();
    match oidc.start(Purpose::Console { next }) {
        Ok((url, state)) => {
            let mut response = Redirect::to(url.as_str()).into_response();
            response.headers_mut().append(
                header::SET_COOKIE,
                cookie(
                    STATE_COOKIE,
                    &state,
                    "/oidc",
                    Duration::from_secs(600),
                    sso.secure,
                ),
            );
            response
        }
        Err(busy) => pages::failed(StatusCode::SERVICE_UNAVAILABLE, &busy.to_string()),
    }
}

/// `GET /login/oidc/finish`: the verified person gets a console session with their role.
pub(super) async fn finish(State(auth): State<Arc<ConsoleAuth>>, req: Request) -> Response {
    let Some(sso) = &auth.sso else {
        return Redirect::to("/login").into_response();
    };
    let session = match session_of(&req) {
        Ok(s) => s,
        Err(r) => return r,
    };
    // A handover kept by a provider that has since been replaced is gone: sign in again.
    let signed = read_cookie(req.headers(), HANDOVER_COOKIE)
        .and_then(|token| sso.oidc.get()?.take_handover(token));
    let Some(signed) = signed else {
        return pages::failed(
            StatusCode::BAD_REQUEST,
            "This sign-in is unknown, was already used or has expired. Sign in again",
        );
    };
    let Purpose::Console { next } = &signed.purpose else {
        return pages::failed(
            StatusCode::BAD_REQUEST,
            "This sign-in was not for the console",
        );
    };
    let Some(role) = sso.roles.role_for(&signed.profile.groups) else {
        info!(subject = %signed.profile.subject, email = %signed.profile.email, "console sign-in refused: no console role for this person's groups");
        return pages::refused("Your account has no role in this tailnet's console");
    };
    let profile = signed.profile.clone();
    let now = time::OffsetDateTime::now_utc();
    let user = match sso
        .tailnet
        .mutate(move |s, fx| s.sign_in_user(fx, &profile, now))
        .await
    {
        Ok(user) => user,
        Err(e) => return internal(e),
    };
    let identity = ConsoleIdentity {
        admin_id: user.id,
        name: if user.email.is_empty() {
            user.name.clone()
        } else {
            user.email.clone()
        },
        method: AuthMethod::Oidc,
        role,
        user_id: Some(user.id),
    };
    if let Err(r) = sign_in(&session, identity).await {
        warn!(user = %user.name, "console sign-in through the identity provider could not start a session");
        return r;
    }
    info!(user = %user.name, role = role.as_str(), "console sign-in through the identity provider");
    let mut response = Redirect::to(safe_next(next).unwrap_or(HOME)).into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        cookie(
            HANDOVER_COOKIE,
            "",
            HANDOVER_PATH,
            Duration::ZERO,
            sso.secure,
        ),
    );
    response
}
