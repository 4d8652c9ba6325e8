//! The frame around every page: skip link, header with the main navigation, content area.

use leptos::prelude::*;
use leptos_router::components::A;

/// Sections of the console in navigation order: (path, label).
const SECTIONS: &[(&str, &str)] = &[
    ("/machines", "Machines"),
    ("/users", "Users"),
    ("/acls", "Access controls"),
    ("/dns", "DNS"),
    ("/keys", "Keys"),
];

#[component]
pub fn Layout(children: Children) -> impl IntoView {
    view! {
        <a class="skip-link" href="#main">
            "Skip to content"
        </a>
        <header class="site-header">
            <div class="site-header__inner">
                <a class="brand" href="/machines">
                    "oxiscale"
                </a>
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
            </div>
        </header>
        <main id="main" class="content" tabindex="-1">
            {children()}
        </main>
    }
}
