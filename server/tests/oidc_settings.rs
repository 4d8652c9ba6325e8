//! OpenID Connect settings changed at run time: saved settings win over the config file,
//! take effect at the next sign-in (device and console) and survive a restart; a wrong or
//! unreachable issuer is refused by name and changes nothing; the client secret never comes
//! back and is masked in the audit log; a provider that is down at start is retried until it
//! answers.
//!
//! The provider here is a minimal stand-in that serves discovery (metadata and an empty key
//! set), which is all a save and the redirect to the provider need; signing in through a real
//! provider after a change is end2end/console/tests/oidc-settings.spec.ts.

mod common;

use std::future::IntoFuture;
use std::time::Duration;

use app::api::Role;
use common::{TestNode, TestServer, config_for};
use oxiscale::admin::identity::{OidcSource, OidcStatus, OidcUpdate};
use oxiscale::audit::{Actor, ActorKind, AuditFilter, acting_as};
use oxiscale::console::auth::{Accounts, SESSION_COOKIE};
use reqwest::{StatusCode, header};
use serde_json::json;

/// A stand-in provider on a loopback port: discovery only.
struct FakeProvider {
    issuer: String,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl FakeProvider {
    async fn start() -> FakeProvider {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(listener)
    }

    /// On a port chosen before (a provider that comes up late).
    async fn start_on(port: u16) -> FakeProvider {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        Self::serve(listener)
    }

    fn serve(listener: tokio::net::TcpListener) -> FakeProvider {
        use axum::routing::get;
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        let metadata = json!({
            "issuer": issuer,
            "authorization_endpoint": format!("{issuer}/auth"),
            "token_endpoint": format!("{issuer}/token"),
            "jwks_uri": format!("{issuer}/jwks"),
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
        });
        let app = axum::Router::new()
            .route(
                "/.well-known/openid-configuration",
                get(move || {
                    let metadata = metadata.clone();
                    async move { axum::Json(metadata) }
                }),
            )
            .route("/jwks", get(|| async { axum::Json(json!({ "keys": [] })) }));
        let task = tokio::spawn(axum::serve(listener, app).into_future());
        FakeProvider { issuer, task }
    }

    fn port(&self) -> u16 {
        self.issuer.rsplit(':').next().unwrap().parse().unwrap()
    }
}

impl Drop for FakeProvider {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A loopback port where nothing listens.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn update(issuer: &str, client_id: &str, secret: &str) -> OidcUpdate {
    OidcUpdate {
        issuer: issuer.into(),
        client_id: client_id.into(),
        client_secret: secret.into(),
        scope: vec!["openid".into(), "email".into(), "groups".into()],
        allowed_domains: vec!["example.com".into()],
        email_verified_required: true,
        expiry: "30d".into(),
        ..OidcUpdate::default()
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Where the console's "Sign in with …" sends a browser now (`None`: back to /login, no
/// provider in force).
async fn console_sign_in_target(server: &TestServer) -> Option<String> {
    let resp = http()
        .get(format!("{}/login/oidc", server.url))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_redirection(), "{}", resp.status());
    let to = resp.headers()[header::LOCATION]
        .to_str()
        .unwrap()
        .to_owned();
    (to != "/login").then_some(to)
}

/// Where a machine's login link sends a browser now (`None`: it is the approval page).
async fn device_sign_in_target(server: &TestServer) -> Option<String> {
    let mut node = TestNode::connect(&server.url, "interactive").await;
    let first = node.register(None).await;
    let url = first["AuthURL"].as_str().unwrap().to_owned();
    let resp = http().get(&url).send().await.unwrap();
    if resp.status().is_redirection() {
        return Some(
            resp.headers()[header::LOCATION]
                .to_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.text().await.unwrap().contains("Approve this machine"));
    None
}

async fn oidc_entries(server: &TestServer) -> Vec<oxiscale::audit::AuditEntry> {
    server
        .running()
        .admin
        .audit()
        .list(&AuditFilter {
            action: Some("oidc.".into()),
            ..Default::default()
        })
        .await
        .unwrap()
}

async fn stored_row(server: &TestServer) -> Option<String> {
    server
        .running()
        .tailnet
        .store()
        .setting("oidc")
        .await
        .unwrap()
}

fn alice() -> Actor {
    Actor::new(ActorKind::LocalAdmin, "alice")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saved_settings_win_over_the_file_take_effect_at_once_and_survive_a_restart() {
    let a = FakeProvider::start().await;
    let b = FakeProvider::start().await;
    let file_issuer = a.issuer.clone();
    let mut server = TestServer::start_with(|c| {
        c.oidc.issuer = Some(file_issuer);
        c.oidc.client_id = Some("from-file".into());
        c.oidc.client_secret = Some("file-secret-0001".into());
    })
    .await;
    let admin = server.running().admin.clone();

    let view = admin.get_oidc_settings().await.unwrap();
    assert_eq!(
        (view.source, view.status, view.issuer.as_str()),
        (OidcSource::ConfigFile, OidcStatus::Ready, a.issuer.as_str())
    );
    assert!(view.client_secret_set);
    assert_eq!(view.redirect_uri, format!("{}/oidc/callback", server.url));
    let to = console_sign_in_target(&server).await.unwrap();
    assert!(to.starts_with(&format!("{}/auth?", a.issuer)), "{to}");

    // Saved: in force for the very next sign-in, console and device alike.
    let secret = "console-secret-7f3a9c";
    let saved = acting_as(
        alice(),
        admin.set_oidc_settings(update(&b.issuer, "from-console", secret)),
    )
    .await
    .unwrap();
    assert_eq!(
        (saved.source, saved.status, saved.issuer.as_str()),
        (OidcSource::Saved, OidcStatus::Ready, b.issuer.as_str())
    );
    assert_eq!(saved.client_id, "from-console");
    assert_eq!(saved.scope, vec!["openid", "email", "groups"]);
    assert_eq!(saved.expiry, "30d");
    assert!(saved.client_secret_set);
    assert!(!serde_json::to_string(&saved).unwrap().contains(secret));
    let to = console_sign_in_target(&server).await.unwrap();
    assert!(to.starts_with(&format!("{}/auth?", b.issuer)), "{to}");
    assert!(to.contains("client_id=from-console"), "{to}");
    assert!(to.contains("groups"), "the new scope is asked for: {to}");
    let to = device_sign_in_target(&server).await.unwrap();
    assert!(to.starts_with(&format!("{}/auth?", b.issuer)), "{to}");

    // The audit entry: who, before and after, the secret masked.
    let entries = oidc_entries(&server).await;
    assert_eq!(entries.len(), 1);
    let entry = &entries[0];
    assert_eq!(entry.action, "oidc.set");
    assert_eq!(entry.actor, alice());
    let before = entry.before.as_ref().unwrap();
    let after = entry.after.as_ref().unwrap();
    assert_eq!(before["issuer"], a.issuer.as_str());
    assert_eq!(before["client_id"], "from-file");
    assert_eq!(before["client_secret"], "<set>");
    assert_eq!(after["issuer"], b.issuer.as_str());
    assert_eq!(after["client_secret"], "<changed>");
    let logged = serde_json::to_string(entry).unwrap();
    assert!(
        !logged.contains(secret) && !logged.contains("file-secret-0001"),
        "{logged}"
    );

    // Stored as given (the provider needs it), only on the server.
    assert!(stored_row(&server).await.unwrap().contains(secret));

    // After a restart (with no oidc section in the config at all) the saved settings are in
    // force, secret included.
    server.restart().await;
    let admin = server.running().admin.clone();
    let view = admin.get_oidc_settings().await.unwrap();
    assert_eq!(
        (view.source, view.status, view.issuer.as_str()),
        (OidcSource::Saved, OidcStatus::Ready, b.issuer.as_str())
    );
    assert_eq!(view.client_id, "from-console");
    assert!(view.client_secret_set);
    let to = console_sign_in_target(&server).await.unwrap();
    assert!(to.starts_with(&format!("{}/auth?", b.issuer)), "{to}");

    // Saving without a secret keeps the one in force.
    let again = acting_as(
        alice(),
        admin.set_oidc_settings(update(&b.issuer, "from-console-2", "")),
    )
    .await
    .unwrap();
    assert!(again.client_secret_set);
    assert!(stored_row(&server).await.unwrap().contains(secret));
    let entries = oidc_entries(&server).await;
    assert_eq!(entries[0].after.as_ref().unwrap()["client_secret"], "<set>");

    // Off from the console: an empty issuer wins over the file; the device link shows how an
    // administrator approves, the console offers no provider.
    let off = acting_as(alice(), admin.set_oidc_settings(update("", "", "")))
        .await
        .unwrap();
    assert_eq!(
        (off.source, off.status),
        (OidcSource::Saved, OidcStatus::Off)
    );
    assert_eq!(console_sign_in_target(&server).await, None);
    assert_eq!(device_sign_in_target(&server).await, None);
    let login = http()
        .get(format!("{}/login", server.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!login.contains("Sign in with"), "{login}");

    // Back to the config file's (which, after the restart, has no provider).
    let reset = acting_as(alice(), admin.reset_oidc_settings())
        .await
        .unwrap();
    assert_eq!(
        (reset.source, reset.status),
        (OidcSource::ConfigFile, OidcStatus::Off)
    );
    assert!(!reset.client_secret_set);
    assert_eq!(stored_row(&server).await, None);
    assert_eq!(oidc_entries(&server).await[0].action, "oidc.reset");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_or_unreachable_issuer_is_refused_by_name_and_nothing_changes() {
    let a = FakeProvider::start().await;
    let file_issuer = a.issuer.clone();
    let server = TestServer::start_with(|c| {
        c.oidc.issuer = Some(file_issuer);
        c.oidc.client_id = Some("from-file".into());
        c.oidc.client_secret = Some("file-secret".into());
    })
    .await;
    let admin = server.running().admin.clone();
    let before = admin.get_oidc_settings().await.unwrap();

    let unreachable = format!("http://127.0.0.1:{}", closed_port());
    // The provider at A answers for 127.0.0.1, so asked as localhost it names another issuer.
    let wrong = format!("http://localhost:{}", a.port());
    let cases = [
        (update(&unreachable, "x", "new-secret"), unreachable.clone()),
        (update(&wrong, "x", "new-secret"), wrong.clone()),
        (
            update("http://id.example.com", "x", "new-secret"),
            "must be an https URL".into(),
        ),
        (update(&a.issuer, " ", ""), "client id".into()),
        (
            OidcUpdate {
                expiry: "soon".into(),
                ..update(&a.issuer, "x", "")
            },
            "soon".into(),
        ),
        (
            OidcUpdate {
                scope: vec!["email".into()],
                ..update(&a.issuer, "x", "")
            },
            "openid".into(),
        ),
    ];
    for (bad, named) in cases {
        let issuer = bad.issuer.clone();
        let err = acting_as(alice(), admin.set_oidc_settings(bad))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains(&named), "{issuer}: {err}");
        assert!(!err.contains("new-secret"), "{err}");
        assert_eq!(admin.get_oidc_settings().await.unwrap(), before, "{issuer}");
    }
    assert!(
        acting_as(
            alice(),
            admin.set_oidc_settings(update(&unreachable, "x", ""))
        )
        .await
        .unwrap_err()
        .to_string()
        .contains("could not be discovered")
    );
    assert_eq!(stored_row(&server).await, None, "nothing stored");
    assert!(oidc_entries(&server).await.is_empty(), "nothing logged");
    let to = console_sign_in_target(&server).await.unwrap();
    assert!(to.starts_with(&format!("{}/auth?", a.issuer)), "{to}");
    // With nothing saved, going back to the config file's settings changes nothing either.
    assert_eq!(admin.reset_oidc_settings().await.unwrap(), before);
    assert!(oidc_entries(&server).await.is_empty());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_down_at_start_is_retried_until_it_answers() {
    let port = closed_port();
    let issuer = format!("http://127.0.0.1:{port}");

    // By default an undiscoverable provider stops the server, naming it.
    let dir = std::env::temp_dir().join(format!("oxiscale-test-{}", rand::random::<u64>()));
    let mut config = config_for(&dir);
    config.oidc.issuer = Some(issuer.clone());
    config.oidc.client_id = Some("oxiscale".into());
    let err = match oxiscale::serve::start(config).await {
        Ok(_) => panic!("the server started without its provider"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains(&issuer), "{err}");
    std::fs::remove_dir_all(&dir).ok();

    // With only_start_if_oidc_is_available off it starts, waits, and keeps trying.
    let wanted = issuer.clone();
    let server = TestServer::start_with(|c| {
        c.oidc.issuer = Some(wanted);
        c.oidc.client_id = Some("oxiscale".into());
        c.oidc.only_start_if_oidc_is_available = false;
    })
    .await;
    let admin = server.running().admin.clone();
    let view = admin.get_oidc_settings().await.unwrap();
    assert_eq!(
        (view.status, view.issuer.as_str()),
        (OidcStatus::Waiting, issuer.as_str())
    );
    assert_eq!(console_sign_in_target(&server).await, None);
    assert_eq!(device_sign_in_target(&server).await, None);

    // The provider comes up: within the next retry (5 s after the failure at start) sign-in
    // through it works, without a restart.
    let provider = FakeProvider::start_on(port).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while admin.get_oidc_settings().await.unwrap().status != OidcStatus::Ready {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the provider was not found again"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let to = console_sign_in_target(&server).await.unwrap();
    assert!(
        to.starts_with(&format!("{}/auth?", provider.issuer)),
        "{to}"
    );
    let to = device_sign_in_target(&server).await.unwrap();
    assert!(
        to.starts_with(&format!("{}/auth?", provider.issuer)),
        "{to}"
    );
    server.stop().await;
}

// ---- Over HTTP, as the console's page calls it ----

/// Signs `name` in through the login form; returns (session cookie, CSRF token of the
/// identity settings page).
async fn sign_in(server: &TestServer, name: &str, password: &str) -> (String, String) {
    let session = common::console::Console::new(&server.url)
        .sign_in_as(name, password)
        .await;
    let page = http()
        .get(format!("{}/settings/identity", server.url))
        .header(header::COOKIE, &session.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let csrf = common::console::meta_csrf(&page.text().await.unwrap()).unwrap();
    let value = session.cookie.split_once('=').unwrap().1.to_owned();
    (value, csrf)
}

async fn call(
    server: &TestServer,
    session: &(String, String),
    endpoint: &str,
    json: Option<serde_json::Value>,
) -> (StatusCode, String) {
    let req = http()
        .post(format!("{}/console/fn/{endpoint}", server.url))
        .header(header::COOKIE, format!("{SESSION_COOKIE}={}", session.0))
        .header("x-csrf-token", &session.1);
    let req = match json {
        Some(body) => req
            .header(header::CONTENT_TYPE, "application/json")
            .body(body.to_string()),
        None => req
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(""),
    };
    let resp = req.send().await.unwrap();
    (resp.status(), resp.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_never_gets_the_secret_back_and_only_owners_and_admins_get_in() {
    let a = FakeProvider::start().await;
    let b = FakeProvider::start().await;
    let file_issuer = a.issuer.clone();
    let server = TestServer::start_with(|c| {
        c.oidc.issuer = Some(file_issuer);
        c.oidc.client_id = Some("from-file".into());
        c.oidc.client_secret = Some("file-secret-0002".into());
    })
    .await;
    let accounts = Accounts::new(server.running().tailnet.store().pool().clone());
    let password = "correct horse battery staple 42";
    for role in [
        Role::Owner,
        Role::Admin,
        Role::NetworkAdmin,
        Role::ItAdmin,
        Role::Auditor,
    ] {
        accounts
            .create(&format!("id-{}", role.as_str()), password, role)
            .await
            .unwrap();
    }

    let owner = sign_in(&server, "id-owner", password).await;
    let (status, body) = call(&server, &owner, "identity/get", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let got: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(got["issuer"], a.issuer.as_str());
    assert_eq!(got["client_secret_set"], true);
    assert!(!body.contains("file-secret-0002"), "{body}");

    let secret = "console-secret-d41d8c";
    let settings = json!({ "settings": {
        "issuer": b.issuer, "client_id": "from-console", "client_secret": secret,
        "scopes": ["openid", "email"], "allowed_domains": [], "allowed_users": [],
        "allowed_groups": [], "email_verified_required": true, "use_expiry_from_token": false,
        "expiry": "",
    }});
    let (status, body) = call(&server, &owner, "identity/set", Some(settings.clone())).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(!body.contains(secret), "{body}");
    let (_, body) = call(&server, &owner, "identity/get", None).await;
    assert!(!body.contains(secret), "{body}");
    assert!(body.contains(&b.issuer), "{body}");
    // The Logs page's server function shows the entry, masked.
    let (status, body) = call(
        &server,
        &owner,
        "audit",
        Some(json!({"query": {"actor": "", "action": "oidc.", "target": ""}})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body.contains("oidc.set") && body.contains("id-owner"),
        "{body}"
    );
    assert!(!body.contains(secret), "{body}");

    // A refusal names the issuer and says nothing changed.
    let unreachable = format!("http://127.0.0.1:{}", closed_port());
    let mut bad = settings.clone();
    bad["settings"]["issuer"] = json!(unreachable);
    let (status, body) = call(&server, &owner, "identity/set", Some(bad)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body.contains(&unreachable) && body.contains("nothing was changed"),
        "{body}"
    );

    let admin = sign_in(&server, "id-admin", password).await;
    let (status, body) = call(&server, &admin, "identity/get", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for role in [Role::NetworkAdmin, Role::ItAdmin, Role::Auditor] {
        let session = sign_in(&server, &format!("id-{}", role.as_str()), password).await;
        for (endpoint, args) in [
            ("identity/get", None),
            ("identity/set", Some(settings.clone())),
            ("identity/reset", None),
        ] {
            let (status, body) = call(&server, &session, endpoint, args).await;
            assert_eq!(
                status,
                StatusCode::FORBIDDEN,
                "{endpoint} as {role:?}: {body}"
            );
            assert!(body.contains("NotAllowed"), "{body}");
        }
    }
    // Nothing those roles tried changed anything.
    let view = server.running().admin.get_oidc_settings().await.unwrap();
    assert_eq!(view.issuer, b.issuer);
    assert_eq!(oidc_entries(&server).await.len(), 1);
    server.stop().await;
}
