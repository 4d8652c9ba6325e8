//! Serving the console from the oxiscale server (server half only).
//!
//! [`console_router`] returns a self-contained `axum::Router` without a fallback, so the
//! server can `merge` it with its own routes (`/key`, `/ts2021`, `/derp`, `/api`, …).
//! [`console_fallback`] is optional: a server that wants unknown paths to get the console's
//! "Page not found" page (status 404) passes it to its own `Router::fallback_service`.

use std::path::Path;
use std::sync::Arc;

use axum::Router;
use http::HeaderValue;
use http::header::CACHE_CONTROL;
use leptos::prelude::*;
use leptos_axum::{LeptosRoutes, file_and_error_handler_with_context, generate_route_list};
use tower_http::services::{ServeDir, ServeFile};
use tower_http::set_header::SetResponseHeader;

use crate::backend::ConsoleBackend;
use crate::{App, OUTPUT_NAME, shell};

/// Files from `public/` that `scripts/build-site.sh` places at the site root. Routed one by
/// one so the console claims no path beyond its own.
const ROOT_FILES: &[&str] = &["favicon.svg"];

/// Leptos options for serving the console from `site_root` (the directory that
/// `scripts/build-site.sh` fills, `target/site` in a checkout).
pub fn console_options(site_root: impl AsRef<str>) -> LeptosOptions {
    LeptosOptions::builder()
        .output_name(OUTPUT_NAME)
        .site_root(site_root.as_ref())
        .site_pkg_dir("pkg")
        .build()
}

/// Pages, server functions and static files of the console. Has no fallback; see the module
/// docs. The backend is available to every render and server function as
/// `use_context::<Arc<dyn ConsoleBackend>>()` (see [`crate::backend::use_backend`]).
pub fn console_router(options: LeptosOptions, backend: Arc<dyn ConsoleBackend>) -> Router {
    let routes = generate_route_list(App);
    let site_root = Path::new(&*options.site_root);
    let pkg_path = format!("/{}", options.site_pkg_dir);

    // The generated file names carry no content hash, so browsers must revalidate them
    // (cheap: ServeDir answers If-Modified-Since with 304).
    let pkg_files = SetResponseHeader::overriding(
        ServeDir::new(site_root.join(&*options.site_pkg_dir))
            .precompressed_br()
            .precompressed_gzip(),
        CACHE_CONTROL,
        HeaderValue::from_static("no-cache"),
    );

    let mut router = Router::new()
        .leptos_routes_with_context(
            &options,
            routes,
            {
                let backend = backend.clone();
                move || provide_context(backend.clone())
            },
            {
                let options = options.clone();
                move || shell(options.clone())
            },
        )
        .nest_service(&pkg_path, pkg_files);
    for file in ROOT_FILES {
        router = router.route_service(&format!("/{file}"), ServeFile::new(site_root.join(file)));
    }
    router.with_state(options)
}

/// A handler for the server's own fallback: renders the console's 404 page (and serves any
/// other file under `site_root`). Use as `server_router.fallback_service(console_fallback(..))`.
pub fn console_fallback(options: LeptosOptions, backend: Arc<dyn ConsoleBackend>) -> Router {
    let handler =
        file_and_error_handler_with_context(move || provide_context(backend.clone()), shell);
    Router::new().fallback(handler).with_state(options)
}
