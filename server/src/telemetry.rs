//! Prometheus metrics, served on `metrics_listen_addr` (headscale's key; off when unset).
//!
//! Events are recorded where they happen through the `metrics` facade (registrations, map
//! messages and their bytes, commit, request and policy-compile latencies); what is a
//! state rather than an event (nodes by state, users, open map streams, the relay's
//! clients and counters) is read from the running server at each scrape, so it is never
//! out of step. The recorder is process-wide: servers started in one process (tests)
//! share the event counters.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics::{
    Counter, Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use oxiscale_derp::DerpServer;
use time::OffsetDateTime;
use tokio::sync::watch;

use crate::control::ControlPlane;

pub const REGISTRATIONS: &str = "oxiscale_registrations_total";
pub const MAP_MESSAGES: &str = "oxiscale_map_messages_total";
pub const MAP_BYTES: &str = "oxiscale_map_bytes_total";
pub const COMMIT_SECONDS: &str = "oxiscale_store_commit_duration_seconds";
pub const POLICY_COMPILE_SECONDS: &str = "oxiscale_policy_compile_duration_seconds";
pub const REQUEST_SECONDS: &str = "oxiscale_http_request_duration_seconds";
pub const CONNECTIONS_DROPPED: &str = "oxiscale_connections_dropped_total";

/// Latency buckets, 1 ms to 10 s.
const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A map message's kind, the label of [`MAP_MESSAGES`] and [`MAP_BYTES`].
#[derive(Debug, Clone, Copy)]
pub enum MapKind {
    Full,
    Delta,
    KeepAlive,
}

impl MapKind {
    fn label(self) -> &'static str {
        match self {
            MapKind::Full => "full",
            MapKind::Delta => "delta",
            MapKind::KeepAlive => "keepalive",
        }
    }
}

const MAP_KINDS: [MapKind; 3] = [MapKind::Full, MapKind::Delta, MapKind::KeepAlive];

/// The map counters, registered once: counting a message is then two atomic additions,
/// not a registry lookup per label on every stream's every message.
struct MapCounters {
    messages: [Counter; 3],
    bytes: [Counter; 3],
}

static MAP_COUNTERS: OnceLock<MapCounters> = OnceLock::new();

/// Counts one map message of `bytes` bytes sent to a node (nothing before [`install`]).
pub fn map_message(kind: MapKind, bytes: usize) {
    if let Some(c) = MAP_COUNTERS.get() {
        c.messages[kind as usize].increment(1);
        c.bytes[kind as usize].increment(bytes as u64);
    }
}

/// Counts a register request by how it ended.
pub fn registration(result: &'static str) {
    counter!(REGISTRATIONS, "result" => result).increment(1);
}

/// The process's recorder, installed at first use.
fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
            .expect("the bucket list is not empty")
            .build_recorder();
        let handle = recorder.handle();
        // Another recorder may be in place already (a test harness's); then ours still
        // renders whatever is recorded through it, which is nothing, and scrapes say so.
        let _ = metrics::set_global_recorder(recorder);
        describe();
        let _ = MAP_COUNTERS.set(MapCounters {
            messages: MAP_KINDS.map(|k| counter!(MAP_MESSAGES, "kind" => k.label())),
            bytes: MAP_KINDS.map(|k| counter!(MAP_BYTES, "kind" => k.label())),
        });
        handle
    })
}

/// Puts the recorder in place; `serve` does it at start, listener or not, so that what
/// happens before a scrape is counted the same way in every server.
pub fn install() {
    handle();
}

fn describe() {
    describe_gauge!(
        "oxiscale_nodes",
        "Nodes by state (online, offline, expired, pending approval)."
    );
    describe_gauge!("oxiscale_users", "Users in the tailnet.");
    describe_gauge!(
        "oxiscale_map_streams",
        "Open map streams (connected clients)."
    );
    describe_counter!(REGISTRATIONS, "Register requests by result.");
    describe_counter!(
        CONNECTIONS_DROPPED,
        "Connections closed at once for a limit (per_address, header_timeout)."
    );
    describe_counter!(MAP_MESSAGES, "Map messages sent to nodes, by kind.");
    describe_counter!(
        MAP_BYTES,
        Unit::Bytes,
        "Bytes of map messages sent to nodes, by kind."
    );
    describe_gauge!(
        "oxiscale_derp_clients",
        "Clients connected to the embedded DERP relay."
    );
    describe_counter!("oxiscale_derp_accepted_total", "DERP clients admitted.");
    describe_counter!(
        "oxiscale_derp_refused_total",
        "DERP clients refused by the admission check."
    );
    describe_counter!(
        "oxiscale_derp_packets_total",
        "Packets the embedded DERP relay forwarded."
    );
    describe_counter!(
        "oxiscale_derp_bytes_total",
        Unit::Bytes,
        "Bytes the embedded DERP relay forwarded."
    );
    describe_counter!(
        "oxiscale_derp_dropped_total",
        "Packets the embedded DERP relay dropped, by reason."
    );
    describe_histogram!(
        COMMIT_SECONDS,
        Unit::Seconds,
        "Time to commit a change to the database."
    );
    describe_histogram!(
        POLICY_COMPILE_SECONDS,
        Unit::Seconds,
        "Time to compile the policy against the tailnet."
    );
    describe_histogram!(
        REQUEST_SECONDS,
        Unit::Seconds,
        "Time to answer an HTTP request on the main listener (to its headers), by route."
    );
}

