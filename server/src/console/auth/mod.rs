//! Console sign-in: local administrator accounts, sessions and CSRF protection around every
//! console route.
//!
//! - Sessions: tower-sessions on the server's SQLite pool (`console_sessions`, under a hash
//!   of the id: [`session_store`]), cookie `oxiscale_session`: HttpOnly, SameSite=Lax,
//!   Secure when `server_url` is https, expiring after 12 h without activity. Lax rather than Strict so that a link to a console page
//!   from mail or chat opens signed in; cross-site POSTs still carry no cookie, and every
//!   state-changing request needs the CSRF token anyway.
//! - [`guard`] runs before every console route: pages without a session redirect to
//!   `/login?next=…`, `/console/*` (server functions, events) answer 401; only `/login`,
//!   `/setup`, `/pkg/*` and `/favicon.svg` are open. It puts the [`ConsoleIdentity`] and the
//!   [`CsrfToken`] in the request extensions (`app::api::current_admin` reads them).
//! - CSRF: one random token per session, rotated on sign-in; before sign-in (the login and
//!   setup forms) it is kept in its own cookie instead of a session ([`presign`]). Every POST/PUT/PATCH/DELETE must carry it as `x-csrf-token` (server functions,
//!   via `app::api::ConsoleClient`) or as the `_csrf` field of a form post, and must not come
//!   with a foreign `Origin`, else 403. The browser half reads it from a `<meta>` the shell
//!   renders: no JavaScript-readable cookie, and nothing for other sites to read.
//!
//! How the administrator is identified is an [`AuthMethod`]; OpenID Connect adds a variant
//! and its own routes beside `/login`.

// Handlers return early with a ready response; boxing it would only add noise.
#![allow(clippy::result_large_err)]

pub mod accounts;
mod presign;
mod proxies;
pub use presign::PRESIGN_COOKIE;
mod session_store;
pub mod sso;
mod throttle;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use app::api::{AuthMethod, CSRF_FIELD, CSRF_HEADER, ConsoleIdentity, CsrfToken};
use app::dto::ConsoleError;
use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequest, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use sqlx::SqlitePool;
use tower_sessions::cookie::SameSite;
use tower_sessions::session_store::ExpiredDeletion;
use tower_sessions::{Expiry, Session, SessionManagerLayer};
use tower_sessions_sqlx_store::SqliteStore;
use tracing::{info, warn};

use crate::audit::{self, Actor, ActorKind};
pub use accounts::{AccountError, Accounts, AdminAccount};
pub use sso::ConsoleSso;
use throttle::Throttle;

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "oxiscale_session";
/// A session unused this long is gone.
pub const SESSION_INACTIVITY: Duration = Duration::from_secs(12 * 3600);
/// Where a signed-in administrator lands by default.
pub(crate) const HOME: &str = "/machines";
/// Largest form body the guard reads to find the `_csrf` field.
const MAX_FORM_BYTES: usize = 2 << 20;
/// Session keys.
const IDENTITY_KEY: &str = "console.identity";
const CSRF_KEY: &str = "console.csrf";
const SEEN_KEY: &str = "console.seen";
/// Activity refreshes the session's expiry at most this often (each refresh is a write).
const TOUCH_EVERY: i64 = 60;

/// What the console's sign-in needs at run time.
pub struct ConsoleAuth {
    accounts: Accounts,
    /// Reverse proxies whose `X-Forwarded-For` names the client (`trusted_proxies`).
    trusted_proxies: Vec<ipnet::IpNet>,
    throttle: Throttle,
    /// `scheme://host[:port]` of `server_url`: the only `Origin` a state change may carry.
    origin: String,
    /// argon2 is deliberately expensive: at most this many run at once, so a flood of
    /// sign-in attempts queues instead of starving the coordination server of CPU.
    hashing: tokio::sync::Semaphore,
    /// Sign-in through the identity provider, when one is configured.
    sso: Option<ConsoleSso>,
}

impl ConsoleAuth {
    /// A place among the argon2 runs allowed at once; hold it while hashing.
    async fn hashing_permit(&self) -> tokio::sync::SemaphorePermit<'_> {
        self.hashing
            .acquire()
            .await
            .expect("semaphore never closed")
    }
}

