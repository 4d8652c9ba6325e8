//! First start: create the first administrator with the one-time link the server logged.
//! A plain form posted to the server's `/setup` handler, like the login form.

use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_query_map;

use crate::api::{CSRF_FIELD, csrf_token};

fn setup_error(code: &str) -> &'static str {
    match code {
        "name" => "Choose a username of 1 to 64 letters, digits, dots, dashes, underscores or @.",
        "password" => "Choose a password of at least 12 characters.",
        "mismatch" => "The two passwords differ.",
        "exists" => "An administrator already exists. Sign in instead.",
        _ => {
            "This setup link is invalid, already used or expired. Restart the server for a new one, or create an administrator with the CLI."
        }
    }
}

#[component]
pub fn SetupPage() -> impl IntoView {
    let query = use_query_map();
    let error = move || query.with(|q| q.get("error").map(|c| setup_error(&c)));
    let setup_token = move || query.with(|q| q.get("token").unwrap_or_default());
    let token = csrf_token().unwrap_or_default();

    view! {
        <Title text="Set up" />
        <div class="auth-card">
            <h1>"Create the first administrator"</h1>
            <p class="auth-card__lead">
                "This one-time page creates the account you will sign in with. More administrators can be added later with "
                <code>"oxiscale admins create"</code> "."
            </p>
            {move || {
                error()
                    .map(|message| {
                        view! {
                            <p class="notice notice--error" role="alert" id="setup-error">
                                {message}
                            </p>
                        }
                    })
            }}
            <form class="auth-form" method="post" action="/setup">
                <input type="hidden" name=CSRF_FIELD value=token />
                <input type="hidden" name="token" value=setup_token />
                <label for="setup-username">"Username"</label>
                <input
                    id="setup-username"
                    name="username"
                    type="text"
                    autocomplete="username"
                    autocapitalize="none"
                    spellcheck="false"
                    maxlength="64"
                    required
                    autofocus
                />
                <label for="setup-password">"Password"</label>
                <input
                    id="setup-password"
                    name="password"
                    type="password"
                    autocomplete="new-password"
                    minlength="12"
                    aria-describedby="setup-password-hint"
                    required
                />
                <p class="auth-form__hint" id="setup-password-hint">
                    "At least 12 characters."
                </p>
                <label for="setup-confirm">"Repeat the password"</label>
                <input
                    id="setup-confirm"
                    name="confirm"
                    type="password"
                    autocomplete="new-password"
                    minlength="12"
                    required
                />
                <button class="button" type="submit">
                    "Create administrator"
                </button>
            </form>
        </div>
    }
}
