//! Tailscale SSH "check" mode end to end, in-process: the destination node asks over its
//! Noise connection what to do (`GET /machine/ssh/action/{src}/to/{dst}`), is told to hold
//! and where the owner approves, long-polls the wait URL, and gets `accept` once the source
//! device's owner approved on the console page `/ssh-check/<token>` (or `reject` when
//! someone else answered). Other machines are refused; pending checks are bounded.

mod common;

use std::time::Duration;

use app::api::Role;
use bytes::Bytes;
use common::console::{Console, PASSWORD, Session};
use common::{TestNode, TestServer};
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use oxiscale::audit::AuditFilter;
use oxiscale::console::auth::Accounts;
use oxiscale::control::ssh_check::MAX_PENDING_PER_DESTINATION;
use reqwest::{StatusCode, header};
use serde_json::Value;

/// alice's devices must pass a check to log in to `tag:server` as root or any other user.
const CHECK_POLICY: &str = r#"{
  "tagOwners": { "tag:server": ["alice@"] },
  "acls": [ { "action": "accept", "src": ["*"], "dst": ["*:*"] } ],
  "ssh": [
    { "action": "check", "src": ["alice@"], "dst": ["tag:server"],
      "users": ["root", "autogroup:nonroot"] },
  ],
}"#;

async fn node(srv: &TestServer, name: &str, key: &str) -> TestNode {
    let mut n = TestNode::connect(&srv.url, name).await;
    n.register(Some(key)).await;
    n
}

/// `GET url` over the node's Noise connection: the status and the body (JSON if it is).
async fn get(node: &TestNode, url: &str) -> (u16, Value) {
    get_on(node.conn.send_request.clone(), url).await
}

async fn get_on(
    mut send: hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    url: &str,
) -> (u16, Value) {
    let req = Request::builder()
        .method(Method::GET)
        .uri(url)
        .body(Full::new(Bytes::new()))
        .unwrap();
    send.ready().await.unwrap();
    let resp = send.send_request(req).await.expect("request answered");
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes)
            .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into())),
    )
}

fn action_url(srv: &TestServer, src: u64, dst: u64, local_user: &str) -> String {
    format!(
        "{}/machine/ssh/action/{src}/to/{dst}?local_user={local_user}",
        srv.url
    )
}

/// The page token in a hold answer's message.
fn token_in(action: &Value) -> String {
    let message = action["message"]
        .as_str()
        .expect("a message for the SSH user");
    let at = message
        .find("/ssh-check/")
        .expect("the message names the page")
        + "/ssh-check/".len();
    message[at..]
        .split(|c: char| c.is_whitespace())
        .next()
        .unwrap()
        .to_owned()
}

async fn post_answer(
    console: &Console,
    session: &Session,
    token: &str,
    decision: &str,
) -> (StatusCode, String) {
    let resp = console
        .request(Method::POST, &format!("/ssh-check/{token}"), Some(session))
        .form(&[("decision", decision), ("_csrf", session.csrf.as_str())])
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.text().await.unwrap())
}

struct Setup {
    srv: TestServer,
    laptop: TestNode,
    server: TestNode,
    intruder: TestNode,
    src: u64,
    dst: u64,
    bob_node: u64,
    console: Console,
}

async fn setup() -> Setup {
    setup_with(CHECK_POLICY).await
}

async fn setup_with(policy: &str) -> Setup {
    let (srv, _policy_file) = TestServer::with_policy_file(policy).await;
    let alice = srv.user("alice").await;
    let bob = srv.user("bob").await;
    let accounts = Accounts::new(srv.running().tailnet.store().pool().clone());
    accounts
        .create("alice", PASSWORD, Role::Admin)
        .await
        .unwrap();
    accounts.create("bob", PASSWORD, Role::Admin).await.unwrap();
    let laptop = node(&srv, "laptop", &srv.preauth_key(Some(alice), &[]).await).await;
    let server = node(
        &srv,
        "server",
        &srv.preauth_key(None, &["tag:server"]).await,
    )
    .await;
    let intruder = node(&srv, "intruder", &srv.preauth_key(Some(bob), &[]).await).await;
    let (src, dst, bob_node) = (
        srv.node_id("laptop"),
        srv.node_id("server"),
        srv.node_id("intruder"),
    );
    let console = Console::new(&srv.url);
    Setup {
        srv,
        laptop,
        server,
        intruder,
        src,
        dst,
        bob_node,
        console,
    }
}