/// The origin browsers send for pages served from `server_url` (default ports elided).
fn origin_of(server_url: &str) -> String {
    match server_url.parse::<http::Uri>() {
        Ok(uri) => {
            let scheme = uri.scheme_str().unwrap_or("http").to_ascii_lowercase();
            let host = uri.host().unwrap_or_default().to_ascii_lowercase();
            match uri.port_u16() {
                Some(443) if scheme == "https" => format!("{scheme}://{host}"),
                Some(80) if scheme == "http" => format!("{scheme}://{host}"),
                Some(port) => format!("{scheme}://{host}:{port}"),
                None => format!("{scheme}://{host}"),
            }
        }
        Err(_) => server_url.trim_end_matches('/').to_owned(),
    }
}

/// Wraps the console's routes and its fallback in sessions and [`guard`], and adds the
/// sign-in form handlers (`POST /login`, `/setup`, `/logout`). Starts the task that deletes
/// expired sessions.
pub fn protect(
    console: Router,
    fallback: Router,
    server_url: &str,
    pool: SqlitePool,
    sso: Option<ConsoleSso>,
    trusted_proxies: Vec<ipnet::IpNet>,
) -> (Router, Router) {
    let store = SqliteStore::new(pool.clone())
        .with_table_name("console_sessions")
        .expect("a valid table name");
    tokio::spawn(
        store
            .clone()
            .continuously_delete_expired(tokio::time::Duration::from_secs(600)),
    );
    let sessions = SessionManagerLayer::new(session_store::HashedIds(store))
        .with_name(SESSION_COOKIE)
        .with_http_only(true)
        .with_same_site(SameSite::Lax)
        .with_secure(server_url.starts_with("https://"))
        .with_path("/")
        .with_expiry(Expiry::OnInactivity(time::Duration::seconds(
            SESSION_INACTIVITY.as_secs() as i64,
        )));
    let auth = Arc::new(ConsoleAuth {
        accounts: Accounts::new(pool),
        trusted_proxies,
        throttle: Throttle::default(),
        origin: origin_of(server_url),
        hashing: tokio::sync::Semaphore::new(2),
        sso,
    });
    let console = console
        .route("/login", post(login).with_state(auth.clone()))
        .route("/setup", post(setup).with_state(auth.clone()))
        .route("/logout", post(logout).with_state(auth.clone()))
        .route("/login/oidc", get(sso::start).with_state(auth.clone()))
        .route(
            crate::identity::routes::HANDOVER_PATH,
            get(sso::finish).with_state(auth.clone()),
        )
        .layer(middleware::from_fn_with_state(auth.clone(), guard))
        .layer(sessions.clone());
    let fallback = fallback
        .layer(middleware::from_fn_with_state(auth, guard_fallback))
        .layer(sessions);
    (console, fallback)
}

/// Logs the one-time setup link while no administrator exists (a new link each start; the
/// previous one stops working).
pub async fn announce_setup_link(pool: &SqlitePool, server_url: &str) {
    match Accounts::new(pool.clone()).issue_setup_token().await {
        Ok(Some(token)) => warn!(
            "no console administrator exists yet: create one within {} minutes at {}/setup?token={} (or run `oxiscale admins create <name> --password-stdin`)",
            accounts::SETUP_TOKEN_LIFETIME.as_secs() / 60,
            server_url.trim_end_matches('/'),
            token
        ),
        Ok(None) => {}
        Err(e) => warn!(error = %e, "cannot create the console setup link"),
    }
}

/// What a console path is, for the guard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Static files of the browser half: no session involved at all.
    Asset,
    /// `/login`, `/setup`: open to everyone, need a (pre-sign-in) session for their CSRF token.
    SignIn,
    Logout,
    /// Server functions, events, anything else under `/console/`: 401 without a session.
    Api,
    /// A console page: redirect to sign in without a session.
    Page,
    /// An unknown path outside `/console/` reaching the fallback: signed out, a static 404.
    NotFound,
}

fn classify(path: &str, in_fallback: bool) -> Kind {
    match path {
        "/login" | "/setup" | "/login/oidc" | crate::identity::routes::HANDOVER_PATH => {
            Kind::SignIn
        }
        "/logout" => Kind::Logout,
        "/favicon.svg" => Kind::Asset,
        _ if path.starts_with("/pkg/") => Kind::Asset,
        _ if path.starts_with("/console/") || path == "/console" => Kind::Api,
        _ if in_fallback => Kind::NotFound,
        _ => Kind::Page,
    }
}

