//! Simulated Tailscale nodes for tests against a server in another process: each has its
//! machine and node keys and speaks ts2021 (Noise + HTTP/2). Every step may fail, since the
//! server is killed under them, and says how instead of panicking.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use oxiscale_noise::StaticKey;
use oxiscale_tailcfg::{MachinePublic, NodePublic};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

/// Longest any one request may take; a server that hangs is a failure, not a stuck test.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a step failed: the server answered with an error status, or there was no answer.
#[derive(Debug, Clone)]
pub enum Failure {
    Status(u16, String),
    NoAnswer(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Status(status, body) => write!(f, "answered {status}: {body}"),
            Failure::NoAnswer(why) => write!(f, "no answer: {why}"),
        }
    }
}

/// What a `/machine/register` answered with 200.
#[derive(Debug, Clone, Default)]
pub struct Registered {
    pub machine_authorized: bool,
    pub auth_url: String,
    pub error: String,
}

/// The node's own entry in a map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelfNode {
    pub key: String,
    pub addresses: Vec<String>,
}

pub struct SimNode {
    pub machine: StaticKey,
    pub node_key: NodePublic,
    disco: String,
    pub hostname: String,
}

/// One Noise + HTTP/2 connection; dropping it closes the socket.
pub struct Link {
    url: String,
    sender: SendRequest<Full<Bytes>>,
    driver: JoinHandle<Result<(), hyper::Error>>,
}

impl Drop for Link {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl SimNode {
    pub fn new(hostname: String) -> SimNode {
        SimNode {
            machine: StaticKey::generate(),
            node_key: NodePublic(StaticKey::generate().public().0),
            disco: format!("discokey:{}", hex::encode(rand::random::<[u8; 32]>())),
            hostname,
        }
    }

    /// Dials the server, which must still have the Noise key `server` (as a client that
    /// cached it after its first contact).
    pub async fn connect(&self, url: &str, server: MachinePublic) -> Result<Link, Failure> {
        let conn = tokio::time::timeout(
            REQUEST_TIMEOUT,
            oxiscale_noise::connect(url, &self.machine, Some(server)),
        )
        .await
        .map_err(|_| Failure::NoAnswer("connect timed out".into()))?
        .map_err(|e| Failure::NoAnswer(e.to_string()))?;
        Ok(Link {
            url: url.to_owned(),
            sender: conn.send_request,
            driver: conn.driver,
        })
    }

    fn hostinfo(&self) -> Value {
        json!({"Hostname": self.hostname, "OS": "linux", "IPNVersion": "1.90.9-test",
               "NetInfo": {"PreferredDERP": 999}})
    }

    /// A register request: with a pre-auth key, or none (a client that starts again and
    /// asks whether its node key is still good).
    fn register_body(&self, auth_key: Option<&str>) -> Value {
        let mut body = json!({
            "Version": 130,
            "NodeKey": self.node_key.to_string(),
            "OldNodeKey": NodePublic::default().to_string(),
            "Expiry": "0001-01-01T00:00:00Z",
            "Followup": "",
            "Hostinfo": self.hostinfo(),
            "Ephemeral": false,
        });
        if let Some(key) = auth_key {
            body["Auth"] = json!({ "AuthKey": key });
        }
        body
    }

    fn map_body(&self, stream: bool) -> Value {
        json!({
            "Version": 130,
            "Compress": "zstd",
            "KeepAlive": true,
            "NodeKey": self.node_key.to_string(),
            "DiscoKey": self.disco,
            "Stream": stream,
            "OmitPeers": false,
            "Endpoints": ["192.0.2.1:41641"],
            "Hostinfo": self.hostinfo(),
        })
    }
}

impl Link {
    async fn post(&mut self, path: &str, body: Value) -> Result<http::Response<Incoming>, Failure> {
        let req = Request::post(format!("{}{path}", self.url))
            .body(Full::new(Bytes::from(body.to_string())))
            .expect("request head is valid");
        let send = async {
            self.sender.ready().await?;
            self.sender.send_request(req).await
        };
        let res = tokio::time::timeout(REQUEST_TIMEOUT, send)
            .await
            .map_err(|_| Failure::NoAnswer(format!("{path} timed out")))?
            .map_err(|e| Failure::NoAnswer(format!("{path}: {e}")))?;
        if res.status() != StatusCode::OK {
            let status = res.status().as_u16();
            let body = read_all(res.into_body(), 64 << 10)
                .await
                .unwrap_or_default();
            return Err(Failure::Status(
                status,
                String::from_utf8_lossy(&body).into_owned(),
            ));
        }
        Ok(res)
    }

