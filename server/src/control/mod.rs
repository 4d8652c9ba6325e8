//! The Tailscale control protocol as served inside a Noise connection: an HTTP/2 server
//! whose requests all come from one authenticated machine key.

pub mod admission;
pub mod device_attr;
pub mod errors;
pub mod one_at_a_time;
pub mod poll;
pub mod register;
pub mod ssh_check;

use std::convert::Infallible;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited, combinators::BoxBody};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use oxiscale_tailcfg::MachinePublic;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::connections::{Activity, Tracked};
use crate::mapper::MapConfig;
use crate::mapper::chunks::PeerChunks;
use crate::mapper::session::Sessions;
use crate::tailnet::Tailnet;
use admission::{Deferral, FullMapAdmission};

/// Bodies larger than this are refused: anyone who completes a handshake can send them.
pub const MAX_REQUEST_BODY: usize = 1 << 20;
/// Requests one control connection may have in progress at once: a client holds its map
/// stream and now and then sends an endpoint update or a register request beside it.
pub const MAX_STREAMS: u32 = 8;
/// Request headers of one control request.
const MAX_HEADER_BYTES: u32 = 16 * 1024;

pub type ControlBody = BoxBody<Bytes, Infallible>;

#[derive(Debug, Clone)]
pub struct ControlSettings {
    pub min_capability: u32,
    pub keep_alive: Duration,
    /// Upper bound of the random delay added to each keep-alive interval.
    pub keep_alive_jitter: Duration,
    /// A control connection's first request must begin this soon after its handshake.
    pub header_timeout: Duration,
    /// A control connection with no request in progress is closed after this (a client
    /// always holds its map stream open).
    pub idle_timeout: Duration,
    /// A request body that sends nothing for this long is cut off.
    pub body_timeout: Duration,
    /// Nodes may set their own posture attributes (`node.attributes_from_device`).
    pub attributes_from_device: bool,
}

impl ControlSettings {
    /// The connection bounds of `limits.*`.
    pub fn with_bounds(self, bounds: &crate::connections::Bounds) -> ControlSettings {
        ControlSettings {
            header_timeout: bounds.header_timeout,
            idle_timeout: bounds.idle_timeout,
            body_timeout: bounds.body_timeout,
            ..self
        }
    }
}

impl Default for ControlSettings {
    fn default() -> Self {
        ControlSettings {
            min_capability: oxiscale_tailcfg::MIN_CAPABILITY_VERSION,
            keep_alive: Duration::from_secs(50),
            keep_alive_jitter: Duration::from_secs(9),
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            body_timeout: Duration::from_secs(30),
            attributes_from_device: false,
        }
    }
}

/// Large first maps admitted into flight at once. At 10,000 nodes a full map is ≈ 0.9 MB
/// compressed, so this bounds a storm's maps in flight to ≈ 60 MB while keeping both cores
/// and the clients busy.
const FULL_MAPS_IN_FLIGHT: usize = 64;

/// Everything the control handlers share.
pub struct ControlPlane {
    pub tailnet: Arc<Tailnet>,
    pub sessions: Arc<Sessions>,
    map_config: RwLock<Arc<MapConfig>>,
    pub settings: ControlSettings,
    /// Flips to true when the server shuts down; streams end.
    pub shutdown: watch::Receiver<bool>,
    /// Bounds how many large full maps are rendered at once (one per core).
    pub full_map_permits: tokio::sync::Semaphore,
    /// When a large first map may start: after a burst of registrations, and at most
    /// FULL_MAPS_IN_FLIGHT at once.
    pub first_maps: FullMapAdmission,
    /// Pre-compressed peer chunks shared by every viewer's full map.
    pub peer_chunks: Arc<PeerChunks>,
    /// One-shot full maps in progress, one per node.
    pub one_shot_maps: one_at_a_time::OneAtATime,
    /// Tailscale SSH checks waiting for their owner, and recent passes.
    pub ssh_checks: Arc<ssh_check::SshChecks>,
}

