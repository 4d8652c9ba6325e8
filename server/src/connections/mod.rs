//! Serving the main listener, over TCP or TLS, within bounds: connections per address, the
//! time to a request header and between requests, HTTP/2 streams and header sizes, request
//! bodies that stall. hyper's connection builders do the protocol work; this module decides
//! which connections are taken and how long they may stay (axum's own `serve` bounds none
//! of it, so idle sockets were held forever).

pub mod activity;
pub mod per_address;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::serve::Listener;
use hyper::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use ipnet::IpNet;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tower::ServiceExt;
use tower_http::timeout::TimeoutBody;
use tracing::debug;

pub use activity::{Activity, Idle, InProgress, Tracked};
use per_address::{Admitted, PerAddress};

/// Streams one HTTP/2 connection may have open (a browser opens up to 100).
const MAX_STREAMS: u32 = 100;
/// Request headers of one request, HTTP/1 or HTTP/2.
const MAX_HEADER_BYTES: u32 = 64 * 1024;
/// How often an HTTP/2 connection is pinged, and how long an answer may take before the
/// peer is taken for gone.
const PING_INTERVAL: Duration = Duration::from_secs(30);
const PING_TIMEOUT: Duration = Duration::from_secs(20);
/// After shutdown is asked for, connections have this long to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The bounds in force (`limits.*` and `trusted_proxies` in the config).
#[derive(Debug, Clone)]
pub struct Bounds {
    pub per_address: usize,
    /// Addresses not counted (reverse proxies carry many clients each).
    pub exempt: Vec<IpNet>,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub body_timeout: Duration,
}

impl Bounds {
    pub fn from_config(
        config: &crate::config::Config,
    ) -> Result<Bounds, crate::config::ConfigError> {
        let limits = &config.limits;
        Ok(Bounds {
            per_address: limits.connections_per_address,
            exempt: config.trusted_proxy_nets()?,
            header_timeout: limits.header_timeout.0,
            idle_timeout: limits.idle_timeout.0,
            body_timeout: limits.body_timeout.0,
        })
    }
}

/// Serves `router` on `listener` until `shutdown` completes; then stops accepting and gives
/// the connections [`SHUTDOWN_GRACE`] to finish.
pub async fn serve<L>(
    mut listener: L,
    router: Router,
    bounds: Bounds,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()>
where
    L: Listener<Addr = SocketAddr>,
{
    let counts = PerAddress::new(bounds.per_address, bounds.exempt.clone());
    let builder = builder(&bounds);
    let (closing, closing_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let (io, peer) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        while connections.try_join_next().is_some() {}
        let Some(admitted) = counts.admit(peer.ip()) else {
            debug!(%peer, "connection refused: its address holds as many as it may");
            metrics::counter!(crate::telemetry::CONNECTIONS_DROPPED, "reason" => "per_address")
                .increment(1);
            continue;
        };
        connections.spawn(serve_connection(
            io,
            peer,
            router.clone(),
            builder.clone(),
            bounds.clone(),
            closing_rx.clone(),
            admitted,
        ));
    }
    drop(listener);
    let _ = closing.send(true);
    let finished = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, finished)
        .await
        .is_err()
    {
        debug!("connections still open at shutdown are closed");
    }
    Ok(())
}

fn builder(bounds: &Bounds) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(bounds.header_timeout)
        .max_buf_size(MAX_HEADER_BYTES as usize);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_STREAMS)
        .max_header_list_size(MAX_HEADER_BYTES)
        .keep_alive_interval(PING_INTERVAL)
        .keep_alive_timeout(PING_TIMEOUT);
    builder
}

async fn serve_connection<I>(
    io: I,
    peer: SocketAddr,
    router: Router,
    builder: auto::Builder<TokioExecutor>,
    bounds: Bounds,
    mut closing: watch::Receiver<bool>,
    _admitted: Admitted,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Activity::default();
    let service = {
        let activity = activity.clone();
        let body_timeout = bounds.body_timeout;
        hyper::service::service_fn(move |req: Request<Incoming>| {
            let in_progress = activity.start();
            let mut req = req.map(|body| Body::new(TimeoutBody::new(body_timeout, body)));
            // What `ConnectInfo<SocketAddr>` extractors read (the sign-in throttle).
            req.extensions_mut().insert(ConnectInfo(peer));
            let response = router.clone().oneshot(req);
            async move {
                let response = response.await?;
                Ok::<_, Infallible>(response.map(|body| Body::new(Tracked::new(body, in_progress))))
            }
        })
    };
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(connection);
    let idle = activity.idle(bounds.header_timeout, bounds.idle_timeout);
    tokio::pin!(idle);
    let mut ending = false;
    loop {
        tokio::select! {
            served = connection.as_mut() => {
                if let Err(e) = served {
                    debug!(%peer, error = %e, "connection ended");
                }
                return;
            }
            why = &mut idle, if !ending => {
                if why == Idle::NeverAsked {
                    debug!(%peer, "connection closed: no request header in time");
                    metrics::counter!(crate::telemetry::CONNECTIONS_DROPPED, "reason" => "header_timeout").increment(1);
                    return;
                }
                connection.as_mut().graceful_shutdown();
                ending = true;
            }
            _ = closing.wait_for(|closing| *closing), if !ending => {
                connection.as_mut().graceful_shutdown();
                ending = true;
            }
        }
    }
}
