//! Sign in: a plain HTML form posted to the server's `/login` handler, so it works before
//! (and without) the WASM bundle. Errors come back as `?error=…` on a redirect.

use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_query_map;

use crate::api::{CSRF_FIELD, csrf_token, sso_label};

/// The message for an `error` code the server's login handler redirects with.
fn login_error(code: &str) -> &'static str {
    match code {
        "throttled" => "Too many failed attempts. Wait a minute, then try again.",
        "expired" => "Your session has expired. Sign in again.",
        "setup" => {
            "This setup link is invalid, already used or expired. Restart the server for a new one, or create an administrator with the CLI."
        }
        // One message for unknown name and wrong password: nothing tells which was wrong.
        _ => "Wrong username or password.",
    }
}

#[component]
pub fn LoginPage() -> impl IntoView {
    let query = use_query_map();
    let error = move || query.with(|q| q.get("error").map(|c| login_error(&c)));
    let next = move || query.with(|q| q.get("next").unwrap_or_default());
    let token = csrf_token().unwrap_or_default();
    let sso = sso_label();
    let sso_href = move || {
        let next = next();
        if next.is_empty() {
            "/login/oidc".to_owned()
        } else {
            let next: String = js_safe_encode(&next);
            format!("/login/oidc?next={next}")
        }
    };

    view! {
        <Title text="Sign in" />
        <div class="auth-card">
            <h1>"Sign in"</h1>
            <p class="auth-card__lead">"Sign in to administer this oxiscale server."</p>
            {move || {
                error()
                    .map(|message| {
                        view! {
                            <p class="notice notice--error" role="alert" id="login-error">
                                {message}
                            </p>
                        }
                    })
            }}
            {sso
                .map(|label| {
                    view! {
                        // External: the server's route, not a page of the app's router,
                        // which would otherwise take the click and show "not found".
                        <a class="button auth-card__sso" href=sso_href id="login-sso" rel="external">
                            {label}
                        </a>
                        <p class="auth-card__or">"or with a local administrator account"</p>
                    }
                })}
            <form class="auth-form" method="post" action="/login">
                <input type="hidden" name=CSRF_FIELD value=token />
                <input type="hidden" name="next" value=next />
                <label for="login-username">"Username"</label>
                <input
                    id="login-username"
                    name="username"
                    type="text"
                    autocomplete="username"
                    autocapitalize="none"
                    spellcheck="false"
                    required
                    autofocus
                />
                <label for="login-password">"Password"</label>
                <input
                    id="login-password"
                    name="password"
                    type="password"
                    autocomplete="current-password"
                    required
                />
                <button class="button" type="submit">
                    "Sign in"
                </button>
            </form>
        </div>
    }
}

/// Percent-encodes a `next` path for a query string (what `encodeURIComponent` leaves alone
/// stays as is), identically on the server and in the browser so hydration matches.
fn js_safe_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
