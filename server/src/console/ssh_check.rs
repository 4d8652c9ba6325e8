//! `/ssh-check/<token>`: where the owner of a device answers a Tailscale SSH check
//! (`crate::control::ssh_check`). A console page behind the console's sign-in and CSRF guard
//! (`auth::protect`): signed out, `GET` leads to the sign-in page and back.
//!
//! Who may approve: the person who owns the source device.
//! - Signed in through the identity provider: the tailnet user of the console identity is
//!   the owner (the same link "own machines" uses).
//! - Signed in with a local console account: only for an owner who has no provider identity
//!   (a user created with `oxiscale users create`), when the account's name is the user's
//!   name. Local accounts are not tailnet users; the name is the only link there is.
//!
//! Anyone else sees a refusal; a refused `POST` also rejects the check, so the SSH user
//! learns at once that someone else answered. Plain server-rendered HTML, no script, every
//! value escaped.

use std::sync::Arc;
use std::time::Instant;

use app::api::{AuthMethod, CSRF_FIELD, ConsoleIdentity, CsrfToken};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Form, Router};
use serde::Deserialize;
use tracing::{info, warn};

use crate::control::ssh_check::{CheckError, CheckView, Outcome, SshChecks};
use crate::identity::pages::{escape, page};
use crate::tailnet::Tailnet;
use crate::tailnet::model::User;

/// Longest page token accepted (tokens are 43 characters).
const MAX_TOKEN_CHARS: usize = 64;

struct Ctx {
    checks: Arc<SshChecks>,
    tailnet: Arc<Tailnet>,
}

pub fn routes(checks: Arc<SshChecks>, tailnet: Arc<Tailnet>) -> Router {
    Router::new()
        .route("/ssh-check/{token}", get(show).post(answer))
        .with_state(Arc::new(Ctx { checks, tailnet }))
}

/// What the page names: the devices and the owner, as the console shows them.
struct Names {
    src: String,
    dst: String,
    owner: Option<User>,
}

fn names(ctx: &Ctx, view: &CheckView) -> Names {
    ctx.tailnet.read(|s| {
        let node = |id| {
            s.node(id)
                .map(|n| n.given_name.clone())
                .unwrap_or_else(|| format!("node {id}"))
        };
        Names {
            src: node(view.key.src),
            dst: node(view.key.dst),
            owner: s.user(view.key.owner).cloned(),
        }
    })
}

/// Whether `who` is the owner `owner` (see the module's rule).
fn is_owner(who: &ConsoleIdentity, owner: &User) -> bool {
    match who.method {
        AuthMethod::Oidc => who.user_id == Some(owner.id),
        AuthMethod::Local => owner.provider.is_none() && who.name == owner.name,
    }
}

fn details(names: &Names, view: &CheckView) -> String {
    let owner = names
        .owner
        .as_ref()
        .map(User::login_name)
        .unwrap_or_else(|| format!("user {}", view.key.owner));
    format!(
        "<dl><dt>From device</dt><dd id=\"src\">{}</dd><dt>Owner</dt><dd id=\"owner\">{}</dd>\
         <dt>To device</dt><dd id=\"dst\">{}</dd><dt>As local user</dt><dd id=\"local-user\">{}</dd></dl>",
        escape(&names.src),
        escape(&owner),
        escape(&names.dst),
        escape(&view.key.local_user)
    )
}

fn unknown() -> Response {
    page(
        StatusCode::NOT_FOUND,
        "SSH check not found",
        "<h1>SSH check not found</h1><p id=\"reason\">This SSH check is unknown, was already \
         forgotten or has expired. Connect again to get a new link.</p>",
    )
}

fn refused(names: &Names, view: &CheckView, rejected: bool) -> Response {
    let what = if rejected {
        "The check was rejected: the SSH connection is refused."
    } else {
        "Nothing was changed."
    };
    let body = format!(
        "<h1>Not yours to approve</h1><p id=\"reason\">Only the person who owns the source \
         device may approve this SSH connection. {what}</p>{}",
        details(names, view)
    );
    page(StatusCode::FORBIDDEN, "Not yours to approve", &body)
}