#[tokio::test]
async fn the_owner_approves_and_the_destination_is_told_to_accept() {
    let s = setup().await;
    let _ = &s.laptop;
    // The destination asks: hold, with a page for the owner and a URL to wait on.
    let (status, hold) = get(&s.server, &action_url(&s.srv, s.src, s.dst, "root")).await;
    assert_eq!(status, 200, "{hold}");
    assert_ne!(
        hold["accept"],
        Value::Bool(true),
        "no accept before a check: {hold}"
    );
    let wait = hold["holdAndDelegate"]
        .as_str()
        .expect("holdAndDelegate")
        .to_owned();
    assert!(
        wait.starts_with(&format!(
            "{}/machine/ssh/action/{}/to/{}/wait/",
            s.srv.url, s.src, s.dst
        )),
        "{wait}"
    );
    let token = token_in(&hold);
    assert!(
        hold["message"]
            .as_str()
            .unwrap()
            .contains(&format!("{}/ssh-check/{token}", s.srv.url))
    );

    // Asking again before it is answered gives the same check, not a new one.
    let (_, again) = get(&s.server, &action_url(&s.srv, s.src, s.dst, "root")).await;
    assert_eq!(token_in(&again), token);

    // The wait does not accept before approval.
    let waiting = {
        let send = s.server.conn.send_request.clone();
        let wait = wait.clone();
        tokio::spawn(async move { get_on(send, &wait).await })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !waiting.is_finished(),
        "the wait holds until the owner answers"
    );

    // Signed out, the page sends the browser to sign in and back.
    let page = s.console.get(&format!("/ssh-check/{token}"), None).await;
    assert_eq!(page.status(), StatusCode::SEE_OTHER);
    assert!(
        page.headers()[header::LOCATION]
            .to_str()
            .unwrap()
            .starts_with("/login?next=%2Fssh-check%2F")
    );

    // The owner signs in, sees what is asked, and approves.
    let session = s.console.sign_in_as("alice", PASSWORD).await;
    let page = s
        .console
        .get(&format!("/ssh-check/{token}"), Some(&session))
        .await;
    assert_eq!(page.status(), StatusCode::OK);
    assert_eq!(page.headers()[header::X_FRAME_OPTIONS], "DENY");
    assert!(
        page.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .contains("frame-ancestors 'none'")
    );
    let html = page.text().await.unwrap();
    for shown in ["laptop", "server", "root", "alice", "value=\"approve\""] {
        assert!(html.contains(shown), "the page shows {shown}: {html}");
    }
    // Without the CSRF token the answer is refused and changes nothing.
    let forged = s
        .console
        .request(Method::POST, &format!("/ssh-check/{token}"), Some(&session))
        .form(&[("decision", "approve")])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    assert!(!waiting.is_finished(), "a forged answer changes nothing");

    let (status, body) = post_answer(&s.console, &session, &token, "approve").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, accepted) = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the wait answers once approved")
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(accepted["accept"], Value::Bool(true), "{accepted}");
    assert!(accepted.get("reject").is_none());

    // The answer is in the audit log, by the person who gave it.
    let entries = s
        .srv
        .running()
        .admin
        .audit()
        .list(&AuditFilter {
            action: Some("ssh.check".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0].actor.name, "alice");

    // Within the check period the next connection is accepted at once.
    let (status, at_once) = get(&s.server, &action_url(&s.srv, s.src, s.dst, "root")).await;
    assert_eq!(status, 200);
    assert_eq!(at_once["accept"], Value::Bool(true), "{at_once}");
    // A pass is for this local user only.
    let (_, other_user) = get(&s.server, &action_url(&s.srv, s.src, s.dst, "postgres")).await;
    assert!(other_user["holdAndDelegate"].is_string(), "{other_user}");

    // The answered token cannot be answered twice.
    let (status, _) = post_answer(&s.console, &session, &token, "deny").await;
    assert_eq!(status, StatusCode::CONFLICT);
    s.srv.stop().await;
}

