//! Test harness: the real server started in-process on loopback port 0 with a fresh data
//! directory, and protocol-level clients that speak ts2021 (Noise + HTTP/2) to it.

#![allow(dead_code)]

pub mod console;
pub mod headscale;

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use oxiscale::admin::{CreatePreAuthKey, CreateUser};
use oxiscale::config::Config;
use oxiscale::serve::{Running, start};
use oxiscale_noise::{ClientConnection, StaticKey};
use oxiscale_tailcfg::NodePublic;
use serde_json::{Value, json};

pub struct TestServer {
    pub running: Option<Running>,
    pub dir: PathBuf,
    pub url: String,
}

pub fn config_for(dir: &std::path::Path) -> Config {
    let mut c = Config {
        server_url: "http://127.0.0.1:0".into(),
        listen_addr: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.to_owned(),
        ..Config::default()
    };
    c.derp.server.stun_listen_addr = "127.0.0.1:0".parse().unwrap();
    c.dns.base_domain = "tail.test".into();
    c
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    /// Starts with the test defaults changed by `adjust`.
    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> TestServer {
        let dir = std::env::temp_dir().join(format!("oxiscale-test-{}", rand::random::<u64>()));
        Self::launch(dir, adjust).await
    }

    /// Starts on `dir`, reusing a previous server's data; `port` pins the listener.
    pub async fn start_in(dir: PathBuf, port: Option<u16>) -> TestServer {
        Self::launch(dir, |c| {
            if let Some(p) = port {
                c.listen_addr = format!("127.0.0.1:{p}").parse().unwrap();
            }
        })
        .await
    }

    async fn launch(dir: PathBuf, adjust: impl FnOnce(&mut Config)) -> TestServer {
        let mut config = config_for(&dir);
        adjust(&mut config);
        let running = start(config).await.expect("server starts");
        let url = running.server_url.clone();
        TestServer {
            running: Some(running),
            dir,
            url,
        }
    }

    /// Starts with the policy file `policy` in force (`policy.mode: file`); returns its path,
    /// to edit while the server runs.
    pub async fn with_policy_file(policy: &str) -> (TestServer, PathBuf) {
        let dir = std::env::temp_dir().join(format!("oxiscale-test-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("policy.hujson");
        std::fs::write(&path, policy).unwrap();
        let file = path.clone();
        let srv = Self::launch(dir, move |c| {
            c.policy.mode = oxiscale::config::PolicyMode::File;
            c.policy.path = Some(file);
        })
        .await;
        (srv, path)
    }

    /// A reusable pre-auth key for `user`'s devices (or, with `tags`, tagged ones), valid
    /// for an hour.
    pub async fn preauth_key(&self, user: Option<u64>, tags: &[&str]) -> String {
        self.running()
            .admin
            .create_preauth_key(CreatePreAuthKey {
                user,
                reusable: true,
                expiration: Some("1h".into()),
                tags: tags.iter().map(|t| t.to_string()).collect(),
                ..Default::default()
            })
            .await
            .expect("key created")
            .key
    }

    pub fn running(&self) -> &Running {
        self.running.as_ref().expect("server running")
    }

    /// The id of the node with this MagicDNS name.
    pub fn node_id(&self, given_name: &str) -> u64 {
        self.running()
            .admin
            .list_nodes(None)
            .into_iter()
            .find(|n| n.given_name == given_name)
            .unwrap_or_else(|| panic!("node {given_name} is registered"))
            .id
    }

    pub async fn restart(&mut self) {
        let port = self.running().http_addr.port();
        self.running
            .take()
            .unwrap()
            .stop()
            .await
            .expect("server stops");
        let again = TestServer::start_in(self.dir.clone(), Some(port)).await;
        self.running = again.running;
        self.url = again.url;
    }

    pub async fn user(&self, name: &str) -> u64 {
        self.running()
            .admin
            .create_user(CreateUser {
                name: name.into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .id
    }

    pub async fn key(
        &self,
        user: u64,
        reusable: bool,
        ephemeral: bool,
        expiration: &str,
    ) -> String {
        self.running()
            .admin
            .create_preauth_key(CreatePreAuthKey {
                user: Some(user),
                reusable,
                ephemeral,
                expiration: Some(expiration.into()),
                tags: vec![],
            })
            .await
            .unwrap()
            .key
    }

    /// Registers `count` nodes named `{prefix}{i}` with `key`, `at_once` at a time, and
    /// returns them in order.
    pub async fn register_nodes(
        &self,
        key: &str,
        prefix: &str,
        count: usize,
        at_once: usize,
    ) -> Vec<TestNode> {
        let mut nodes = Vec::with_capacity(count);
        for start in (0..count).step_by(at_once) {
            let joins = (start..count.min(start + at_once)).map(|i| {
                let (url, key, name) = (self.url.clone(), key.to_owned(), format!("{prefix}{i}"));
                tokio::spawn(async move {
                    let mut n = TestNode::connect(&url, &name).await;
                    n.register(Some(&key)).await;
                    n
                })
            });
            for j in futures_util::future::join_all(joins).await {
                nodes.push(j.expect("registering a node does not panic"));
            }
        }
        nodes
    }

    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await.unwrap();
        }
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

/// A simulated node: a machine key, a node key, and one Noise/HTTP-2 connection.
pub struct TestNode {
    pub url: String,
    pub machine: StaticKey,
    pub node_key: NodePublic,
    pub disco: String,
    pub hostname: String,
    pub conn: ClientConnection,
}

impl TestNode {
    pub async fn connect(url: &str, hostname: &str) -> TestNode {
        let machine = StaticKey::generate();
        let node_key = NodePublic(rand::random());
        Self::connect_as(url, hostname, machine, node_key).await
    }

    pub async fn connect_as(
        url: &str,
        hostname: &str,
        machine: StaticKey,
        node_key: NodePublic,
    ) -> TestNode {
        let conn = oxiscale_noise::connect(url, &machine, None)
            .await
            .expect("noise connection");
        let disco = format!("discokey:{}", hex::encode(rand::random::<[u8; 32]>()));
        TestNode {
            url: url.to_owned(),
            machine,
            node_key,
            disco,
            hostname: hostname.to_owned(),
            conn,
        }
    }

    pub async fn post(&mut self, path: &str, body: Value) -> hyper::Response<Incoming> {
        let req = Request::builder()
            .method(Method::POST)
            .uri(format!("{}{path}", self.url))
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap();
        self.conn.send_request.ready().await.unwrap();
        self.conn
            .send_request
            .send_request(req)
            .await
            .expect("request sent")
    }

    pub async fn post_json(&mut self, path: &str, body: Value) -> (u16, Value) {
        let resp = self.post(path, body).await;
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes)
                .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into())),
        )
    }

    pub fn register_body(&self, auth_key: Option<&str>) -> Value {
        let mut b = json!({
            "Version": 130,
            "NodeKey": self.node_key.to_string(),
            "OldNodeKey": NodePublic::default().to_string(),
            "Expiry": "0001-01-01T00:00:00Z",
            "Followup": "",
            "Hostinfo": {"Hostname": self.hostname, "OS": "linux", "IPNVersion": "1.90.9-test"},
            "Ephemeral": false,
        });
        if let Some(k) = auth_key {
            b["Auth"] = json!({ "AuthKey": k });
        }
        b
    }

    pub async fn register(&mut self, auth_key: Option<&str>) -> Value {
        let body = self.register_body(auth_key);
        let (status, v) = self.post_json("/machine/register", body).await;
        assert_eq!(status, 200, "register answers 200: {v}");
        v
    }

    pub fn map_body(&self, stream: bool, omit_peers: bool, endpoints: &[&str]) -> Value {
        json!({
            "Version": 130,
            "Compress": "zstd",
            "KeepAlive": true,
            "NodeKey": self.node_key.to_string(),
            "DiscoKey": self.disco,
            "Stream": stream,
            "OmitPeers": omit_peers,
            "Endpoints": endpoints,
            "Hostinfo": {"Hostname": self.hostname, "OS": "linux", "NetInfo": {"PreferredDERP": 999}},
        })
    }

    /// Opens the long poll; returns a reader of its messages.
    pub async fn stream(&mut self) -> MapStream {
        let body = self.map_body(true, false, &[]);
        let resp = self.post("/machine/map", body).await;
        assert_eq!(resp.status(), 200);
        MapStream {
            body: resp.into_body(),
            buf: Vec::new(),
        }
    }

    /// A lite update: new endpoints, no response body.
    pub async fn lite_update(&mut self, endpoints: &[&str]) -> u16 {
        let body = self.map_body(false, true, endpoints);
        self.post_json("/machine/map", body).await.0
    }
}