impl ControlPlane {
    pub fn new(
        tailnet: Arc<Tailnet>,
        map_config: MapConfig,
        settings: ControlSettings,
        shutdown: watch::Receiver<bool>,
    ) -> Arc<ControlPlane> {
        let sessions = Sessions::start();
        tailnet.subscribe(sessions.clone());
        Arc::new(ControlPlane {
            tailnet,
            sessions,
            map_config: RwLock::new(Arc::new(map_config)),
            settings,
            shutdown,
            full_map_permits: tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, |n| n.get()),
            ),
            first_maps: FullMapAdmission::new(FULL_MAPS_IN_FLIGHT, Deferral::DEFAULT),
            peer_chunks: Arc::default(),
            one_shot_maps: Default::default(),
            ssh_checks: Arc::default(),
        })
    }

    pub fn map_config(&self) -> Arc<MapConfig> {
        self.map_config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the configuration part of maps (DNS edited at run time, DERP regions).
    pub fn set_map_config(&self, config: MapConfig) {
        *self.map_config.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(config);
    }

    /// Changes one part of the map configuration (DNS or DERP) and keeps the other, under
    /// the lock, so a DERP refresh and a DNS edit at the same moment both survive.
    pub fn update_map_config(&self, change: impl FnOnce(&mut MapConfig)) {
        let mut guard = self.map_config.write().unwrap_or_else(|p| p.into_inner());
        let mut config = MapConfig::clone(&guard);
        change(&mut config);
        *guard = Arc::new(config);
    }

    /// Serves HTTP/2 on an authenticated Noise stream until the client goes away, or has
    /// had nothing in progress for the idle timeout.
    pub async fn serve_connection<IO>(self: Arc<Self>, machine: MachinePublic, io: IO)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let activity = Activity::default();
        let service = {
            let cp = self.clone();
            let activity = activity.clone();
            hyper::service::service_fn(move |req: Request<Incoming>| {
                let cp = cp.clone();
                let in_progress = activity.start();
                async move {
                    let response = cp.route(machine, req).await;
                    // A map stream is in progress until its body ends.
                    Ok::<_, Infallible>(
                        response.map(|body| Tracked::new(body, in_progress).boxed()),
                    )
                }
            })
        };
        let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        builder
            .max_concurrent_streams(MAX_STREAMS)
            .max_header_list_size(MAX_HEADER_BYTES)
            .keep_alive_interval(None);
        let connection = builder.serve_connection(TokioIo::new(io), service);
        tokio::pin!(connection);
        let idle = activity.idle(self.settings.header_timeout, self.settings.idle_timeout);
        tokio::pin!(idle);
        let mut ending = false;
        loop {
            tokio::select! {
                served = connection.as_mut() => {
                    if let Err(e) = served {
                        debug!(machine = %machine.short(), error = %e, "control connection ended");
                    }
                    return;
                }
                why = &mut idle, if !ending => {
                    debug!(machine = %machine.short(), ?why, "closing an idle control connection");
                    connection.as_mut().graceful_shutdown();
                    ending = true;
                }
            }
        }
    }

    async fn route(
        self: Arc<Self>,
        machine: MachinePublic,
        req: Request<Incoming>,
    ) -> Response<ControlBody> {
        let path = req.uri().path().to_owned();
        let query = req.uri().query().map(str::to_owned);
        let method = req.method().clone();
        let body = match read_body(req, self.settings.body_timeout).await {
            Ok(b) => b,
            Err(resp) => return resp,
        };
        match path.as_str() {
            "/machine/register" => register::handle(&self, machine, &body).await,
            "/machine/map" => poll::handle(&self, machine, &body).await,
            p if p.starts_with("/machine/ssh/action/") => {
                ssh_check::handle(&self, machine, &method, p, query.as_deref()).await
            }
            "/machine/set-device-attr" => device_attr::handle(&self, machine, &method, &body).await,
            // Optional endpoints clients call now and then; failures are soft for them.
            "/machine/update-health" | "/machine/audit-log" => empty(StatusCode::OK),
            "/machine/set-dns"
            | "/machine/id-token"
            | "/machine/feature/query"
            | "/machine/whoami" => text(
                StatusCode::NOT_IMPLEMENTED,
                "not implemented by oxiscale yet",
            ),
            other => {
                info!(machine = %machine.short(), path = other, "unknown control path");
                text(StatusCode::NOT_FOUND, "not found")
            }
        }
    }
}

async fn read_body(
    req: Request<Incoming>,
    timeout: Duration,
) -> Result<Bytes, Response<ControlBody>> {
    let body = tower_http::timeout::TimeoutBody::new(timeout, req.into_body());
    match Limited::new(body, MAX_REQUEST_BODY).collect().await {
        Ok(b) => Ok(b.to_bytes()),
        Err(e) => {
            warn!(error = %e, "control request body refused");
            Err(text(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request body too large, too slow or unreadable",
            ))
        }
    }
}

pub fn body(bytes: impl Into<Bytes>) -> ControlBody {
    Full::new(bytes.into()).boxed()
}

pub fn empty(status: StatusCode) -> Response<ControlBody> {
    let mut r = Response::new(body(Bytes::new()));
    *r.status_mut() = status;
    r
}

pub fn text(status: StatusCode, message: &str) -> Response<ControlBody> {
    let mut r = Response::new(body(Bytes::copy_from_slice(message.as_bytes())));
    *r.status_mut() = status;
    r
}

pub fn json<T: serde::Serialize>(value: &T) -> Response<ControlBody> {
    let mut r = Response::new(body(
        serde_json::to_vec(value).expect("wire types serialise"),
    ));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}
