//! Serving the console from the oxiscale server (server half only).
//!
//! [`console_router`] returns a self-contained `axum::Router` without a fallback, so the
//! server can `merge` it with its own routes (`/key`, `/ts2021`, `/derp`, `/api`, …).
//! [`console_fallback`] is optional: a server that wants unknown paths to get the console's
//! "Page not found" page (status 404) passes it to its own `Router::fallback_service`.

use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::header::CACHE_CONTROL;
use http::{HeaderValue, StatusCode};
use leptos::prelude::*;
use leptos::server_fn::error::ServerFnErrorErr;
use leptos_axum::{LeptosRoutes, file_and_error_handler_with_context, generate_route_list};
use tower_http::services::{ServeDir, ServeFile};
use tower_http::set_header::SetResponseHeader;

use crate::api::SERVER_FN_PREFIX;
use crate::backend::ConsoleBackend;
use crate::dto::ConsoleError;
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
    router
        .layer(axum::middleware::from_fn(error_status))
        .with_state(options)
}

/// Puts the console's Content-Security-Policy on the page being rendered, with this
/// response's nonce: a script runs only if Leptos wrote it (its hydration and streaming
/// scripts carry the nonce) or a nonced script loaded it (the WASM bundle), so markup an
/// attacker slips into a page cannot run. Called from [`shell`]; the server's own header
/// (without `script-src`) covers everything else it answers.
pub fn send_script_policy() {
    let (Some(nonce), Some(response)) = (
        leptos::nonce::use_nonce(),
        use_context::<leptos_axum::ResponseOptions>(),
    ) else {
        return;
    };
    let policy = format!(
        "default-src 'self'; script-src 'nonce-{nonce}' 'strict-dynamic' 'wasm-unsafe-eval'; \
         style-src 'self' 'unsafe-inline'; img-src 'self' data: https:; connect-src 'self'; \
         frame-ancestors 'none'; object-src 'none'; base-uri 'self'; form-action 'self'"
    );
    if let Ok(value) = HeaderValue::from_str(&policy) {
        response.insert_header(http::header::CONTENT_SECURITY_POLICY, value);
    }
}

/// Largest server function error body that is read to find its status; errors are a short
/// JSON value (a `ConsoleError`).
const MAX_ERROR_BODY: usize = 64 * 1024;

/// Gives a server function's error the HTTP status that says whose fault it is.
/// `server_fn` answers every error with 500. A refused input, a vanished machine or an
/// expired session is not a server failure, and must not be logged as one (the server
/// logs every 5xx) or look like one to a proxy or a script.
async fn error_status(request: Request, next: Next) -> Response {
    let is_server_fn = request.uri().path().starts_with(SERVER_FN_PREFIX);
    let response = next.run(request).await;
    if !is_server_fn || response.status() != StatusCode::INTERNAL_SERVER_ERROR {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_ERROR_BODY).await else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    if let Ok(error) = serde_json::from_slice::<ConsoleError>(&bytes) {
        parts.status = status_of(&error);
    }
    Response::from_parts(parts, Body::from(bytes))
}

fn status_of(error: &ConsoleError) -> StatusCode {
    match error {
        ConsoleError::Refused(_) => StatusCode::BAD_REQUEST,
        ConsoleError::NotAllowed(_) => StatusCode::FORBIDDEN,
        ConsoleError::NotFound(_) => StatusCode::NOT_FOUND,
        ConsoleError::SignedOut => StatusCode::UNAUTHORIZED,
        // On the server, these say the request's arguments could not be read: the caller's
        // fault, like a refused input.
        ConsoleError::Transport(
            ServerFnErrorErr::Args(_)
            | ServerFnErrorErr::MissingArg(_)
            | ServerFnErrorErr::Deserialization(_),
        ) => StatusCode::BAD_REQUEST,
        ConsoleError::Transport(ServerFnErrorErr::UnsupportedRequestMethod(_)) => {
            StatusCode::METHOD_NOT_ALLOWED
        }
        ConsoleError::BackendMissing | ConsoleError::Internal(_) | ConsoleError::Transport(_) => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }
}