/// The decoded messages of a map stream.
pub struct MapStream {
    body: Incoming,
    buf: Vec<u8>,
}

impl MapStream {
    /// The next message, or `None` when the stream ends; panics after `timeout`.
    pub async fn next_within(&mut self, timeout: Duration) -> Option<Value> {
        tokio::time::timeout(timeout, self.next())
            .await
            .expect("a map message in time")
    }

    pub async fn next(&mut self) -> Option<Value> {
        loop {
            if self.buf.len() >= 4 {
                let len = u32::from_le_bytes(self.buf[..4].try_into().unwrap()) as usize;
                if self.buf.len() >= 4 + len {
                    let frame: Vec<u8> = self.buf.drain(..4 + len).skip(4).collect();
                    let json = zstd::bulk::decompress(&frame, 64 << 20).expect("zstd frame");
                    return Some(serde_json::from_slice(&json).expect("JSON map response"));
                }
            }
            match self.body.frame().await {
                Some(Ok(f)) => {
                    if let Ok(data) = f.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
                _ => return None,
            }
        }
    }

    /// Skips keep-alives and returns the first message for which `pred` holds.
    pub async fn until(&mut self, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let msg = tokio::time::timeout(left, self.next())
                .await
                .expect("the expected map message in time")
                .expect("stream still open");
            if pred(&msg) {
                return msg;
            }
        }
    }
}

pub const SECOND: Duration = Duration::from_secs(1);

/// The node ids in a map message's list (`Peers`, `PeersChanged`: nodes; `PeersRemoved`: ids).
pub fn ids(v: &Value) -> Vec<u64> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n["ID"].as_u64().or_else(|| n.as_u64()))
        .collect()
}
