//! Key expiry over the control protocol: the server decides a node's lifetime, and an
//! expired node is sent nothing.

mod common;

use std::time::Duration;

use common::{TestNode, TestServer};
use oxiscale::admin::ExpireNode;
use oxiscale::config::HumanDuration;
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cannot_choose_a_later_key_expiry_than_the_server_allows() {
    let server = TestServer::start_with(|c| {
        c.node.expiry = HumanDuration(Duration::from_secs(3600));
    })
    .await;
    let alice = server.user("alice").await;
    let key = server.key(alice, true, false, "1h").await;

    let mut late = TestNode::connect(&server.url, "late").await;
    let mut body = late.register_body(Some(&key));
    body["Expiry"] = json!("2099-01-01T00:00:00Z");
    let (_, resp) = late.post_json("/machine/register", body).await;
    assert_eq!(resp["MachineAuthorized"], true, "{resp}");

    // An earlier expiry than the server's is the client's to ask for.
    let soon = OffsetDateTime::now_utc() + time::Duration::minutes(10);
    let mut early = TestNode::connect(&server.url, "early").await;
    let mut body = early.register_body(Some(&key));
    body["Expiry"] = json!(soon.format(&Rfc3339).unwrap());
    let (_, resp) = early.post_json("/machine/register", body).await;
    assert_eq!(resp["MachineAuthorized"], true, "{resp}");

    let expiry_of = |name: &str| {
        let nodes = server.running().admin.list_nodes(None);
        let node = nodes.iter().find(|n| n.given_name == name).unwrap();
        OffsetDateTime::parse(node.expiry.as_deref().unwrap(), &Rfc3339).unwrap()
    };
    let limit = OffsetDateTime::now_utc() + time::Duration::hours(1);
    assert!(expiry_of("late") <= limit, "late: {}", expiry_of("late"));
    assert!(expiry_of("late") > limit - time::Duration::minutes(5));
    assert!((expiry_of("early") - soon).abs() < time::Duration::seconds(1));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_node_gets_no_map_and_its_open_stream_ends() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let key = server.key(alice, true, false, "1h").await;
    let mut a = TestNode::connect(&server.url, "a").await;
    a.register(Some(&key)).await;
    let mut b = TestNode::connect(&server.url, "b").await;
    b.register(Some(&key)).await;

    let mut stream = a.stream().await;
    let first = stream.next_within(Duration::from_secs(10)).await.unwrap();
    assert_eq!(first["Peers"].as_array().map(Vec::len), Some(1), "{first}");

    let id = server.node_id("a");
    server
        .running()
        .admin
        .expire_node(id, ExpireNode::default())
        .await
        .unwrap();
    // Whatever was already queued may still arrive; then the stream ends.
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while stream.next().await.is_some() {}
    })
    .await;
    assert!(ended.is_ok(), "the expired node's stream is still open");

    // A new poll, streaming or not, is refused and changes nothing.
    for streaming in [true, false] {
        let mut req = a.map_body(streaming, false, &["192.0.2.7:41641"]);
        req["Hostinfo"]["Hostname"] = json!("renamed-while-expired");
        let (status, body) = a.post_json("/machine/map", req).await;
        assert_eq!(status, 401, "{body}");
        assert!(body.to_string().contains("expired"), "{body}");
    }
    let nodes = server.running().admin.list_nodes(None);
    let node = nodes.iter().find(|n| n.id == id).unwrap();
    assert_eq!(node.name, "a", "{node:?}");
    server.stop().await;
}