/// A handler for the server's own fallback: renders the console's 404 page (and serves any
/// other file under `site_root`). Use as `server_router.fallback_service(console_fallback(..))`.
pub fn console_fallback(options: LeptosOptions, backend: Arc<dyn ConsoleBackend>) -> Router {
    let handler =
        file_and_error_handler_with_context(move || provide_context(backend.clone()), shell);
    Router::new().fallback(handler).with_state(options)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::BackendFuture;
    use crate::dto::dns::DnsSettings;
    use crate::dto::identity::{IdentitySettings, IdentitySource, IdentityUpdate, ProviderStatus};
    use crate::dto::policy::{PolicyDoc, Preview, SaveOutcome, Subject};
    use crate::dto::tailnet::{
        ApiKeyRow, CreatedSecret, MachineDetail, MachineSummary, NewPreAuthKey, PreAuthKeyRow,
        UserRow,
    };
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    struct FixedBackend;

    impl ConsoleBackend for FixedBackend {
        fn server_url(&self) -> String {
            "https://vpn.example.com".into()
        }
    }

    /// An empty tailnet that refuses every change.
    impl crate::backend::TailnetBackend for FixedBackend {
        fn machines(&self) -> Result<Vec<MachineSummary>, ConsoleError> {
            Ok(vec![])
        }
        fn machine(&self, id: u64) -> Result<MachineDetail, ConsoleError> {
            Err(ConsoleError::NotFound(format!("node {id}")))
        }
        fn rename_machine(&self, _: u64, _: String) -> BackendFuture<'_, MachineSummary> {
            refused()
        }
        fn set_machine_tags(&self, _: u64, _: Vec<String>) -> BackendFuture<'_, MachineSummary> {
            refused()
        }
        fn approve_routes(&self, _: u64, _: Vec<String>) -> BackendFuture<'_, MachineSummary> {
            refused()
        }
        fn expire_machine(&self, _: u64) -> BackendFuture<'_, MachineSummary> {
            refused()
        }
        fn disable_machine_expiry(&self, _: u64) -> BackendFuture<'_, MachineSummary> {
            refused()
        }
        fn delete_machine(&self, _: u64) -> BackendFuture<'_, ()> {
            refused()
        }
        fn approve_machine(&self, _: u64) -> BackendFuture<'_, MachineSummary> {
            refused()
        }
        fn approval_required(&self) -> bool {
            false
        }
        fn set_approval_required(&self, _: bool) -> BackendFuture<'_, bool> {
            refused()
        }
        fn users(&self) -> Result<Vec<UserRow>, ConsoleError> {
            Ok(vec![])
        }
        fn create_user(&self, _: String, _: String, _: String) -> BackendFuture<'_, UserRow> {
            refused()
        }
        fn rename_user(&self, _: u64, _: String) -> BackendFuture<'_, UserRow> {
            refused()
        }
        fn delete_user(&self, _: u64) -> BackendFuture<'_, ()> {
            refused()
        }
        fn preauth_keys(&self) -> Result<Vec<PreAuthKeyRow>, ConsoleError> {
            Ok(vec![])
        }
        fn create_preauth_key(&self, _: NewPreAuthKey) -> BackendFuture<'_, CreatedSecret> {
            refused()
        }
        fn expire_preauth_key(&self, _: u64) -> BackendFuture<'_, ()> {
            refused()
        }
        fn api_keys(&self) -> Result<Vec<ApiKeyRow>, ConsoleError> {
            Ok(vec![])
        }
        fn create_api_key(&self, _: String) -> BackendFuture<'_, CreatedSecret> {
            refused()
        }
        fn expire_api_key(&self, _: u64) -> BackendFuture<'_, ()> {
            refused()
        }
    }

    fn refused<T: Send + 'static>() -> BackendFuture<'static, T> {
        Box::pin(async { Err(ConsoleError::Refused("read-only test backend".into())) })
    }

    impl crate::backend::PolicyBackend for FixedBackend {
        fn policy(&self) -> BackendFuture<'_, PolicyDoc> {
            Box::pin(async { Ok(PolicyDoc::default()) })
        }

        fn save_policy(&self, text: String) -> BackendFuture<'_, SaveOutcome> {
            Box::pin(async move {
                Ok(SaveOutcome::Saved(PolicyDoc {
                    text,
                    editable: true,
                    ..Default::default()
                }))
            })
        }

        fn preview_subjects(&self) -> BackendFuture<'_, Vec<Subject>> {
            Box::pin(async { Ok(Vec::new()) })
        }

        fn preview_policy(&self, _text: String, _subject: String) -> BackendFuture<'_, Preview> {
            Box::pin(async { Ok(Preview::default()) })
        }
    }

    impl crate::backend::DnsBackend for FixedBackend {
        fn dns_settings(&self) -> BackendFuture<'_, DnsSettings> {
            Box::pin(async { Ok(DnsSettings::default()) })
        }

        fn set_dns_settings(&self, settings: DnsSettings) -> BackendFuture<'_, DnsSettings> {
            Box::pin(async move { Ok(settings) })
        }
    }

    /// OpenID Connect off; every change refused.
    impl crate::backend::IdentityBackend for FixedBackend {
        fn identity_settings(&self) -> BackendFuture<'_, IdentitySettings> {
            Box::pin(async {
                Ok(IdentitySettings {
                    source: IdentitySource::ConfigFile,
                    status: ProviderStatus::Off,
                    issuer: String::new(),
                    client_id: String::new(),
                    client_secret_set: false,
                    scopes: vec!["openid".into()],
                    allowed_domains: vec![],
                    allowed_users: vec![],
                    allowed_groups: vec![],
                    email_verified_required: true,
                    use_expiry_from_token: false,
                    expiry: String::new(),
                    redirect_uri: "https://vpn.example.com/oidc/callback".into(),
                })
            })
        }

        fn set_identity_settings(&self, _: IdentityUpdate) -> BackendFuture<'_, IdentitySettings> {
            refused()
        }

        fn reset_identity_settings(&self) -> BackendFuture<'_, IdentitySettings> {
            refused()
        }
    }

    impl crate::backend::AuditBackend for FixedBackend {
        fn audit_log(
            &self,
            _query: crate::dto::audit::AuditQuery,
            _limit: u32,
        ) -> BackendFuture<'_, Vec<crate::dto::audit::AuditRow>> {
            Box::pin(async { Ok(Vec::new()) })
        }
    }

    /// A site root with one generated file, unique per test.
    fn site_root(name: &str) -> String {
        let dir =
            std::env::temp_dir().join(format!("oxiscale-console-{name}-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("pkg")).unwrap();
        std::fs::write(dir.join("pkg").join("oxiscale.css"), "body{}").unwrap();
        std::fs::write(dir.join("favicon.svg"), "<svg/>").unwrap();
        dir.to_string_lossy().into_owned()
    }

    /// The console as the server mounts it, behind a stand-in for the auth middleware that
    /// marks every request as the signed-in administrator's.
    fn router(name: &str) -> Router {
        signed_out_router(name).layer(axum::middleware::map_request(
            |mut req: Request<Body>| async move {
                req.extensions_mut().insert(crate::api::ConsoleIdentity {
                    admin_id: 1,
                    name: "admin".into(),
                    method: crate::api::AuthMethod::Local,
                    role: crate::api::Role::Owner,
                    user_id: None,
                });
                req
            },
        ))
    }

    /// The console with no identity on its requests: what a route wired without the auth
    /// middleware would serve.
    fn signed_out_router(name: &str) -> Router {
        console_router(console_options(site_root(name)), Arc::new(FixedBackend))
    }

    /// One test of this module at a time (take it first thing). Each `#[tokio::test]` has its
    /// own runtime; with routers built and pages rendered in several at once, the machines
    /// page render hung in 17 of 20 runs of the module (leptos keeps process-wide state
    /// that is shared between the runtimes; the server has one runtime).
    static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

    async fn send(router: Router, request: Request<Body>) -> (StatusCode, http::HeaderMap, String) {
        let response = router.oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, headers, String::from_utf8(body.to_vec()).unwrap())
    }

    /// The `config` server function as the browser calls it.
    fn config_call() -> Request<Body> {
        Request::post(format!("{SERVER_FN_PREFIX}/config"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "application/json")
            .body(Body::empty())
            .unwrap()
    }

    fn get(path: &str) -> Request<Body> {
        Request::get(path)
            .header("accept", "text/html")
            .body(Body::empty())
            .unwrap()
    }

    #[tokio::test]
    async fn machines_page_is_rendered_with_the_backend_url_and_bundle_names() {
        let _turn = ONE_AT_A_TIME.lock().await;
        let (status, _, html) = send(router("page"), get("/machines")).await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            html.contains(
                "tailscale up --login-server=https://vpn.example.com --authkey=&lt;key&gt;"
            )
        );
        // build-site.sh writes these names; `_bg` holds because LEPTOS_OUTPUT_NAME is unset
        // when this crate is compiled.
        assert!(html.contains("/pkg/oxiscale.js"), "{html}");
        assert!(html.contains("/pkg/oxiscale_bg.wasm"), "{html}");
        assert!(html.contains(r#"href="/pkg/oxiscale.css""#), "{html}");
    }

    #[tokio::test]
    async fn server_function_answers_under_the_console_prefix() {
        let _turn = ONE_AT_A_TIME.lock().await;
        let (status, _, body) = send(router("fn"), config_call()).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body, r#"{"server_url":"https://vpn.example.com"}"#);
    }

    #[tokio::test]
    async fn without_a_signed_in_identity_nothing_reaches_the_backend() {
        let _turn = ONE_AT_A_TIME.lock().await;
        let (status, _, body) = send(signed_out_router("fn-out"), config_call()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert_eq!(body, "\"SignedOut\"");
        let (_, _, html) = send(signed_out_router("page-out"), get("/machines")).await;
        assert!(!html.contains("vpn.example.com"), "{html}");
        assert!(html.contains("not signed in"), "{html}");
    }

    fn json_call(endpoint: &str, body: &str) -> Request<Body> {
        Request::post(format!("{SERVER_FN_PREFIX}/{endpoint}"))
            .header("content-type", "application/json")
            .header("accept", "application/json")
            .body(Body::from(body.to_owned()))
            .unwrap()
    }

    #[tokio::test]
    async fn a_refusal_or_a_missing_machine_is_a_client_error_with_its_reason() {
        let _turn = ONE_AT_A_TIME.lock().await;
        let (status, _, body) = send(
            router("fn-refused"),
            json_call("api-key/expire", r#"{"id":5}"#),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body, r#"{"Refused":"read-only test backend"}"#);
        let (status, _, body) =
            send(router("fn-missing"), json_call("machine", r#"{"id":7}"#)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        assert_eq!(body, r#"{"NotFound":"node 7"}"#);
    }

    #[tokio::test]
    async fn arguments_that_cannot_be_read_are_a_client_error() {
        let _turn = ONE_AT_A_TIME.lock().await;
        for (name, body) in [
            ("fn-garbled", "{not json"),
            ("fn-wrong-type", r#"{"id":"seven"}"#),
            ("fn-no-arg", "{}"),
        ] {
            let (status, _, answer) = send(router(name), json_call("machine", body)).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
            let error: ConsoleError = serde_json::from_str(&answer).unwrap();
            assert!(matches!(error, ConsoleError::Transport(_)), "{answer}");
        }
    }

    #[test]
    fn only_the_servers_own_failures_keep_status_500() {
        assert_eq!(
            status_of(&ConsoleError::Internal("disk".into())),
            StatusCode::INTERNAL_SERVER_ERROR
        );
        assert_eq!(
            status_of(&ConsoleError::BackendMissing),
            StatusCode::INTERNAL_SERVER_ERROR
        );
        assert_eq!(
            status_of(&ConsoleError::Refused("bad name".into())),
            StatusCode::BAD_REQUEST
        );
    }

    #[tokio::test]
    async fn static_files_are_served_with_revalidation() {
        let _turn = ONE_AT_A_TIME.lock().await;
        let (status, headers, body) = send(router("pkg"), get("/pkg/oxiscale.css")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "body{}");
        assert_eq!(headers[CACHE_CONTROL], "no-cache");
        let (status, _, body) = send(router("root"), get("/favicon.svg")).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "<svg/>"));
    }

    #[tokio::test]
    async fn claims_no_other_paths_and_merges_with_a_router_that_has_a_fallback() {
        let _turn = ONE_AT_A_TIME.lock().await;
        // Without a fallback of its own, unknown paths fall through to the embedding server.
        let server = Router::new()
            .route("/key", axum::routing::get(|| async { "server key" }))
            .fallback(|| async { (StatusCode::IM_A_TEAPOT, "server fallback") })
            .merge(router("merge"));
        let (status, _, body) = send(server.clone(), get("/key")).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "server key"));
        let (status, _, body) = send(server.clone(), get("/ts2021")).await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::IM_A_TEAPOT, "server fallback")
        );
        let (status, _, _) = send(server, get("/machines")).await;
        assert_eq!(status, StatusCode::OK);
    }

    #[tokio::test]
    async fn console_fallback_renders_the_not_found_page() {
        let _turn = ONE_AT_A_TIME.lock().await;
        let options = console_options(site_root("fallback"));
        let backend: Arc<dyn ConsoleBackend> = Arc::new(FixedBackend);
        let server = console_router(options.clone(), backend.clone())
            .fallback_service(console_fallback(options, backend));
        let (status, _, html) = send(server, get("/no-such-page")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(html.contains("Page not found"), "{html}");
    }
}