async fn guard(State(auth): State<Arc<ConsoleAuth>>, req: Request, next: Next) -> Response {
    let kind = classify(req.uri().path(), false);
    check(auth, kind, req, next).await
}

async fn guard_fallback(
    State(auth): State<Arc<ConsoleAuth>>,
    req: Request,
    next: Next,
) -> Response {
    let kind = classify(req.uri().path(), true);
    check(auth, kind, req, next).await
}

fn is_state_changing(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// A server function's error body, so `ConsoleError` decodes on the page.
fn console_error(status: StatusCode, error: ConsoleError) -> Response {
    let body = serde_json::to_string(&error).expect("ConsoleError serialises");
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

fn forbidden(kind: Kind, why: &str) -> Response {
    match kind {
        Kind::Api => console_error(StatusCode::FORBIDDEN, ConsoleError::Refused(why.to_owned())),
        _ => (
            StatusCode::FORBIDDEN,
            [(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"))],
            format!(
                "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\"><title>Refused · oxiscale</title></head>\
                 <body><main><h1>Refused</h1><p>{why}.</p><p>This can happen when a page was open too long. <a href=\"/login\">Start again</a>.</p></main></body></html>"
            ),
        )
            .into_response(),
    }
}

/// The signed-out answer to an unknown path: a static page, no session, no app render.
fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"))],
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\"><title>Page not found · oxiscale</title></head>\
         <body><main><h1>Page not found</h1><p><a href=\"/login\">Sign in</a>.</p></main></body></html>",
    )
        .into_response()
}

pub(crate) fn internal(e: impl std::fmt::Display) -> Response {
    warn!(error = %e, "console session store failed");
    (StatusCode::INTERNAL_SERVER_ERROR, "session store error").into_response()
}

/// `/login?next=<path>`, for a page that needs a session.
fn to_login(uri: &http::Uri) -> Response {
    let target = uri.path_and_query().map(|p| p.as_str()).unwrap_or(HOME);
    let next: String = form_urlencoded::byte_serialize(target.as_bytes()).collect();
    Redirect::to(&format!("/login?next={next}")).into_response()
}

/// Only a same-site path is a valid `next`: `/x`, not `//host`, `/\host`, `https://…`.
pub fn safe_next(next: &str) -> Option<&str> {
    let ok = next.starts_with('/')
        && !next.starts_with("//")
        && !next.contains('\\')
        && next.len() <= 2048
        && !next.chars().any(|c| c.is_control())
        && !next.starts_with("/login")
        && !next.starts_with("/setup")
        && !next.starts_with("/logout");
    ok.then_some(next)
}

/// The signed-in administrator of this session, if the account still exists. A session
/// whose account was deleted is ended here.
async fn identity(
    session: &Session,
    auth: &ConsoleAuth,
) -> Result<Option<ConsoleIdentity>, Response> {
    let Some(identity) = session
        .get::<ConsoleIdentity>(IDENTITY_KEY)
        .await
        .map_err(internal)?
    else {
        return Ok(None);
    };
    // The account's role now, not at sign-in: a demotion takes effect at the next request.
    let current = match identity.method {
        AuthMethod::Local => auth
            .accounts
            .by_id(identity.admin_id)
            .await
            .map_err(internal)?
            .map(|account| ConsoleIdentity {
                role: account.role,
                ..identity.clone()
            }),
        // A provider user's role follows their groups as of their latest sign-in (device or
        // console) and the `console.roles` in force; no role any more ends the session, and
        // so does turning OpenID Connect off.
        AuthMethod::Oidc => auth
            .sso
            .as_ref()
            .filter(|sso| sso.oidc.configured())
            .and_then(|sso| {
                let user = identity.user_id?;
                let role = sso.tailnet.read(|s| {
                    s.user(user)
                        .and_then(|u| sso.roles.role_for(&u.provider_groups))
                })?;
                Some(ConsoleIdentity {
                    role,
                    ..identity.clone()
                })
            }),
    };
    if let Some(identity) = current {
        Ok(Some(identity))
    } else {
        info!(admin = %identity.name, "console session of a deleted administrator ended");
        session.flush().await.map_err(internal)?;
        Ok(None)
    }
}

/// The session's CSRF token, created if it has none yet.
async fn csrf_token(session: &Session) -> Result<String, Response> {
    if let Some(token) = session.get::<String>(CSRF_KEY).await.map_err(internal)? {
        return Ok(token);
    }
    let token = accounts::random_token();
    session.insert(CSRF_KEY, &token).await.map_err(internal)?;
    Ok(token)
}

use crate::tailnet::secret::tokens_equal;

/// Checks the `Origin` and the CSRF token of a state-changing request. Reads a form body
/// to find `_csrf` when the header is absent, and gives the body back.
async fn check_csrf(
    expected: Option<String>,
    auth: &ConsoleAuth,
    kind: Kind,
    req: Request,
) -> Result<Request, Response> {
    if let Some(origin) = req.headers().get(header::ORIGIN) {
        let same = origin
            .to_str()
            .map(|o| o.eq_ignore_ascii_case(&auth.origin))
            .unwrap_or(false);
        if !same {
            info!(origin = ?origin, path = %req.uri().path(), "console request from a foreign origin refused");
            return Err(forbidden(kind, "The request came from another site"));
        }
    }
    let Some(expected) = expected else {
        return Err(forbidden(kind, "The request lacks a valid CSRF token"));
    };
    if let Some(presented) = req.headers().get(CSRF_HEADER) {
        let ok = presented
            .to_str()
            .map(|p| tokens_equal(p, &expected))
            .unwrap_or(false);
        return if ok {
            Ok(req)
        } else {
            Err(forbidden(kind, "The request lacks a valid CSRF token"))
        };
    }
    let is_form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return Err(forbidden(kind, "The request lacks a valid CSRF token"));
    }
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_FORM_BYTES)
        .await
        .map_err(|_| (StatusCode::PAYLOAD_TOO_LARGE, "form too large").into_response())?;
    let presented = form_urlencoded::parse(&bytes)
        .find(|(k, _)| k == CSRF_FIELD)
        .map(|(_, v)| v.into_owned());
    match presented {
        Some(p) if tokens_equal(&p, &expected) => Ok(Request::from_parts(parts, Body::from(bytes))),
        _ => Err(forbidden(kind, "The request lacks a valid CSRF token")),
    }
}

