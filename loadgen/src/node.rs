//! One simulated node: its keys, its Noise/HTTP/2 connection, register, the map stream and
//! lite updates, with the little state the scenarios read.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use oxiscale_noise::StaticKey;
use oxiscale_tailcfg::{DiscoPublic, MachinePublic, NodePublic};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::task::AbortHandle;

use crate::frame::{self, FrameDecoder};
use crate::probe::Probes;

const VERSION: u32 = 130;
const MAX_REGISTER_BODY: usize = 1 << 20;
/// Home DERP region the simulated nodes claim (any non-zero region works for the server).
const PREFERRED_DERP: u32 = 999;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("connecting: {0}")]
    Connect(#[from] oxiscale_noise::ClientError),
    #[error("{what}: HTTP/2: {source}")]
    Http {
        what: &'static str,
        source: hyper::Error,
    },
    #[error("{what}: server answered {status}: {body}")]
    Status {
        what: &'static str,
        status: StatusCode,
        body: String,
    },
    #[error("register refused: {0}")]
    Refused(String),
    #[error("register response: {0}")]
    BadResponse(String),
    #[error("not connected")]
    NotConnected,
}

/// What every node shares: where the server is and how to decode.
pub struct Ctx {
    pub url: String,
    pub server_pub: MachinePublic,
    pub auth_key: String,
    pub start: Instant,
    pub probes: Probes,
    /// Compressed map messages up to this size are decoded whole.
    pub collect_limit: usize,
    pub decode_errors: AtomicU64,
}

impl Ctx {
    pub fn micros(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }
}

struct Live {
    sender: SendRequest<Full<Bytes>>,
    driver: AbortHandle,
    reader: Option<AbortHandle>,
}

pub struct SimNode {
    pub index: usize,
    machine: StaticKey,
    pub node_key: NodePublic,
    disco_key: DiscoPublic,
    pub ephemeral: bool,
    /// Server-assigned ID, from `Node.ID` of the first full map (0 = not yet known).
    pub id: AtomicU64,
    /// Its IPv4 address, from the same map (0 = not yet known).
    ipv4: AtomicU32,
    /// Micros since `Ctx::start` of the latest full map; 0 = none on the current stream.
    pub full_map_at: AtomicU64,
    pub full_maps: AtomicU64,
    pub messages: AtomicU64,
    pub keep_alives: AtomicU64,
    pub bytes: AtomicU64,
    pub head_only: AtomicU64,
    /// Deltas counted but not decoded: nothing was listening for them (see `handle`).
    pub undecoded: AtomicU64,
    /// Peer count of the latest fully decoded full map.
    pub last_peer_count: AtomicU64,
    endpoint_seq: AtomicU32,
    live: Mutex<Option<Live>>,
    /// Hostname and advertised routes (`Hostinfo.RoutableIPs`); `None`: `bench-<index>`.
    identity: Option<Identity>,
    /// Called with the JSON of every fully decoded map message (the hold mode reads its own
    /// node from it).
    on_map: Option<MapObserver>,
}

/// Who a node claims to be, for the hold mode.
#[derive(Debug, Clone)]
pub struct Identity {
    pub hostname: String,
    pub routes: Vec<String>,
}

pub type MapObserver = Box<dyn Fn(&[u8]) + Send + Sync>;

#[derive(Deserialize)]
struct RegisterReply {
    #[serde(rename = "Error", default)]
    error: String,
    #[serde(rename = "MachineAuthorized", default)]
    machine_authorized: bool,
    #[serde(rename = "NodeKeyExpired", default)]
    node_key_expired: bool,
}

/// Compressed messages up to this size are always decoded; a keep-alive is ~30 bytes.
const ALWAYS_DECODED_LEN: usize = 64;

fn public_of(key: &StaticKey) -> [u8; 32] {
    key.public().0
}

impl SimNode {
    pub fn new(index: usize, ephemeral: bool) -> SimNode {
        SimNode {
            index,
            machine: StaticKey::generate(),
            node_key: NodePublic(public_of(&StaticKey::generate())),
            disco_key: DiscoPublic(public_of(&StaticKey::generate())),
            ephemeral,
            id: AtomicU64::new(0),
            ipv4: AtomicU32::new(0),
            full_map_at: AtomicU64::new(0),
            full_maps: AtomicU64::new(0),
            messages: AtomicU64::new(0),
            keep_alives: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            head_only: AtomicU64::new(0),
            undecoded: AtomicU64::new(0),
            last_peer_count: AtomicU64::new(0),
            endpoint_seq: AtomicU32::new(0),
            live: Mutex::new(None),
            identity: None,
            on_map: None,
        }
    }

    /// A node with its own hostname and advertised routes whose map messages go to `on_map`.
    pub fn with_identity(identity: Identity, on_map: MapObserver) -> SimNode {
        SimNode {
            identity: Some(identity),
            on_map: Some(on_map),
            ..SimNode::new(0, false)
        }
    }

