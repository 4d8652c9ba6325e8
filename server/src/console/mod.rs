//! The admin console, served by the same process: the Leptos app of `app/`, rendered here
//! and hydrated in the browser from the files `scripts/build-site.sh` puts in the site root.
//!
//! [`Backend`] is the server's side of `app::backend::ConsoleBackend`; each area of the
//! console implements its sub-trait in its own module over the same [`Admin`] service the CLI
//! and REST API use.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use app::backend::ConsoleBackend;
use app::dto::ConsoleError;
use axum::Router;
use tracing::{info, warn};

use crate::admin::{Admin, AdminError};
use crate::config::Config;
use crate::tailnet::TailnetError;

mod audit;
pub mod auth;
mod dns;
mod events;
mod headers;
mod identity;
mod policy;
mod ssh_check;
mod tailnet;

/// What the console may ask of the server.
struct Backend {
    server_url: String,
    admin: Admin,
}

impl ConsoleBackend for Backend {
    fn server_url(&self) -> String {
        self.server_url.clone()
    }
}

/// What the admin service's errors mean to the console: refusals are shown as they are;
/// storage failures are logged here and reported without internals.
fn console_error(e: AdminError) -> ConsoleError {
    match e {
        AdminError::Tailnet(TailnetError::NotFound { what, id }) => {
            ConsoleError::NotFound(format!("{what} {id}"))
        }
        AdminError::Tailnet(TailnetError::Storage(detail)) => {
            tracing::error!(error = %detail, "console: a change could not be stored");
            ConsoleError::Internal("the change could not be stored".into())
        }
        AdminError::Tailnet(TailnetError::Internal(detail)) => {
            tracing::error!(error = %detail, "console: a change failed inside the server");
            ConsoleError::Internal("the change failed inside the server".into())
        }
        other => ConsoleError::Refused(other.to_string()),
    }
}

/// Where the built browser half is: `console.site_root`, else `site/` next to the binary
/// (the image), else `target/site` of a checkout (`target/<profile>/oxiscale` → `target/site`).
pub fn site_root(config: &Config) -> PathBuf {
    if let Some(root) = &config.console.site_root {
        return root.clone();
    }
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_owned));
    let candidates = exe_dir
        .iter()
        .flat_map(|d| [d.join("site"), d.join("../site")])
        .chain([PathBuf::from("target/site")]);
    for candidate in candidates {
        if candidate.join("pkg").is_dir() {
            return candidate;
        }
    }
    PathBuf::from("target/site")
}

/// The console's routes and its fallback (the console's own 404 page), to merge into the
/// main router.
pub fn routes(
    config: &Config,
    admin: Admin,
    oidc: crate::identity::OidcHandle,
    ssh_checks: Arc<crate::control::ssh_check::SshChecks>,
) -> (Router, Router) {
    let root = site_root(config);
    if root
        .join("pkg")
        .join(format!("{}.js", app::OUTPUT_NAME))
        .is_file()
    {
        info!(site_root = %root.display(), "console assets found");
    } else {
        warn!(
            site_root = %root.display(),
            "console assets not found: pages render but do not hydrate; run scripts/build-site.sh or set console.site_root"
        );
    }
    let options = app::ssr::console_options(root.to_string_lossy());
    // Live pages: the writer bumps the feed, /console/events tells the browsers.
    let feed = Arc::new(crate::tailnet::feed::ChangeFeed::default());
    admin.tailnet().subscribe(feed.clone());
    let events = Router::new()
        .route(
            app::dto::tailnet::EVENTS_PATH,
            axum::routing::get(events::handler),
        )
        .with_state(feed);
    // Tailscale SSH checks are answered on a console page, behind the same sign-in.
    let events = events.merge(ssh_check::routes(ssh_checks, admin.tailnet().clone()));
    let pool = admin.tailnet().store().pool().clone();
    // Always there: OpenID Connect may be turned on in the console at any time.
    let sso = Some(auth::ConsoleSso {
        oidc,
        tailnet: admin.tailnet().clone(),
        roles: config.console.roles.clone(),
        secure: config.server_url.starts_with("https://"),
    });
    let backend: Arc<dyn ConsoleBackend> = Arc::new(Backend {
        server_url: config.server_url.clone(),
        admin,
    });
    let console = app::ssr::console_router(options.clone(), backend.clone()).merge(events);
    let fallback = app::ssr::console_fallback(options, backend);
    // Last, so that every console route added above is behind sign-in and CSRF checks.
    let trusted = config
        .trusted_proxy_nets()
        .expect("validated with the config");
    let (console, fallback) =
        auth::protect(console, fallback, &config.server_url, pool, sso, trusted);
    let headers = axum::middleware::from_fn(headers::security_headers);
    (console.layer(headers.clone()), fallback.layer(headers))
}
