//! Remote DERP maps (`derp.urls`): merged into every map, refreshed, pushed to streams.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use common::{SECOND, TestNode, TestServer};
use serde_json::{Value, json};

fn region(id: u64) -> Value {
    json!({ "Regions": { id.to_string(): {
        "RegionID": id, "RegionCode": format!("r{id}"), "RegionName": "Remote",
        "Nodes": [{ "Name": format!("{id}a"), "RegionID": id, "HostName": "derp.example.org", "DERPPort": 443 }]
    }}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_maps_are_merged_and_refreshes_reach_connected_nodes() {
    // A local stand-in for a DERP map URL whose content the test changes.
    let served = Arc::new(Mutex::new(region(900)));
    let app = {
        let served = served.clone();
        Router::new().route(
            "/derpmap",
            get(move || async move { axum::Json(served.lock().unwrap().clone()) }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/derpmap", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let server = TestServer::start_with(|c| {
        c.derp.urls = vec![url];
        c.derp.update_frequency = oxiscale::config::HumanDuration(Duration::from_secs(1));
    })
    .await;
    let alice = server.user("alice").await;
    let key = server.key(alice, true, false, "1h").await;
    let mut a = TestNode::connect(&server.url, "a").await;
    a.register(Some(&key)).await;
    let mut stream = a.stream().await;
    let first = stream.next_within(5 * SECOND).await.unwrap();
    let regions = first["DERPMap"]["Regions"].as_object().unwrap();
    assert!(
        regions.contains_key("900") && regions.contains_key("999"),
        "remote and embedded: {regions:?}"
    );

    *served.lock().unwrap() = region(901);
    let update = stream
        .until(10 * SECOND, |m| m.get("DERPMap").is_some())
        .await;
    let regions = update["DERPMap"]["Regions"].as_object().unwrap();
    assert!(
        regions.contains_key("901") && !regions.contains_key("900"),
        "{regions:?}"
    );
    assert!(regions.contains_key("999"));
    server.stop().await;
}