fn valid_token(token: &str) -> bool {
    token.len() <= MAX_TOKEN_CHARS
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `GET /ssh-check/<token>`: what is asked, and the buttons to answer it.
async fn show(
    State(ctx): State<Arc<Ctx>>,
    Path(token): Path<String>,
    identity: Option<Extension<ConsoleIdentity>>,
    csrf: Option<Extension<CsrfToken>>,
) -> Response {
    let (Some(Extension(who)), Some(Extension(CsrfToken(csrf)))) = (identity, csrf) else {
        return (StatusCode::UNAUTHORIZED, "sign in first").into_response();
    };
    if !valid_token(&token) {
        return unknown();
    }
    let Some(view) = ctx.checks.by_token(&token, Instant::now()) else {
        return unknown();
    };
    let names = names(&ctx, &view);
    if !names.owner.as_ref().is_some_and(|o| is_owner(&who, o)) {
        return refused(&names, &view, false);
    }
    let body = match &view.outcome {
        Outcome::Waiting => format!(
            "<h1>Approve this SSH connection?</h1><p>Signed in as <strong>{person}</strong>. \
             Approve only if you are connecting right now.</p>{details}\
             <form method=\"post\" action=\"/ssh-check/{token}\">\
             <input type=\"hidden\" name=\"{CSRF_FIELD}\" value=\"{csrf}\">\
             <button type=\"submit\" name=\"decision\" value=\"approve\">Approve</button>\
             <button type=\"submit\" name=\"decision\" value=\"deny\">Deny</button></form>",
            person = escape(&who.name),
            details = details(&names, &view),
            token = escape(&token),
            csrf = escape(&csrf),
        ),
        Outcome::Approved { .. } => format!(
            "<h1>Already approved</h1><p id=\"state\">approved</p>{}",
            details(&names, &view)
        ),
        Outcome::Rejected(why) => format!(
            "<h1>Already answered</h1><p id=\"state\">rejected: {}</p>{}",
            escape(why),
            details(&names, &view)
        ),
    };
    page(StatusCode::OK, "SSH check", &body)
}

#[derive(Deserialize)]
struct AnswerForm {
    #[serde(default)]
    decision: String,
}

/// `POST /ssh-check/<token>` (form, CSRF checked by the guard): approves or denies.
async fn answer(
    State(ctx): State<Arc<Ctx>>,
    Path(token): Path<String>,
    identity: Option<Extension<ConsoleIdentity>>,
    Form(form): Form<AnswerForm>,
) -> Response {
    let Some(Extension(who)) = identity else {
        return (StatusCode::UNAUTHORIZED, "sign in first").into_response();
    };
    if !valid_token(&token) {
        return unknown();
    }
    let now = Instant::now();
    let Some(view) = ctx.checks.by_token(&token, now) else {
        return unknown();
    };
    let names = names(&ctx, &view);
    let owner = names.owner.as_ref().filter(|o| is_owner(&who, o));
    let outcome = match (owner, form.decision.as_str()) {
        (None, _) => {
            warn!(person = %who.name, src = view.key.src, dst = view.key.dst, "SSH check answered by someone who does not own the source device: rejected");
            Outcome::Rejected(format!(
                "{} does not own the source device; the SSH check was rejected",
                who.name
            ))
        }
        (Some(_), "approve") => Outcome::Approved {
            by: who.name.clone(),
        },
        (Some(_), "deny") => Outcome::Rejected(format!("{} denied this SSH connection", who.name)),
        (Some(_), _) => {
            return page(
                StatusCode::BAD_REQUEST,
                "SSH check",
                "<h1>Unknown answer</h1><p id=\"reason\">Use the Approve or Deny button.</p>",
            );
        }
    };
    let approved = matches!(outcome, Outcome::Approved { .. });
    match ctx.checks.decide(&token, outcome, now) {
        Ok(key) => {
            info!(person = %who.name, src = key.src, dst = key.dst, local_user = %key.local_user, approved, "SSH check answered");
            let audit = crate::audit::AuditLog::new(ctx.tailnet.store().pool().clone());
            let target = format!("node {} to node {} as {}", key.src, key.dst, key.local_user);
            let after = serde_json::json!({ "approved": approved, "owner": owner.is_some() });
            if let Err(e) = audit.record("ssh.check", &target, None, Some(after)).await {
                warn!(error = %e, "an SSH check answer could not be written to the audit log");
            }
        }
        Err(CheckError::Decided) => {
            return page(
                StatusCode::CONFLICT,
                "SSH check",
                "<h1>Already answered</h1><p id=\"reason\">This SSH check was already answered.</p>",
            );
        }
        Err(_) => return unknown(),
    }
    if owner.is_none() {
        return refused(&names, &view, true);
    }
    let body = if approved {
        format!(
            "<h1>SSH connection approved</h1><p id=\"state\">approved</p>{}\
             <p>You can close this page.</p>",
            details(&names, &view)
        )
    } else {
        format!(
            "<h1>SSH connection denied</h1><p id=\"state\">denied</p>{}",
            details(&names, &view)
        )
    };
    page(StatusCode::OK, "SSH check", &body)
}