async fn check(auth: Arc<ConsoleAuth>, kind: Kind, req: Request, next: Next) -> Response {
    if kind == Kind::Asset {
        return next.run(req).await;
    }
    let session = match session_of(&req) {
        Ok(s) => s,
        Err(response) => return response,
    };
    let identity = match identity(&session, &auth).await {
        Ok(i) => i,
        Err(response) => return response,
    };
    let method = req.method().clone();
    match (kind, &identity) {
        (Kind::Api, None) => {
            return console_error(StatusCode::UNAUTHORIZED, ConsoleError::SignedOut);
        }
        (Kind::Page, None) if matches!(method, Method::GET | Method::HEAD) => {
            return to_login(req.uri());
        }
        (Kind::Page, None) => {
            return console_error(StatusCode::UNAUTHORIZED, ConsoleError::SignedOut);
        }
        // The fallback renders the whole app, and its router also matches variants the axum
        // routes do not (`/users/` renders the Users page): signed out, nothing is rendered.
        (Kind::NotFound, None) => return not_found(),
        // Nothing to end: a stale "Sign out" button just leads to the sign-in page.
        (Kind::Logout, None) => return Redirect::to("/login").into_response(),
        _ => {}
    }
    let mut req = req;
    // The token a change must carry: the session's; signed out, the pre-sign-in cookie's.
    let session_token = match session.get::<String>(CSRF_KEY).await {
        Ok(t) => t,
        Err(e) => return internal(e),
    };
    let presign_token = presign::from_request(req.headers()).filter(|_| identity.is_none());
    let expected = session_token.clone().or_else(|| presign_token.clone());
    if is_state_changing(&method) && kind != Kind::NotFound {
        req = match check_csrf(expected.clone(), &auth, kind, req).await {
            Ok(r) => r,
            Err(response) => return response,
        };
    }
    if kind == Kind::SignIn && method == Method::GET {
        if identity.is_some() {
            return Redirect::to(HOME).into_response();
        }
        if req.uri().path() == "/setup" {
            match auth.accounts.any_exists().await {
                Ok(true) => return Redirect::to("/login").into_response(),
                Ok(false) => {}
                Err(e) => return internal(e),
            }
        }
    }
    if kind == Kind::SignIn
        && let Some(label) = auth.sso.as_ref().and_then(ConsoleSso::label)
    {
        req.extensions_mut().insert(app::api::SsoOffer(label));
    }
    // Pages and forms need the token. Signed out it comes from (or goes into) the
    // pre-sign-in cookie: a visitor who only looks at the sign-in page stores nothing.
    let mut new_presign = None;
    if kind != Kind::NotFound || identity.is_some() {
        let token = if identity.is_some() {
            match csrf_token(&session).await {
                Ok(token) => token,
                Err(response) => return response,
            }
        } else if let Some(token) = expected {
            token
        } else {
            let token = accounts::random_token();
            new_presign = Some(token.clone());
            token
        };
        req.extensions_mut().insert(CsrfToken(token));
    }
    if let Some(identity) = identity {
        if let Err(response) = touch(&session).await {
            return response;
        }
        let actor = match identity.method {
            AuthMethod::Local => Actor::new(ActorKind::LocalAdmin, identity.name.clone()),
            AuthMethod::Oidc => Actor::new(ActorKind::Sso, identity.name.clone()),
        };
        req.extensions_mut().insert(identity);
        return audit::acting_as(actor, next.run(req)).await;
    }
    let mut response = next.run(req).await;
    if let Some(token) = new_presign {
        let secure = auth.origin.starts_with("https://");
        response
            .headers_mut()
            .append(header::SET_COOKIE, presign::set_cookie(&token, secure));
    }
    response
}

