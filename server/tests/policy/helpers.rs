//! Policies, servers and map readers the policy tests share.

use crate::common::{MapStream, SECOND, TestNode, TestServer, config_for};
use oxiscale::config::Config;
use oxiscale::serve::start;
use oxiscale::tailnet::{Change, ChangeListener};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// alice's devices may reach bob's on port 80; nothing else is allowed.
pub(crate) const ALICE_TO_BOB_80: &str = r#"{
  // HuJSON: comments and trailing commas are fine
  "tagOwners": { "tag:server": ["alice@"] },
  "acls": [
    { "action": "accept", "src": ["alice@"], "dst": ["bob@:80"] },
  ],
}"#;

/// The other direction only.
pub(crate) const BOB_TO_ALICE_22: &str = r#"{
  "tagOwners": { "tag:server": ["alice@"] },
  "acls": [
    { "action": "accept", "src": ["bob@"], "dst": ["alice@:22"] },
  ],
}"#;

pub(crate) fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("oxiscale-policy-{}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub(crate) async fn start_with(
    dir: &Path,
    edit: impl FnOnce(&mut Config),
) -> anyhow::Result<TestServer> {
    let mut config = config_for(&dir.join("data"));
    edit(&mut config);
    let running = start(config).await?;
    let url = running.server_url.clone();
    Ok(TestServer {
        running: Some(running),
        dir: dir.to_owned(),
        url,
    })
}

/// Registers a node with extra Hostinfo fields; returns the node and the response.
pub(crate) async fn register_with(
    srv: &TestServer,
    hostname: &str,
    key: &str,
    hostinfo: Value,
) -> (TestNode, Value) {
    let mut node = TestNode::connect(&srv.url, hostname).await;
    let mut body = node.register_body(Some(key));
    for (k, v) in hostinfo.as_object().unwrap() {
        body["Hostinfo"][k] = v.clone();
    }
    let (status, resp) = node.post_json("/machine/register", body).await;
    assert_eq!(status, 200, "{resp}");
    (node, resp)
}

pub(crate) fn node_json(srv: &TestServer, name: &str) -> Value {
    let nodes = srv.running().admin.list_nodes(None);
    let n = nodes
        .iter()
        .find(|n| n.given_name == name)
        .unwrap_or_else(|| panic!("node {name} exists"));
    serde_json::to_value(n).unwrap()
}

pub(crate) fn ipv4(node: &Value) -> String {
    node["ip_addresses"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .find(|a| a.contains('.'))
        .unwrap()
        .to_owned()
}

/// Every destination IP of a map's PacketFilter.
pub(crate) fn filter_dsts(msg: &Value) -> Vec<String> {
    msg["PacketFilter"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|r| r["DstPorts"].as_array().cloned().unwrap_or_default())
        .map(|d| format!("{}:{}", d["IP"].as_str().unwrap_or(""), d["Ports"]["First"]))
        .collect()
}

pub(crate) fn peer_ids(msg: &Value) -> Vec<u64> {
    ids_in(msg, "Peers")
}

/// The IDs of the nodes in a map message's list `field` (`Peers`, `PeersChanged`).
pub(crate) fn ids_in(msg: &Value, field: &str) -> Vec<u64> {
    msg[field]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["ID"].as_u64())
        .collect()
}

/// AllowedIPs of the peer `name` in a map message (empty when it is not in it).
pub(crate) fn allowed_ips_of(msg: &Value, name: &str) -> Vec<String> {
    msg["PeersChanged"]
        .as_array()
        .into_iter()
        .chain(msg["Peers"].as_array())
        .flatten()
        .filter(|p| {
            p["Name"]
                .as_str()
                .is_some_and(|n| n.starts_with(&format!("{name}.")))
        })
        .flat_map(|p| p["AllowedIPs"].as_array().cloned().unwrap_or_default())
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect()
}

#[derive(Default)]
pub(crate) struct Recorder(Mutex<Vec<Change>>);

impl ChangeListener for Recorder {
    fn on_changes(&self, changes: &[Change]) {
        self.0.lock().unwrap().extend_from_slice(changes);
    }
}

impl Recorder {
    pub(crate) fn take(&self) -> Vec<Change> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

pub(crate) async fn alice_and_bob(srv: &TestServer) -> (TestNode, TestNode) {
    let alice = srv.user("alice").await;
    let bob = srv.user("bob").await;
    let ka = srv.preauth_key(Some(alice), &[]).await;
    let kb = srv.preauth_key(Some(bob), &[]).await;
    let (a, _) = register_with(srv, "laptop-a", &ka, json!({})).await;
    let (b, _) = register_with(srv, "server-b", &kb, json!({})).await;
    (a, b)
}

pub(crate) fn user_id(srv: &TestServer, name: &str) -> u64 {
    let users = srv.running().admin.list_users();
    users.into_iter().find(|u| u.name == name).unwrap().id
}

pub(crate) async fn first_map(node: &mut TestNode) -> (MapStream, Value) {
    let mut stream = node.stream().await;
    let first = stream.next_within(5 * SECOND).await.expect("full map");
    (stream, first)
}