    pub async fn register(
        &mut self,
        node: &SimNode,
        auth_key: Option<&str>,
    ) -> Result<Registered, Failure> {
        let res = self
            .post("/machine/register", node.register_body(auth_key))
            .await?;
        let body = read_all(res.into_body(), 1 << 20).await?;
        let v: Value = serde_json::from_slice(&body)
            .map_err(|e| Failure::NoAnswer(format!("register answer is not JSON: {e}")))?;
        let text = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
        Ok(Registered {
            machine_authorized: v["MachineAuthorized"].as_bool().unwrap_or(false),
            auth_url: text("AuthURL"),
            error: text("Error"),
        })
    }

    /// One full map, not streamed; returns the node's own entry.
    pub async fn map_once(&mut self, node: &SimNode) -> Result<SelfNode, Failure> {
        let res = self.post("/machine/map", node.map_body(false)).await?;
        let body = read_all(res.into_body(), 256 << 20).await?;
        let json = first_message(&body)
            .ok_or_else(|| Failure::NoAnswer("map answer is not a framed zstd message".into()))?;
        #[derive(serde::Deserialize)]
        struct Msg {
            #[serde(rename = "Node")]
            node: Node,
        }
        #[derive(serde::Deserialize)]
        struct Node {
            #[serde(rename = "Key")]
            key: String,
            #[serde(rename = "Addresses", default)]
            addresses: Vec<String>,
        }
        let msg: Msg = serde_json::from_slice(&json)
            .map_err(|e| Failure::NoAnswer(format!("map without the node's own entry: {e}")))?;
        Ok(SelfNode {
            key: msg.node.key,
            addresses: msg.node.addresses,
        })
    }

    /// Opens the map long poll; the body is the stream.
    pub async fn open_stream(&mut self, node: &SimNode) -> Result<Incoming, Failure> {
        Ok(self
            .post("/machine/map", node.map_body(true))
            .await?
            .into_body())
    }
}

async fn read_all(body: Incoming, limit: usize) -> Result<Bytes, Failure> {
    Limited::new(body, limit)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .map_err(|e| Failure::NoAnswer(format!("reading the answer: {e}")))
}

/// The JSON of the first length-prefixed zstd message in `bytes`.
fn first_message(bytes: &[u8]) -> Option<Vec<u8>> {
    let len = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
    let frame = bytes.get(4..4 + len)?;
    zstd::stream::decode_all(frame).ok()
}

/// Waits until the stream has delivered one whole message (the node's first map), without
/// decoding it: 1,000 streams each receiving 1,000 peers would otherwise keep the test's
/// own cores busy. Returns the bytes that came after it.
pub async fn first_map(body: &mut Incoming) -> Result<Vec<u8>, Failure> {
    let mut buf = Vec::new();
    loop {
        if let Some(len) = whole_message(&buf) {
            return Ok(buf.split_off(len));
        }
        read_more(body, &mut buf).await?;
    }
}

/// Reads messages off a stream until one mentions `needle` (decoded, searched as JSON
/// text); `buf` holds what was read past the previous message.
pub async fn until_mentions(
    body: &mut Incoming,
    mut buf: Vec<u8>,
    needle: &str,
) -> Result<(), Failure> {
    loop {
        while let Some(len) = whole_message(&buf) {
            let message: Vec<u8> = buf.drain(..len).collect();
            let json = first_message(&message)
                .ok_or_else(|| Failure::NoAnswer("a map message is not zstd".into()))?;
            if String::from_utf8_lossy(&json).contains(needle) {
                return Ok(());
            }
        }
        read_more(body, &mut buf).await?;
    }
}

/// The length (with its 4-byte prefix) of the first message in `buf`, once it is whole.
fn whole_message(buf: &[u8]) -> Option<usize> {
    let len = u32::from_le_bytes(buf.get(..4)?.try_into().ok()?) as usize;
    (buf.len() >= 4 + len).then_some(4 + len)
}

async fn read_more(body: &mut Incoming, buf: &mut Vec<u8>) -> Result<(), Failure> {
    match body.frame().await {
        Some(Ok(frame)) => {
            if let Ok(data) = frame.into_data() {
                buf.extend_from_slice(&data);
            }
            Ok(())
        }
        Some(Err(e)) => Err(Failure::NoAnswer(format!("map stream: {e}"))),
        None => Err(Failure::NoAnswer("map stream ended".into())),
    }
}

/// Reads the stream until it ends (the server went away).
pub async fn drain(body: &mut Incoming) {
    while let Some(Ok(_)) = body.frame().await {}
}
