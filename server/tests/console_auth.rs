//! Every console endpoint refuses a request without a session, and every state change
//! without the session's CSRF token or from a foreign origin: checked over HTTP against the
//! real server for each server function the registry holds and each page the router lists,
//! so a new endpoint is covered the day it is added.

mod common;

use app::api::Role;
use common::TestServer;
use common::console::{ADMIN, Console, PASSWORD, session_cookie};
use oxiscale::console::auth::Accounts;
use reqwest::{Method, StatusCode, header};

/// Server functions the console had when this test was written; the registry may grow,
/// never shrink below this without the test noticing.
const MIN_SERVER_FNS: usize = 20;
const KNOWN_SERVER_FNS: &[&str] = &[
    "/console/fn/config",
    "/console/fn/machines",
    "/console/fn/machine/delete",
    "/console/fn/user/create",
    "/console/fn/preauth-key/create",
    "/console/fn/api-key/create",
    "/console/fn/dns/set",
];
const KNOWN_PAGES: &[&str] = &[
    "/",
    "/machines",
    "/machines/{id}",
    "/users",
    "/keys",
    "/dns",
];

/// Every server function registered with server_fn, sorted. Naming a few of the app's
/// server functions keeps their objects (and so their registrations) in this binary.
fn server_fns() -> Vec<String> {
    std::hint::black_box((
        app::api::get_console_config as fn() -> _,
        app::api::tailnet::list_machines as fn(String) -> _,
        app::api::dns::set_dns as fn(_) -> _,
    ));
    let mut fns: Vec<String> = leptos::server_fn::axum::server_fn_paths()
        .map(|(path, method)| {
            assert_eq!(method, http::Method::POST, "{path} is not a POST server fn");
            path.to_owned()
        })
        .filter(|p| p.starts_with("/console/"))
        .collect();
    fns.sort();
    fns.dedup();
    fns
}

/// Every page path of the console router, with parameters filled in; `/login` and `/setup`
/// are the open sign-in pages and listed apart.
fn pages() -> (Vec<String>, Vec<String>) {
    let mut pages = Vec::new();
    let mut open = Vec::new();
    for route in leptos_axum::generate_route_list(app::App) {
        let path = route.path().to_owned();
        if path == "/login" || path == "/setup" {
            open.push(path);
        } else {
            pages.push(path);
        }
    }
    pages.sort();
    pages.dedup();
    (pages, open)
}

fn concrete(path: &str) -> String {
    // `{id}` and any other parameter: any value reaches the guard the same way.
    let mut out = String::new();
    let mut in_param = false;
    for c in path.chars() {
        match c {
            '{' => in_param = true,
            '}' => {
                in_param = false;
                out.push('1');
            }
            _ if !in_param => out.push(c),
            _ => {}
        }
    }
    out
}