#[tokio::test]
async fn someone_elses_answer_is_refused_and_rejects_the_check() {
    let s = setup().await;
    let (_, hold) = get(&s.server, &action_url(&s.srv, s.src, s.dst, "alice")).await;
    let token = token_in(&hold);
    let wait = hold["holdAndDelegate"].as_str().unwrap().to_owned();

    // bob is a console admin, but the laptop is alice's.
    let bob = s.console.sign_in_as("bob", PASSWORD).await;
    let page = s
        .console
        .get(&format!("/ssh-check/{token}"), Some(&bob))
        .await;
    assert_eq!(page.status(), StatusCode::FORBIDDEN);
    assert!(!page.text().await.unwrap().contains("value=\"approve\""));
    let (status, body) = post_answer(&s.console, &bob, &token, "approve").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");

    let (status, rejected) = tokio::time::timeout(Duration::from_secs(10), get(&s.server, &wait))
        .await
        .expect("the wait answers at once");
    assert_eq!(status, 200);
    assert_eq!(rejected["reject"], Value::Bool(true), "{rejected}");
    assert!(
        rejected["message"]
            .as_str()
            .unwrap()
            .contains("does not own")
    );
    assert!(rejected.get("accept").is_none());

    // And the connection is not accepted afterwards either: a new check is needed.
    let (_, next) = get(&s.server, &action_url(&s.srv, s.src, s.dst, "alice")).await;
    assert!(next["holdAndDelegate"].is_string(), "{next}");
    assert_ne!(token_in(&next), token);

    // The owner denying rejects too.
    let alice = s.console.sign_in_as("alice", PASSWORD).await;
    let (status, _) = post_answer(&s.console, &alice, &token_in(&next), "deny").await;
    assert_eq!(status, StatusCode::OK);
    let (_, denied) = get(&s.server, next["holdAndDelegate"].as_str().unwrap()).await;
    assert_eq!(denied["reject"], Value::Bool(true), "{denied}");
    s.srv.stop().await;
}