    pub fn ipv4(&self) -> Option<Ipv4Addr> {
        match self.ipv4.load(Ordering::Relaxed) {
            0 => None,
            ip => Some(Ipv4Addr::from(ip)),
        }
    }

    fn hostinfo(&self) -> Value {
        let (hostname, routes) = match &self.identity {
            Some(id) => (id.hostname.clone(), id.routes.clone()),
            None => (format!("bench-{}", self.index), Vec::new()),
        };
        let mut hostinfo = json!({
            "IPNVersion": "1.90.9-loadgen",
            "OS": "linux",
            "Hostname": hostname,
            "GoArch": "amd64",
            "NetInfo": {"PreferredDERP": PREFERRED_DERP, "WorkingUDP": true},
        });
        if !routes.is_empty() {
            hostinfo["RoutableIPs"] = json!(routes);
        }
        hostinfo
    }

    fn endpoints(&self) -> Value {
        let seq = self.endpoint_seq.load(Ordering::Relaxed);
        let i = self.index;
        json!([
            format!(
                "198.51.{}.{}:{}",
                (i >> 8) & 0xff,
                i & 0xff,
                41641 + (seq % 20000)
            ),
            format!("127.0.0.1:{}", 10000 + (i % 50000)),
        ])
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Live>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn sender(&self) -> Result<SendRequest<Full<Bytes>>, NodeError> {
        self.lock()
            .as_ref()
            .map(|l| l.sender.clone())
            .ok_or(NodeError::NotConnected)
    }

    /// Opens the Noise + HTTP/2 connection (dropping any previous one). Returns its duration.
    pub async fn connect(&self, ctx: &Ctx) -> Result<Duration, NodeError> {
        self.disconnect();
        let t = Instant::now();
        let conn = oxiscale_noise::connect(&ctx.url, &self.machine, Some(ctx.server_pub)).await?;
        *self.lock() = Some(Live {
            sender: conn.send_request,
            driver: conn.driver.abort_handle(),
            reader: None,
        });
        Ok(t.elapsed())
    }

    /// Drops the connection: the TCP socket closes, the server sees the stream end.
    pub fn disconnect(&self) {
        if let Some(live) = self.lock().take() {
            live.driver.abort();
            if let Some(r) = live.reader {
                r.abort();
            }
        }
        self.full_map_at.store(0, Ordering::Release);
    }

    async fn post(
        &self,
        ctx: &Ctx,
        what: &'static str,
        path: &str,
        body: Value,
    ) -> Result<http::Response<Incoming>, NodeError> {
        let mut sender = self.sender()?;
        let req = Request::post(format!("{}{path}", ctx.url))
            .header("ts-lb", self.node_key.to_string())
            .body(Full::new(Bytes::from(
                serde_json::to_vec(&body).expect("JSON values serialise"),
            )))
            .expect("request head is valid");
        sender
            .ready()
            .await
            .map_err(|source| NodeError::Http { what, source })?;
        let res = sender
            .send_request(req)
            .await
            .map_err(|source| NodeError::Http { what, source })?;
        if res.status() != StatusCode::OK {
            let status = res.status();
            let body = read_small(res.into_body()).await;
            return Err(NodeError::Status { what, status, body });
        }
        Ok(res)
    }

    /// `POST /machine/register` with the pre-auth key. Returns its round-trip time.
    pub async fn register(&self, ctx: &Ctx) -> Result<Duration, NodeError> {
        let t = Instant::now();
        let body = json!({
            "Version": VERSION,
            "NodeKey": self.node_key,
            "OldNodeKey": NodePublic([0; 32]),
            "Auth": {"AuthKey": ctx.auth_key},
            "Expiry": "0001-01-01T00:00:00Z",
            "Followup": "",
            "Hostinfo": self.hostinfo(),
            "Ephemeral": self.ephemeral,
            "NodeKeySignature": null,
        });
        let res = self
            .post(ctx, "register", "/machine/register", body)
            .await?;
        let reply = read_register_reply(res).await?;
        if !reply.error.is_empty() {
            return Err(NodeError::Refused(reply.error));
        }
        if !reply.machine_authorized {
            return Err(NodeError::BadResponse("machine not authorized".into()));
        }
        Ok(t.elapsed())
    }

    /// Logs out (expiry in the past): an ephemeral node is deleted, others expire; either way
    /// they leave their peers' maps.
    pub async fn logout(&self, ctx: &Ctx) -> Result<(), NodeError> {
        let body = json!({
            "Version": VERSION,
            "NodeKey": self.node_key,
            "OldNodeKey": NodePublic([0; 32]),
            "Expiry": "1970-01-01T00:02:03Z",
            "Followup": "",
            "Hostinfo": self.hostinfo(),
            "Ephemeral": self.ephemeral,
        });
        let res = self.post(ctx, "logout", "/machine/register", body).await?;
        let reply = read_register_reply(res).await?;
        if !reply.node_key_expired {
            return Err(NodeError::BadResponse(
                "logout did not expire the node key".into(),
            ));
        }
        Ok(())
    }

    /// Opens the map long poll and starts reading it in the background.
    pub async fn open_stream(self: &Arc<Self>, ctx: &Arc<Ctx>) -> Result<(), NodeError> {
        let body = self.map_request(true);
        let res = self.post(ctx, "map stream", "/machine/map", body).await?;
        let node = self.clone();
        let ctx2 = ctx.clone();
        let reader = tokio::spawn(async move { node.read_stream(&ctx2, res.into_body()).await });
        if let Some(live) = self.lock().as_mut() {
            live.reader = Some(reader.abort_handle());
        }
        Ok(())
    }

    /// A lite map request (`OmitPeers`, no stream) announcing new endpoints.
    pub async fn bump_endpoints(&self, ctx: &Ctx) -> Result<(), NodeError> {
        self.endpoint_seq.fetch_add(1, Ordering::Relaxed);
        let body = self.map_request(false);
        let res = self.post(ctx, "lite update", "/machine/map", body).await?;
        let _ = read_small(res.into_body()).await;
        Ok(())
    }

    fn map_request(&self, stream: bool) -> Value {
        json!({
            "Version": VERSION,
            "Compress": "zstd",
            "KeepAlive": true,
            "NodeKey": self.node_key,
            "DiscoKey": self.disco_key,
            "Stream": stream,
            "OmitPeers": !stream,
            "Hostinfo": self.hostinfo(),
            "Endpoints": self.endpoints(),
            "EndpointTypes": [1, 1],
        })
    }

    async fn read_stream(&self, ctx: &Ctx, mut body: Incoming) {
        let mut decoder = FrameDecoder::new(ctx.collect_limit);
        let mut messages = Vec::new();
        let mut first = true;
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { break };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if decoder.feed(&data, &mut messages).is_err() {
                ctx.decode_errors.fetch_add(1, Ordering::Relaxed);
                break;
            }
            for raw in messages.drain(..) {
                self.handle(ctx, raw, first);
                first = false;
            }
        }
        // The stream ended: this node no longer has a current map.
        self.full_map_at.store(0, Ordering::Release);
    }