/// Console answers may not be framed, sniffed or stored: the sign-in page, a redirect to
/// it, a page and a server function answer of a signed-in session alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_answers_carry_the_security_headers() {
    let server = TestServer::start().await;
    let console = Console::new(&server.url);
    let accounts = Accounts::new(server.running().tailnet.store().pool().clone());
    accounts
        .create("headers-owner", PASSWORD, Role::Owner)
        .await
        .unwrap();
    let session = console.sign_in_as("headers-owner", PASSWORD).await;
    let login = console.get("/login", None).await;
    let redirect = console.get("/machines", None).await;
    let page = console.get("/machines", Some(&session)).await;
    let (fn_status, fn_headers) = {
        let r = console
            .request(Method::POST, "/console/fn/config", Some(&session))
            .header("x-csrf-token", &session.csrf)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body("")
            .send()
            .await
            .unwrap();
        (r.status(), r.headers().clone())
    };
    assert_eq!(fn_status, StatusCode::OK);
    for (what, headers) in [
        ("GET /login", login.headers()),
        ("GET /machines signed out", redirect.headers()),
        ("GET /machines", page.headers()),
        ("a server function", &fn_headers),
    ] {
        let h = |name: header::HeaderName| {
            headers
                .get(&name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        assert!(
            h(header::CONTENT_SECURITY_POLICY).contains("frame-ancestors 'none'"),
            "{what}: {headers:?}"
        );
        assert_eq!(h(header::X_FRAME_OPTIONS), "DENY", "{what}");
        assert_eq!(h(header::X_CONTENT_TYPE_OPTIONS), "nosniff", "{what}");
        assert_eq!(h(header::CACHE_CONTROL), "no-store", "{what}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_console_endpoint_needs_a_session_and_every_change_the_csrf_token() {
    let fns = server_fns();
    let (pages, open) = pages();
    eprintln!("server functions ({}):", fns.len());
    for f in &fns {
        eprintln!("  POST {f}");
    }
    eprintln!("pages ({}):", pages.len());
    for p in &pages {
        eprintln!("  GET {p}");
    }
    eprintln!("open sign-in pages ({}): {open:?}", open.len());
    eprintln!("stream: GET /console/events");
    assert!(
        fns.len() >= MIN_SERVER_FNS,
        "the server_fn registry lists {} console functions, expected at least {MIN_SERVER_FNS}: {fns:?}",
        fns.len()
    );
    for known in KNOWN_SERVER_FNS {
        assert!(
            fns.iter().any(|f| f == known),
            "{known} missing from {fns:?}"
        );
    }
    for known in KNOWN_PAGES {
        assert!(
            pages.iter().any(|p| p == known),
            "{known} missing from {pages:?}"
        );
    }
    assert_eq!(open, ["/login", "/setup"]);

    let server = TestServer::start().await;
    let console = Console::new(&server.url);
    let foreign = "https://evil.example";

    // (1) No session at all.
    for f in &fns {
        assert_eq!(
            console.call(f, None, None, None).await,
            StatusCode::UNAUTHORIZED,
            "POST {f} without a session"
        );
    }
    let resp = console
        .request(Method::POST, &fns[0], None)
        .header(header::CONTENT_TYPE, "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.text().await.unwrap(),
        "\"SignedOut\"",
        "the 401 body decodes as ConsoleError::SignedOut"
    );
    let events = console.get("/console/events", None).await;
    assert_eq!(
        events.status(),
        StatusCode::UNAUTHORIZED,
        "GET /console/events without a session"
    );
    for p in &pages {
        let path = concrete(p);
        let resp = console.get(&path, None).await;
        assert_eq!(
            resp.status(),
            StatusCode::SEE_OTHER,
            "GET {path} without a session"
        );
        let next: String = form_urlencoded::byte_serialize(path.as_bytes()).collect();
        assert_eq!(
            resp.headers()[header::LOCATION],
            format!("/login?next={next}").as_str(),
            "GET {path} redirects to sign in and back"
        );
    }

    // Paths the axum routes miss but the app's router matches (`/users/` rendered the Users
    // page, data included, through the public 404 fallback) render nothing signed out.
    let user = server.user("signed-out-must-not-see").await;
    assert!(user > 0);
    for p in &pages {
        let base = concrete(p);
        for path in [format!("{base}/"), format!("{base}//"), format!("{base}/x")] {
            let resp = console.get(&path, None).await;
            let status = resp.status();
            assert!(
                status == StatusCode::NOT_FOUND || status == StatusCode::SEE_OTHER,
                "GET {path} without a session answers {status}"
            );
            assert!(
                session_cookie(&resp).is_none(),
                "GET {path} starts no session"
            );
            let body = resp.text().await.unwrap();
            assert!(
                !body.contains("signed-out-must-not-see") && !body.contains("/pkg/"),
                "GET {path} without a session renders the app: {body}"
            );
        }
    }

    // A pre-sign-in session with its valid token is still no sign-in.
    let pre = console.presession().await;
    for f in &fns {
        assert_eq!(
            console.call(f, Some(&pre), Some(&pre.csrf), None).await,
            StatusCode::UNAUTHORIZED,
            "POST {f} with a signed-out session"
        );
    }

    // Login form without / with a wrong CSRF field, or from another site: refused.
    Accounts::new(server.running().tailnet.store().pool().clone())
        .create(ADMIN, PASSWORD, Role::Owner)
        .await
        .expect("admin created");
    for (what, token) in [("no", None), ("a wrong", Some("0".repeat(pre.csrf.len())))] {
        let resp = console.post_login(&pre, token.as_deref()).await;
        assert_eq!(
            resp.status(),
            StatusCode::FORBIDDEN,
            "login form with {what} _csrf field"
        );
        assert!(
            session_cookie(&resp).is_none(),
            "a refused login starts no session"
        );
    }
    let resp = console
        .request(Method::POST, "/login", Some(&pre))
        .header(header::ORIGIN, foreign)
        .form(&[
            ("username", ADMIN),
            ("password", PASSWORD),
            ("_csrf", &pre.csrf),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::FORBIDDEN,
        "login form from a foreign origin"
    );

    // (2) Signed in, without the token or with a wrong one; (3) right token, foreign origin.
    let session = console.sign_in().await;
    let wrong = "A".repeat(session.csrf.len());
    for f in &fns {
        for (what, csrf, origin) in [
            ("without x-csrf-token", None, None),
            ("with a wrong x-csrf-token", Some(wrong.as_str()), None),
            ("with the pre-sign-in token", Some(pre.csrf.as_str()), None),
            (
                "from a foreign Origin",
                Some(session.csrf.as_str()),
                Some(foreign),
            ),
            (
                "from the null Origin",
                Some(session.csrf.as_str()),
                Some("null"),
            ),
        ] {
            assert_eq!(
                console.call(f, Some(&session), csrf, origin).await,
                StatusCode::FORBIDDEN,
                "POST {f} signed in {what}"
            );
        }
        // A form post without the `_csrf` field is refused too.
        let resp = console
            .request(Method::POST, f, Some(&session))
            .form(&[("id", "1")])
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.status(),
            StatusCode::FORBIDDEN,
            "form POST {f} without _csrf"
        );
    }

    // (4) Session and token: through the guard (the function may still reject its input).
    let own_origin = server.url.clone();
    for f in &fns {
        for origin in [None, Some(own_origin.as_str())] {
            let status = console
                .call(f, Some(&session), Some(&session.csrf), origin)
                .await;
            if origin.is_none() {
                eprintln!("  POST {f} with session and token: {status}");
            }
            assert!(
                status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN,
                "POST {f} signed in with the token (Origin {origin:?}) answers {status}"
            );
        }
    }
    for p in &pages {
        let path = concrete(p);
        let status = console.get(&path, Some(&session)).await.status();
        assert!(
            status != StatusCode::UNAUTHORIZED
                && status != StatusCode::FORBIDDEN
                && status != StatusCode::SEE_OTHER,
            "GET {path} signed in answers {status}"
        );
    }
    let events = console.get("/console/events", Some(&session)).await;
    assert_eq!(
        events.status(),
        StatusCode::OK,
        "GET /console/events signed in"
    );
    drop(events);

    // Logout needs the token, then ends the session for good.
    let resp = console
        .request(Method::POST, "/logout", Some(&session))
        .form(&[("x", "y")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN, "logout without _csrf");
    assert_ne!(
        console
            .call(&fns[0], Some(&session), Some(&session.csrf), None)
            .await,
        StatusCode::UNAUTHORIZED,
        "a refused logout leaves the session"
    );
    let resp = console
        .request(Method::POST, "/logout", Some(&session))
        .form(&[("_csrf", session.csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER, "logout");
    assert_eq!(resp.headers()[header::LOCATION], "/login");
    for f in &fns {
        assert_eq!(
            console
                .call(f, Some(&session), Some(&session.csrf), None)
                .await,
            StatusCode::UNAUTHORIZED,
            "POST {f} with the cookie of an ended session"
        );
    }
    let resp = console.get("/machines", Some(&session)).await;
    assert_eq!(
        resp.status(),
        StatusCode::SEE_OTHER,
        "a page with the cookie of an ended session"
    );

    eprintln!(
        "checked {} server functions x 9 refusals + 2 accepted calls, {} pages, /console/events, login and logout",
        fns.len(),
        pages.len()
    );
    server.stop().await;
}

/// Who may call each server function: every console function is in this table, with
/// arguments that reach its body (ids that do not exist, names that are invalid, the DNS
/// settings in force), so an allowed call changes nothing and a refused one is refused by
/// its role and nothing else.
const READERS: &[Role] = &[
    Role::Owner,
    Role::Admin,
    Role::NetworkAdmin,
    Role::ItAdmin,
    Role::Auditor,
];
const MACHINE_ADMINS: &[Role] = &[Role::Owner, Role::Admin, Role::ItAdmin];
const NETWORK_ADMINS: &[Role] = &[Role::Owner, Role::Admin, Role::NetworkAdmin];
const KEY_ADMINS: &[Role] = &[Role::Owner, Role::Admin];
const IDENTITY_ADMINS: &[Role] = &[Role::Owner, Role::Admin];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_server_function_checks_the_console_role() {
    let server = TestServer::start().await;
    let console = Console::new(&server.url);
    let accounts = Accounts::new(server.running().tailnet.store().pool().clone());
    let none = "999999";
    let table: Vec<(&str, Option<String>, &[Role])> = vec![
        ("/console/fn/config", None, READERS),
        (
            "/console/fn/audit",
            Some(r#"{"query":{"actor":"","action":"","target":""}}"#.into()),
            READERS,
        ),
        (
            "/console/fn/machines",
            Some(r#"{"query":""}"#.into()),
            READERS,
        ),
        (
            "/console/fn/machine",
            Some(format!(r#"{{"id":{none}}}"#)),
            READERS,
        ),
        (
            "/console/fn/machine/rename",
            Some(format!(r#"{{"id":{none},"name":"x"}}"#)),
            MACHINE_ADMINS,
        ),
        (
            "/console/fn/machine/tags",
            Some(format!(r#"{{"id":{none},"tags":""}}"#)),
            MACHINE_ADMINS,
        ),
        (
            "/console/fn/machine/routes",
            Some(format!(r#"{{"id":{none},"routes":[]}}"#)),
            MACHINE_ADMINS,
        ),
        (
            "/console/fn/machine/expire",
            Some(format!(r#"{{"id":{none}}}"#)),
            MACHINE_ADMINS,
        ),
        (
            "/console/fn/machine/no-expiry",
            Some(format!(r#"{{"id":{none}}}"#)),
            MACHINE_ADMINS,
        ),
        (
            "/console/fn/machine/delete",
            Some(format!(r#"{{"id":{none}}}"#)),
            MACHINE_ADMINS,
        ),
        (
            "/console/fn/machine/approve",
            Some(format!(r#"{{"id":{none}}}"#)),
            MACHINE_ADMINS,
        ),
        (
            "/console/fn/machines/approval",
            Some(r#"{"required":false}"#.into()),
            MACHINE_ADMINS,
        ),
        ("/console/fn/users", Some("{}".into()), READERS),
        (
            "/console/fn/user/create",
            Some(r#"{"name":"!","display_name":"","email":""}"#.into()),
            MACHINE_ADMINS,
        ),
        (
            "/console/fn/user/rename",
            Some(format!(r#"{{"id":{none},"name":"x"}}"#)),
            MACHINE_ADMINS,
        ),
        (
            "/console/fn/user/delete",
            Some(format!(r#"{{"id":{none}}}"#)),
            MACHINE_ADMINS,
        ),
        ("/console/fn/keys", Some("{}".into()), READERS),
        (
            "/console/fn/preauth-key/create",
            Some(format!(
                r#"{{"key":{{"user":{none},"tags":"","reusable":false,"ephemeral":false,"expiration":""}}}}"#
            )),
            MACHINE_ADMINS,
        ),
        (
            "/console/fn/preauth-key/expire",
            Some(format!(r#"{{"id":{none}}}"#)),
            MACHINE_ADMINS,
        ),
        (
            "/console/fn/api-key/create",
            Some(r#"{"expiration":"not a duration"}"#.into()),
            KEY_ADMINS,
        ),
        (
            "/console/fn/api-key/expire",
            Some(format!(r#"{{"id":{none}}}"#)),
            KEY_ADMINS,
        ),
        ("/console/fn/dns/get", None, READERS),
        (
            "/console/fn/dns/set",
            Some("dns in force".into()),
            NETWORK_ADMINS,
        ),
        ("/console/fn/identity/get", None, IDENTITY_ADMINS),
        (
            "/console/fn/identity/set",
            // Refused before discovery (plain http to another machine): nothing changes.
            Some(
                r#"{"settings":{"issuer":"http://id.example.invalid","client_id":"x","client_secret":"s","scopes":["openid"],"allowed_domains":[],"allowed_users":[],"allowed_groups":[],"email_verified_required":true,"use_expiry_from_token":false,"expiry":""}}"#
                    .into(),
            ),
            IDENTITY_ADMINS,
        ),
        // Nothing saved: going back to the config file's settings changes nothing.
        ("/console/fn/identity/reset", None, IDENTITY_ADMINS),
        ("/console/fn/policy/get", None, READERS),
        (
            "/console/fn/policy/set",
            Some(r#"{"text":"{ not a policy"}"#.into()),
            NETWORK_ADMINS,
        ),
        ("/console/fn/policy/subjects", None, READERS),
        (
            "/console/fn/policy/preview",
            Some(r#"{"text":"{}","subject":"nobody"}"#.into()),
            READERS,
        ),
    ];
    let listed: Vec<String> = table.iter().map(|(p, ..)| p.to_string()).collect();
    let mut listed_sorted = listed.clone();
    listed_sorted.sort();
    assert_eq!(
        listed_sorted,
        server_fns(),
        "every server function has a row"
    );

    let dns_in_force = {
        let owner = "table-owner";
        accounts.create(owner, PASSWORD, Role::Owner).await.unwrap();
        let session = console.sign_in_as(owner, PASSWORD).await;
        let (status, body) = console
            .call_with("/console/fn/dns/get", &session, None)
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        format!(r#"{{"settings":{body}}}"#)
    };
    let mut rows = Vec::new();
    for role in READERS.iter().copied() {
        let name = format!("table-{}", role.as_str());
        if role != Role::Owner {
            accounts.create(&name, PASSWORD, role).await.unwrap();
        }
        let session = console.sign_in_as(&name, PASSWORD).await;
        for (path, body, allowed) in &table {
            let body = match body.as_deref() {
                Some("dns in force") => Some(dns_in_force.as_str()),
                other => other,
            };
            let (status, text) = console.call_with(path, &session, body).await;
            let refused_by_role = text.contains("does not allow");
            assert_eq!(
                refused_by_role,
                !allowed.contains(&role),
                "{path} as {}: {status} {text}",
                role.as_str()
            );
            assert!(
                !text.contains("Transport") && !text.contains("CSRF"),
                "{path} as {}: the call did not reach the function: {status} {text}",
                role.as_str()
            );
            if refused_by_role {
                assert_eq!(
                    status,
                    StatusCode::FORBIDDEN,
                    "{path} as {}: {text}",
                    role.as_str()
                );
            }
            rows.push((path.to_string(), role, !refused_by_role));
        }
    }
    eprintln!("role table (allowed = y):");
    for (path, ..) in &table {
        let cells: Vec<String> = READERS
            .iter()
            .map(|r| {
                let ok = rows
                    .iter()
                    .any(|(p, role, ok)| p == path && role == r && *ok);
                format!("{}={}", r.as_str(), if ok { "y" } else { "-" })
            })
            .collect();
        eprintln!("  {path:34} {}", cells.join(" "));
    }
    // Members are people from the identity provider; no local account can be one.
    assert!(
        accounts
            .create("table-member", PASSWORD, Role::Member)
            .await
            .is_err()
    );
    server.stop().await;
}