#[tokio::test]
async fn other_machines_unknown_tokens_and_uncovered_connections_are_refused() {
    let s = setup().await;
    let (_, hold) = get(&s.server, &action_url(&s.srv, s.src, s.dst, "root")).await;
    let wait = hold["holdAndDelegate"].as_str().unwrap().to_owned();

    // Another machine may not ask for the destination's checks, nor wait on them.
    let (status, body) = get(&s.intruder, &action_url(&s.srv, s.src, s.dst, "root")).await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = get(&s.intruder, &wait).await;
    assert_eq!(status, 403, "{body}");
    // Nor may the source itself.
    let (status, _) = get(&s.laptop, &action_url(&s.srv, s.src, s.dst, "root")).await;
    assert_eq!(status, 403);
    // An unknown destination, a malformed path or a missing local user are refused.
    let (status, _) = get(&s.server, &action_url(&s.srv, s.src, 999_999, "root")).await;
    assert_eq!(status, 404);
    let (status, _) = get(
        &s.server,
        &format!("{}/machine/ssh/action/{}/to/{}", s.srv.url, s.src, s.dst),
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = get(
        &s.server,
        &format!(
            "{}/machine/ssh/action/x/to/{}?local_user=root",
            s.srv.url, s.dst
        ),
    )
    .await;
    assert_eq!(status, 404);

    // An unknown source, or one the policy has no check rule for, is rejected, never accepted.
    let (status, unknown) = get(&s.server, &action_url(&s.srv, 999_999, s.dst, "root")).await;
    assert_eq!(status, 200);
    assert_eq!(unknown["reject"], Value::Bool(true), "{unknown}");
    let (status, uncovered) = get(&s.server, &action_url(&s.srv, s.bob_node, s.dst, "root")).await;
    assert_eq!(status, 200);
    assert_eq!(uncovered["reject"], Value::Bool(true), "{uncovered}");
    // An unknown wait id is rejected.
    let (_, gone) = get(
        &s.server,
        &format!(
            "{}/machine/ssh/action/{}/to/{}/wait/{}",
            s.srv.url,
            s.src,
            s.dst,
            "0".repeat(32)
        ),
    )
    .await;
    assert_eq!(gone["reject"], Value::Bool(true), "{gone}");

    // An unknown token is a 404 page.
    let alice = s.console.sign_in_as("alice", PASSWORD).await;
    let page = s
        .console
        .get("/ssh-check/no-such-token", Some(&alice))
        .await;
    assert_eq!(page.status(), StatusCode::NOT_FOUND);
    let (status, _) = post_answer(&s.console, &alice, "no-such-token", "approve").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    s.srv.stop().await;
}

#[tokio::test]
async fn pending_checks_are_bounded_and_new_ones_refused() {
    let s = setup().await;
    let mut first = None;
    for i in 0..MAX_PENDING_PER_DESTINATION {
        let (status, hold) = get(
            &s.server,
            &action_url(&s.srv, s.src, s.dst, &format!("u{i}")),
        )
        .await;
        assert_eq!(status, 200);
        assert!(hold["holdAndDelegate"].is_string(), "check {i}: {hold}");
        first.get_or_insert(token_in(&hold));
    }
    let (status, full) = get(&s.server, &action_url(&s.srv, s.src, s.dst, "one-more")).await;
    assert_eq!(status, 200);
    assert_eq!(full["reject"], Value::Bool(true), "{full}");
    assert!(full["message"].as_str().unwrap().contains("too many"));
    // The oldest are kept: the first one can still be approved.
    let alice = s.console.sign_in_as("alice", PASSWORD).await;
    let page = s
        .console
        .get(&format!("/ssh-check/{}", first.unwrap()), Some(&alice))
        .await;
    assert_eq!(page.status(), StatusCode::OK);
    assert_eq!(
        s.srv.running().control.ssh_checks.pending_count(),
        MAX_PENDING_PER_DESTINATION
    );
    s.srv.stop().await;
}

#[tokio::test]
async fn check_period_always_asks_every_time() {
    let s = setup_with(&CHECK_POLICY.replace(
        r#""users": ["root", "autogroup:nonroot"] }"#,
        r#""users": ["root", "autogroup:nonroot"], "checkPeriod": "always" }"#,
    ))
    .await;
    let (_, hold) = get(&s.server, &action_url(&s.srv, s.src, s.dst, "root")).await;
    let alice = s.console.sign_in_as("alice", PASSWORD).await;
    let (status, _) = post_answer(&s.console, &alice, &token_in(&hold), "approve").await;
    assert_eq!(status, StatusCode::OK);
    let (_, accepted) = get(&s.server, hold["holdAndDelegate"].as_str().unwrap()).await;
    assert_eq!(accepted["accept"], Value::Bool(true), "{accepted}");
    // The approval let that connection in; the next one is checked again.
    let (_, next) = get(&s.server, &action_url(&s.srv, s.src, s.dst, "root")).await;
    assert!(next["holdAndDelegate"].is_string(), "{next}");
    assert_ne!(next["accept"], Value::Bool(true));
    s.srv.stop().await;
}