/// Marks the session used, so its inactivity expiry restarts; written at most once a minute.
async fn touch(session: &Session) -> Result<(), Response> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let seen = session.get::<i64>(SEEN_KEY).await.map_err(internal)?;
    if seen.is_none_or(|s| now - s >= TOUCH_EVERY) {
        session.insert(SEEN_KEY, now).await.map_err(internal)?;
    }
    Ok(())
}

/// The client's address, seen through the trusted proxies.
fn client_addr(req: &Request, trusted: &[ipnet::IpNet]) -> Option<IpAddr> {
    let peer = req.extensions().get::<ConnectInfo<SocketAddr>>()?.0.ip();
    Some(proxies::client_of(peer, req.headers(), trusted))
}

/// The identity of a local account.
fn local_identity(account: &AdminAccount) -> ConsoleIdentity {
    ConsoleIdentity {
        admin_id: account.id,
        name: account.name.clone(),
        method: AuthMethod::Local,
        role: account.role,
        user_id: None,
    }
}

/// Starts a signed-in session: a new session id (no fixation), a new CSRF token.
pub(crate) async fn sign_in(session: &Session, identity: ConsoleIdentity) -> Result<(), Response> {
    session.cycle_id().await.map_err(internal)?;
    session
        .insert(IDENTITY_KEY, identity)
        .await
        .map_err(internal)?;
    session
        .insert(CSRF_KEY, accounts::random_token())
        .await
        .map_err(internal)?;
    session
        .insert(SEEN_KEY, time::OffsetDateTime::now_utc().unix_timestamp())
        .await
        .map_err(internal)?;
    Ok(())
}

pub(crate) fn session_of(req: &Request) -> Result<Session, Response> {
    req.extensions()
        .get::<Session>()
        .cloned()
        .ok_or_else(|| internal("the session layer is missing"))
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    next: String,
}

fn login_again(error: &str, next: &str) -> Response {
    let mut target = format!("/login?error={error}");
    if let Some(next) = safe_next(next) {
        target.push_str("&next=");
        target.extend(form_urlencoded::byte_serialize(next.as_bytes()));
    }
    Redirect::to(&target).into_response()
}

