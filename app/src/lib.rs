//! The oxiscale admin console: the Leptos application shared by the server (feature `ssr`),
//! which renders it and answers its server functions, and the browser (feature `hydrate`),
//! which hydrates it. Build the two halves separately; enabling both features at once is a
//! mistake that a workspace-wide build would make.

// Leptos view types nest deeply; the default limit (128) is too small for the larger pages.
#![recursion_limit = "256"]

use leptos::prelude::*;
use leptos_meta::{MetaTags, Title, provide_meta_context};
use leptos_router::components::{Redirect, Route, Router, Routes};
use leptos_router::{SsrMode, path};

pub mod api;
mod components;
pub mod dto;
mod pages;

#[cfg(feature = "ssr")]
pub mod backend;
#[cfg(feature = "ssr")]
pub mod ssr;

use components::layout::Layout;
use pages::acls::AclsPage;
use pages::dns::DnsPage;
use pages::identity::IdentityPage;
use pages::keys::KeysPage;
use pages::login::LoginPage;
use pages::logs::LogsPage;
use pages::machine::MachinePage;
use pages::machines::MachinesPage;
use pages::not_found::NotFound;
use pages::setup::SetupPage;
use pages::users::UsersPage;

/// Name of the generated files under `/pkg`: `oxiscale.js`, `oxiscale_bg.wasm`, `oxiscale.css`.
/// Must equal `LeptosOptions::output_name`; `scripts/build-site.sh` writes these names.
pub const OUTPUT_NAME: &str = "oxiscale";

/// The HTML document around the app, rendered only on the server.
pub fn shell(options: LeptosOptions) -> impl IntoView {
    let stylesheet = format!("/{}/{}.css", options.site_pkg_dir, options.output_name);
    // Per request: the CSRF token the browser half sends with every server function call,
    // and who is signed in. The app reads both back from here when it hydrates.
    let api::SessionMeta { csrf, user, sso } = api::session_meta();
    #[cfg(feature = "ssr")]
    ssr::send_script_policy();
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8" />
                <meta name="viewport" content="width=device-width, initial-scale=1" />
                <meta name="color-scheme" content="light dark" />
                <link rel="stylesheet" href=stylesheet />
                <link rel="icon" href="/favicon.svg" type="image/svg+xml" />
                {csrf.map(|token| view! { <meta name=api::CSRF_META content=token /> })}
                {user.map(|name| view! { <meta name=api::USER_META content=name /> })}
                {sso.map(|label| view! { <meta name=api::SSO_META content=label /> })}
                <AutoReload options=options.clone() />
                <HydrationScripts options />
                <MetaTags />
            </head>
            <body>
                <App />
            </body>
        </html>
    }
}

/// The console: layout, navigation and every page.
#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();

    view! {
        <Title formatter=|page: String| format!("{page} · oxiscale") />
        <Router>
            <Layout>
                <Routes fallback=NotFound>
                    // A browser (Accept: text/html) gets a 302; the client router redirects in place.
                    <Route path=path!("/") view=|| view! { <Redirect path="/machines" /> } />
                    // Async: the page arrives complete, so it reads fine before (or without) WASM.
                    <Route path=path!("/machines") view=MachinesPage ssr=SsrMode::Async />
                    <Route path=path!("/machines/:id") view=MachinePage />
                    <Route path=path!("/users") view=UsersPage />
                    <Route path=path!("/keys") view=KeysPage />
                    <Route path=path!("/acls") view=AclsPage />
                    <Route path=path!("/dns") view=DnsPage />
                    <Route path=path!("/settings/identity") view=IdentityPage />
                    <Route path=path!("/logs") view=LogsPage />
                    <Route path=path!("/login") view=LoginPage />
                    <Route path=path!("/setup") view=SetupPage />
                </Routes>
            </Layout>
        </Router>
    }
}
