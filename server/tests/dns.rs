//! DNS settings changed at run time: a save reaches open map streams at once as a new
//! `DNSConfig` (and new names when the base domain changes), bad settings change nothing,
//! and saved settings survive a restart, winning over the config file.

mod common;

use std::collections::BTreeMap;

use common::{SECOND, TestNode, TestServer};
use oxiscale::tailnet::dns::{DnsSettings, ExtraRecord};
use serde_json::json;

fn settings(base_domain: &str) -> DnsSettings {
    let mut split = BTreeMap::new();
    split.insert("corp.example".to_owned(), vec!["10.0.0.53".to_owned()]);
    DnsSettings {
        magic_dns: true,
        base_domain: base_domain.into(),
        override_local_dns: true,
        nameservers: vec!["9.9.9.9".into()],
        split,
        search_domains: vec!["corp.example".into()],
        extra_records: vec![ExtraRecord {
            name: "nas.corp.example".into(),
            record_type: "A".into(),
            value: "100.64.0.99".into(),
        }],
    }
}

fn assert_peer_named(msg: &serde_json::Value, host: &str, name: &str) {
    assert_eq!(peer_name(msg, host).as_deref(), Some(name), "{msg}");
}

/// Whether the message says node `id` is online (a peer entry or a patch).
fn is_online(msg: &serde_json::Value, id: u64) -> bool {
    ["Peers", "PeersChanged", "PeersChangedPatch"]
        .iter()
        .filter_map(|field| msg[*field].as_array())
        .flatten()
        .any(|p| (p["ID"] == id || p["NodeID"] == id) && p["Online"] == true)
}

/// The name of the peer with this host name in a map message (full or delta), if listed.
fn peer_name(msg: &serde_json::Value, host: &str) -> Option<String> {
    ["Peers", "PeersChanged"]
        .iter()
        .filter_map(|field| msg[*field].as_array())
        .flatten()
        .find(|p| p["Hostinfo"]["Hostname"] == host)
        .and_then(|p| p["Name"].as_str().map(str::to_owned))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dns_change_reaches_open_streams_and_survives_a_restart() {
    let mut server = TestServer::start().await;
    let alice = server.user("alice").await;
    let key = server.key(alice, true, false, "1h").await;
    let mut a = TestNode::connect(&server.url, "node-a").await;
    a.register(Some(&key)).await;
    let mut stream = a.stream().await;
    let first = stream.next_within(5 * SECOND).await.unwrap();
    assert_eq!(first["DNSConfig"]["Domains"], json!(["tail.test"]));
    assert_eq!(first["Node"]["Name"], "node-a.tail.test.");
    // A peer whose rendering is cached must change its name with the base domain too.
    // Once node-c is online (its last change), node-a's next full map renders node-c's
    // current version, which keeps that JSON.
    let mut c = TestNode::connect(&server.url, "node-c").await;
    c.register(Some(&key)).await;
    let _stream_c = c.stream().await;
    let c_id = server.node_id("node-c");
    stream.until(5 * SECOND, |m| is_online(m, c_id)).await;
    let mut stream = a.stream().await;
    let full = stream.next_within(5 * SECOND).await.unwrap();
    assert_peer_named(&full, "node-c", "node-c.tail.test.");

    // Bad input: refused with the reason, nothing stored, nothing sent.
    let mut bad = settings("tail2.test");
    bad.extra_records[0].value = "not-an-address".into();
    let err = server
        .running()
        .admin
        .set_dns(bad)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("not-an-address"), "{err}");
    assert_eq!(
        server.running().admin.get_dns().await.base_domain,
        "tail.test"
    );

    let saved = server
        .running()
        .admin
        .set_dns(settings("Tail2.Test."))
        .await
        .unwrap();
    assert_eq!(saved.base_domain, "tail2.test", "canonical form");
    // The new DNSConfig, the node's own new name and its peer's, in one message or more.
    let mut update = json!({});
    while update.get("DNSConfig").is_none()
        || update.get("Node").is_none()
        || peer_name(&update, "node-c").is_none()
    {
        let msg = stream.next_within(5 * SECOND).await.expect("stream open");
        for field in ["DNSConfig", "Node", "PeersChanged"] {
            if msg[field].is_object() || msg[field].is_array() {
                update[field] = msg[field].clone();
            }
        }
    }
    let dns = &update["DNSConfig"];
    assert_eq!(
        dns["Domains"],
        json!(["tail2.test", "corp.example"]),
        "{update}"
    );
    assert_eq!(dns["Resolvers"], json!([{"Addr": "9.9.9.9"}]));
    assert_eq!(
        dns["Routes"]["corp.example."],
        json!([{"Addr": "10.0.0.53"}])
    );
    assert_eq!(
        dns["ExtraRecords"],
        json!([{"Name": "nas.corp.example", "Type": "A", "Value": "100.64.0.99"}])
    );
    assert!(dns["Proxied"].as_bool().unwrap());
    // The base domain changed, so the node's own name did too, and its peer's.
    assert_eq!(update["Node"]["Name"], "node-a.tail2.test.");
    assert_peer_named(&update, "node-c", "node-c.tail2.test.");
    // A new stream's full map shows the new names as well.
    let mut again = a.stream().await;
    let full = again.next_within(5 * SECOND).await.unwrap();
    assert_peer_named(&full, "node-c", "node-c.tail2.test.");
    drop(again);

    // After a restart the stored settings win over the config file's (tail.test).
    drop(stream);
    drop(a);
    server.restart().await;
    assert_eq!(
        server.running().admin.get_dns().await,
        saved,
        "stored settings read back"
    );
    let mut b = TestNode::connect(&server.url, "node-b").await;
    b.register(Some(&key)).await;
    let mut stream_b = b.stream().await;
    let full = stream_b.next_within(5 * SECOND).await.unwrap();
    assert_eq!(
        full["DNSConfig"]["Domains"],
        json!(["tail2.test", "corp.example"])
    );
    assert_eq!(full["Node"]["Name"], "node-b.tail2.test.");
    assert_eq!(full["Domain"], "tail2.test");
    server.stop().await;
}