    fn handle(&self, ctx: &Ctx, raw: frame::RawMessage, is_full_map: bool) {
        self.messages.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(raw.wire_len as u64, Ordering::Relaxed);
        // The generator shares the machine's cores with the server it measures. Decoding
        // every delta of every simulated node (zstd + JSON of O(N²) peers in a join) took
        // more of them than the server's own fan-out did, so a delta is only decoded when an
        // open probe may be waiting for it. Full maps (the node learns its ID from them),
        // small messages (keep-alives are counted) and the hold mode's node are always decoded.
        let needed = is_full_map
            || raw.data.len() <= ALWAYS_DECODED_LEN
            || !ctx.probes.is_empty()
            || self.on_map.is_some();
        if !needed {
            self.undecoded.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let (msg, json) = if raw.head_only {
            self.head_only.fetch_add(1, Ordering::Relaxed);
            (frame::parse_head(&raw.data), Vec::new())
        } else {
            match frame::decompress(&raw.data).and_then(|j| frame::parse(&j).map(|m| (m, j))) {
                Ok(v) => v,
                Err(_) => {
                    ctx.decode_errors.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
        };
        if msg.keep_alive {
            self.keep_alives.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(id) = msg.self_id {
            self.id.store(id, Ordering::Relaxed);
        }
        if let Some(ip) = msg.self_ipv4 {
            self.ipv4.store(ip.into(), Ordering::Relaxed);
        }
        if let Some(n) = msg.peer_count {
            self.last_peer_count.store(n as u64, Ordering::Relaxed);
        }
        if !raw.head_only && !ctx.probes.is_empty() {
            ctx.probes.observe(self.index, &msg, raw.wire_len, &json);
        }
        if let Some(on_map) = &self.on_map
            && !raw.head_only
        {
            on_map(&json);
        }
        if is_full_map {
            self.full_maps.fetch_add(1, Ordering::Relaxed);
            // Never store 0: it means "no map".
            self.full_map_at
                .store(ctx.micros().max(1), Ordering::Release);
        }
    }
}

async fn read_small(body: Incoming) -> String {
    match Limited::new(body, 64 << 10).collect().await {
        Ok(b) => String::from_utf8_lossy(&b.to_bytes()).into_owned(),
        Err(e) => format!("<unreadable body: {e}>"),
    }
}

async fn read_register_reply(res: http::Response<Incoming>) -> Result<RegisterReply, NodeError> {
    let body = Limited::new(res.into_body(), MAX_REGISTER_BODY)
        .collect()
        .await
        .map_err(|e| NodeError::BadResponse(e.to_string()))?
        .to_bytes();
    serde_json::from_slice(&body).map_err(|e| NodeError::BadResponse(e.to_string()))
}
