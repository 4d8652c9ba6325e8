//! The frame around every page: skip link, header with the main navigation and the signed-in
//! administrator (none on the sign-in pages), content area.

use leptos::prelude::*;
use leptos_router::components::A;

use crate::api::{CSRF_FIELD, csrf_token, signed_in_name};

/// Sections of the console in navigation order: (path, label).
const SECTIONS: &[(&str, &str)] = &[
    ("/machines", "Machines"),
    ("/users", "Users"),
    ("/acls", "Access controls"),
    ("/dns", "DNS"),
    ("/keys", "Keys"),
    ("/settings/identity", "Identity"),
    ("/logs", "Logs"),
];

#[component]
pub fn Layout(children: Children) -> impl IntoView {
    // Read once: the page reloads on sign-in and sign-out, never changes them in place.
    let signed_in = signed_in_name();
    let token = csrf_token().unwrap_or_default();
    view! {
        <a class="skip-link" href="#main">
            "Skip to content"
        </a>
        <header class="site-header">
            <div class="site-header__inner">
                <a class="brand" href="/machines">
                    "oxiscale"
                </a>
                {signed_in
                    .map(|name| {
                        view! {
                            <nav class="main-nav" aria-label="Main">
                                <ul>
                                    {SECTIONS
                                        .iter()
                                        .map(|(href, label)| {
                                            view! {
                                                <li>
                                                    <A href=*href>{*label}</A>
                                                </li>
                                            }
                                        })
                                        .collect_view()}
                                </ul>
                            </nav>
                            // A server function that fails during sign-out (the session is gone)
                            // must not redirect the page elsewhere: it is leaving for /login.
                            <form
                                class="session-menu"
                                method="post"
                                action="/logout"
                                on:submit=|_| crate::api::leaving()
                            >
                                <span class="session-menu__name">
                                    <span class="visually-hidden">"Signed in as "</span>
                                    {name}
                                </span>
                                <input type="hidden" name=CSRF_FIELD value=token />
                                <button class="button button--secondary" type="submit">
                                    "Sign out"
                                </button>
                            </form>
                        }
                    })}
            </div>
        </header>
        <main id="main" class="content" tabindex="-1">
            {children()}
        </main>
    }
}