/// `POST /login` (form): checks the password and starts the session.
async fn login(State(auth): State<Arc<ConsoleAuth>>, req: Request) -> Response {
    let addr = client_addr(&req, &auth.trusted_proxies);
    let session = match session_of(&req) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let axum::Form(form) = match axum::Form::<LoginForm>::from_request(req, &()).await {
        Ok(f) => f,
        Err(e) => return e.into_response(),
    };
    let name = form.username.trim();
    if name.is_empty() || form.password.is_empty() {
        return login_again("invalid", &form.next);
    }
    if let Err(wait) = auth.throttle.attempt(name, addr) {
        info!(admin = %name, ?addr, wait_s = wait.as_secs(), "console sign-in throttled");
        return login_again("throttled", &form.next);
    }
    let verified = {
        let _permit = auth.hashing_permit().await;
        auth.accounts.verify(name, &form.password).await
    };
    let account = match verified {
        Ok(Some(account)) => account,
        Ok(None) => {
            info!(admin = %name, ?addr, "console sign-in refused: wrong username or password");
            return login_again("invalid", &form.next);
        }
        Err(e) => return internal(e),
    };
    auth.throttle.succeeded(name, addr);
    if let Err(r) = sign_in(&session, local_identity(&account)).await {
        return r;
    }
    info!(admin = %account.name, role = account.role.as_str(), ?addr, "console sign-in");
    Redirect::to(safe_next(&form.next).unwrap_or(HOME)).into_response()
}

#[derive(Deserialize)]
struct SetupForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    confirm: String,
}

/// `POST /setup` (form): creates the first administrator with the setup link's token and
/// signs them in.
async fn setup(State(auth): State<Arc<ConsoleAuth>>, req: Request) -> Response {
    let session = match session_of(&req) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let axum::Form(form) = match axum::Form::<SetupForm>::from_request(req, &()).await {
        Ok(f) => f,
        Err(e) => return e.into_response(),
    };
    let again = |error: &str| {
        let token: String = form_urlencoded::byte_serialize(form.token.as_bytes()).collect();
        Redirect::to(&format!("/setup?token={token}&error={error}")).into_response()
    };
    if form.password != form.confirm {
        return again("mismatch");
    }
    let created = {
        let _permit = auth.hashing_permit().await;
        auth.accounts
            .complete_setup(&form.token, form.username.trim(), &form.password)
            .await
    };
    let account = match created {
        Ok(account) => account,
        Err(AccountError::InvalidName(_)) => return again("name"),
        Err(AccountError::WeakPassword) => return again("password"),
        Err(AccountError::BadSetupToken) => return again("token"),
        Err(AccountError::SetupDone | AccountError::Exists(_)) => {
            return Redirect::to("/login").into_response();
        }
        Err(e) => return internal(e),
    };
    info!(admin = %account.name, "first console administrator created with the setup link");
    if let Err(r) = sign_in(&session, local_identity(&account)).await {
        return r;
    }
    Redirect::to(HOME).into_response()
}

/// `POST /logout` (form): deletes the session and its cookie.
async fn logout(req: Request) -> Response {
    let session = match session_of(&req) {
        Ok(s) => s,
        Err(r) => return r,
    };
    if let Err(e) = session.flush().await {
        return internal(e);
    }
    Redirect::to("/login").into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_same_site_paths_are_followed_after_sign_in() {
        assert_eq!(safe_next("/machines/3?x=1"), Some("/machines/3?x=1"));
        for bad in [
            "",
            "machines",
            "//evil.example",
            "/\\evil.example",
            "https://evil.example/",
            "/login?next=/x",
            "/a\nb",
        ] {
            assert_eq!(safe_next(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn origin_is_derived_from_the_server_url() {
        assert_eq!(
            origin_of("https://vpn.example.com"),
            "https://vpn.example.com"
        );
        assert_eq!(
            origin_of("https://VPN.example.com:443/"),
            "https://vpn.example.com"
        );
        assert_eq!(origin_of("http://127.0.0.1:8080"), "http://127.0.0.1:8080");
    }

    #[test]
    fn paths_are_classified() {
        assert_eq!(classify("/pkg/oxiscale.js", false), Kind::Asset);
        assert_eq!(classify("/favicon.svg", false), Kind::Asset);
        assert_eq!(classify("/login", false), Kind::SignIn);
        assert_eq!(classify("/console/fn/config", false), Kind::Api);
        assert_eq!(classify("/console/events", true), Kind::Api);
        assert_eq!(classify("/machines", false), Kind::Page);
        assert_eq!(classify("/no-such-page", true), Kind::NotFound);
    }

    #[test]
    fn signed_out_error_body_decodes_as_console_error() {
        let body = serde_json::to_string(&ConsoleError::SignedOut).unwrap();
        assert_eq!(
            serde_json::from_str::<ConsoleError>(&body).unwrap(),
            ConsoleError::SignedOut
        );
    }
}