/// What a scrape reads off the running server.
#[derive(Clone)]
pub struct Sources {
    pub control: Arc<ControlPlane>,
    pub derp: Option<Arc<DerpServer>>,
}

impl Sources {
    /// Sets the gauges (and the relay's own counters) to what they are now.
    fn read_state(&self) {
        let now = OffsetDateTime::now_utc();
        let (users, online, offline, expired, pending) = self.control.tailnet.read(|s| {
            let mut counts = (s.users().count(), 0, 0, 0, 0);
            for n in s.nodes() {
                if n.expiry.is_some_and(|e| e <= now) {
                    counts.3 += 1;
                } else if !n.approved {
                    counts.4 += 1;
                } else if n.online {
                    counts.1 += 1;
                } else {
                    counts.2 += 1;
                }
            }
            counts
        });
        gauge!("oxiscale_users").set(users as f64);
        for (state, n) in [
            ("online", online),
            ("offline", offline),
            ("expired", expired),
            ("pending_approval", pending),
        ] {
            gauge!("oxiscale_nodes", "state" => state).set(n as f64);
        }
        gauge!("oxiscale_map_streams").set(self.control.sessions.count() as f64);
        if let Some(derp) = &self.derp {
            let stats = derp.stats();
            gauge!("oxiscale_derp_clients").set(stats.connections as f64);
            counter!("oxiscale_derp_accepted_total").absolute(stats.accepted_total);
            counter!("oxiscale_derp_refused_total").absolute(stats.refused_total);
            counter!("oxiscale_derp_packets_total").absolute(stats.packets_forwarded);
            counter!("oxiscale_derp_bytes_total").absolute(stats.bytes_forwarded);
            counter!("oxiscale_derp_dropped_total", "reason" => "queue_full")
                .absolute(stats.packets_dropped_queue_full);
            counter!("oxiscale_derp_dropped_total", "reason" => "not_connected")
                .absolute(stats.packets_dropped_not_here);
        }
    }
}

/// The metrics listener's routes: `/metrics` in Prometheus' text format.
pub fn router(sources: Sources) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .with_state(sources)
}

async fn scrape(State(sources): State<Sources>) -> Response {
    sources.read_state();
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle().render(),
    )
        .into_response()
}

/// Times each request on the main listener, labelled by its route pattern (never the raw
/// path: a client must not be able to make new series).
pub async fn time_request(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "other".to_owned(), |p| p.as_str().to_owned());
    let started = Instant::now();
    let response = next.run(req).await;
    metrics::histogram!(REQUEST_SECONDS, "route" => route).record(started.elapsed().as_secs_f64());
    response
}

/// Serves [`router`] on `addr` until shutdown.
pub async fn serve(
    listener: tokio::net::TcpListener,
    sources: Sources,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    axum::serve(listener, router(sources))
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|stopping| *stopping).await;
        })
        .await
}

/// Where `metrics_listen_addr` says to listen: `host:port`, as in headscale.
pub fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    let text = text.trim();
    text.parse::<SocketAddr>().or_else(|_| {
        use std::net::ToSocketAddrs;
        text.to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| format!("metrics_listen_addr {text:?} is not host:port"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_are_host_and_port() {
        assert_eq!(parse_addr("127.0.0.1:9090").unwrap().port(), 9090);
        assert_eq!(parse_addr(" [::1]:9090 ").unwrap().port(), 9090);
        assert_eq!(parse_addr("localhost:9090").unwrap().port(), 9090);
        assert!(parse_addr("9090").unwrap_err().contains("not host:port"));
    }

    #[test]
    fn events_show_in_the_text_format() {
        install();
        map_message(MapKind::Delta, 100);
        map_message(MapKind::Delta, 50);
        registration("authorized");
        let text = handle().render();
        let line = |prefix: &str| {
            text.lines()
                .find(|l| l.starts_with(prefix))
                .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
                .to_owned()
        };
        // Other tests in this process may add to them; at least these are there.
        let bytes: f64 = line("oxiscale_map_bytes_total{kind=\"delta\"}")
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(bytes >= 150.0, "{text}");
        assert!(
            text.contains("# TYPE oxiscale_map_bytes_total counter"),
            "{text}"
        );
        line("oxiscale_registrations_total{result=\"authorized\"}");
    }
}
