//! The admin REST API (`/api/v1/…`) over HTTP, as headscale's clients call it.

mod common;

use common::{TestNode, TestServer};
use oxiscale::admin::CreateApiKey;
use serde_json::Value;

async fn api_key(server: &TestServer) -> String {
    server
        .running()
        .admin
        .create_api_key(CreateApiKey::default())
        .await
        .unwrap()
        .key
        .unwrap()
}

async fn post(server: &TestServer, key: &str, path: &str) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(format!("{}{path}", server.url))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_expiry_follows_headscales_query_parameters() {
    let server = TestServer::start().await;
    let key = api_key(&server).await;
    let alice = server.user("alice").await;
    let auth = server.key(alice, true, false, "1h").await;
    let mut a = TestNode::connect(&server.url, "a").await;
    a.register(Some(&auth)).await;
    let id = server.node_id("a");
    let expired = |server: &TestServer| {
        let nodes = server.running().admin.list_nodes(None);
        let n = nodes.iter().find(|n| n.id == id).unwrap();
        (n.expired, n.expiry.clone())
    };

    // `disableExpiry=true` means "never expires": it once expired the node at once.
    let (status, body) = post(
        &server,
        &key,
        &format!("/api/v1/node/{id}/expire?disableExpiry=true"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(expired(&server), (false, None));

    // A future `expiry` is kept as a future expiry.
    let (status, body) = post(
        &server,
        &key,
        &format!("/api/v1/node/{id}/expire?expiry=2099-01-01T00:00:00Z"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        expired(&server),
        (false, Some("2099-01-01T00:00:00Z".to_owned()))
    );

    // A bad time is refused and changes nothing.
    let (status, _) = post(
        &server,
        &key,
        &format!("/api/v1/node/{id}/expire?expiry=tomorrow"),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        expired(&server),
        (false, Some("2099-01-01T00:00:00Z".to_owned()))
    );

    // No parameters: expire now.
    let (status, _) = post(&server, &key, &format!("/api/v1/node/{id}/expire")).await;
    assert_eq!(status, 200);
    assert!(expired(&server).0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiration_past_the_calendar_is_a_clear_error() {
    let server = TestServer::start().await;
    let key = api_key(&server).await;
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1/apikey", server.url))
        .bearer_auth(&key)
        .json(&serde_json::json!({ "expiration": "10000y" }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let text = resp.text().await.unwrap();
    assert!(text.contains("too far in the future"), "{text}");
    // The server still answers.
    assert_eq!(server.running().admin.list_api_keys().len(), 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_node_is_approved_over_rest() {
    let server = TestServer::start_with(|c| c.node.approval_required = true).await;
    let key = api_key(&server).await;
    let alice = server.user("alice").await;
    let auth = server.key(alice, true, false, "1h").await;
    let mut a = TestNode::connect(&server.url, "a").await;
    a.register(Some(&auth)).await;
    let id = server.node_id("a");
    let path = format!("/api/v1/node/{id}/approve");

    // The node list says it waits.
    let list = reqwest::Client::new()
        .get(format!("{}/api/v1/node", server.url))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(list["nodes"][0]["approved"], false, "{list}");

    // An API key is needed.
    let (status, _) = post(&server, "oxs-not-a-key", &path).await;
    assert_eq!(status, 401);
    assert!(!server.running().admin.node(id).unwrap().approved);

    let (status, body) = post(&server, &key, &path).await;
    assert_eq!(status, 200, "{body}");
    // headscale's envelope and id form; `approved` is oxiscale's field.
    assert_eq!(body["node"]["id"], id.to_string());
    assert_eq!(body["node"]["approved"], true, "{body}");
    assert!(server.running().admin.node(id).unwrap().approved);
    // Again: the same answer, nothing changes.
    let (status, body) = post(&server, &key, &path).await;
    assert_eq!(
        (status, &body["node"]["approved"]),
        (200, &Value::Bool(true))
    );

    let (status, body) = post(&server, &key, "/api/v1/node/999/approve").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["code"], 5, "{body}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_readiness_answer_without_a_key() {
    let server = TestServer::start().await;
    for (path, field, want) in [
        ("/health", "status", Value::from("pass")),
        ("/ready", "ready", Value::from(true)),
    ] {
        let resp = reqwest::get(format!("{}{path}", server.url)).await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body[field], want, "{path}: {body}");
    }
    server.stop().await;
}

/// headscale's `pictureUrl` on user creation: an http(s) URL is kept and shown as
/// `profilePicUrl`; anything else (a `javascript:` URL) is refused and creates nobody.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_is_created_with_a_picture_url_and_a_script_url_is_refused() {
    let server = TestServer::start().await;
    let key = api_key(&server).await;
    let create = |body: Value| {
        let request = reqwest::Client::new()
            .post(format!("{}/api/v1/user", server.url))
            .bearer_auth(&key)
            .json(&body);
        async move {
            let resp = request.send().await.unwrap();
            (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
        }
    };
    let (status, body) = create(serde_json::json!({
        "name": "alice", "pictureUrl": "https://pics.example.com/alice.png"
    }))
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["user"]["profilePicUrl"],
        "https://pics.example.com/alice.png"
    );
    let (status, body) = create(serde_json::json!({
        "name": "mallory", "pictureUrl": "javascript:alert(1)"
    }))
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("picture URL"),
        "{body}"
    );
    let names: Vec<_> = server
        .running()
        .admin
        .list_users()
        .into_iter()
        .map(|u| u.name)
        .collect();
    assert_eq!(names, ["alice"]);
    server.stop().await;
}
