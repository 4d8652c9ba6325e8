//! `POST /machine/map` (protocol/02 §2): the long poll, lite updates and one-shot maps.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::{Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use oxiscale_tailcfg::{MachinePublic, MapRequest};
use time::OffsetDateTime;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tracing::{debug, info, warn};

use super::{ControlBody, ControlPlane, empty, text};
use crate::mapper::build::FullMapSnapshot;
use crate::mapper::session::{Delta, SessionSlot, build_delta};
use crate::mapper::{encode_message, keep_alive_message};
use crate::tailnet::TailnetError;
use crate::tailnet::model::NodeId;

/// Messages queued between the session task and the HTTP/2 writer. Small on purpose:
/// pending changes coalesce in the session while the client is slow.
const STREAM_QUEUE: usize = 2;

pub async fn handle(
    cp: &Arc<ControlPlane>,
    machine: MachinePublic,
    body: &[u8],
) -> Response<ControlBody> {
    let req: MapRequest = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            warn!(machine = %machine.short(), error = %e, "invalid map request");
            return text(StatusCode::BAD_REQUEST, "invalid map request");
        }
    };
    if req.version < cp.settings.min_capability {
        return text(
            StatusCode::BAD_REQUEST,
            "client version too old for oxiscale; upgrade Tailscale to 1.80 or newer",
        );
    }
    if !req.compress.is_empty() && req.compress != "zstd" {
        return text(StatusCode::BAD_REQUEST, "unsupported compression");
    }
    let now = OffsetDateTime::now_utc();
    let applied = {
        let req = req.clone();
        cp.tailnet
            .mutate(move |s, fx| s.apply_map_request(fx, machine, &req, now))
            .await
    };
    let node = match applied {
        Ok(id) => id,
        Err(TailnetError::NotFound { .. }) => {
            info!(machine = %machine.short(), node_key = %req.node_key.short(), "map request for an unknown node");
            return text(StatusCode::NOT_FOUND, "node not found");
        }
        Err(e) => {
            warn!(machine = %machine.short(), error = %e, "map request refused");
            return text(StatusCode::UNAUTHORIZED, &e.to_string());
        }
    };

    if req.is_lite_update() {
        return empty(StatusCode::OK);
    }
    if !req.stream {
        let config = cp.map_config();
        let snapshot = cp.tailnet.read(|s| {
            s.node(node)
                .cloned()
                .map(|me| FullMapSnapshot::take(s, &me, now))
        });
        return match snapshot {
            Some(snap) => {
                let pieces = render_full_map(cp, snap, config, now).await;
                Response::new(super::body(pieces.concat()))
            }
            None => text(StatusCode::NOT_FOUND, "node not found"),
        };
    }

    let (tx, rx) = mpsc::channel::<Bytes>(STREAM_QUEUE);
    let slot = cp.sessions.attach(node);
    tokio::spawn(run_session(cp.clone(), slot, tx));
    let stream = ReceiverStream::new(rx).map(|b| Ok(Frame::data(b)));
    Response::new(BodyExt::boxed(StreamBody::new(stream)))
}

/// Streams the node's map until it disconnects, is replaced by a newer stream, is deleted,
/// or the server stops.
async fn run_session(cp: Arc<ControlPlane>, slot: Arc<SessionSlot>, tx: mpsc::Sender<Bytes>) {
    let node = slot.node;
    let now = OffsetDateTime::now_utc();
    let _ = cp
        .tailnet
        .mutate(move |s, fx| {
            s.set_online(fx, node, true, now);
            Ok(())
        })
        .await;

    let result = stream_map(&cp, &slot, &tx).await;
    debug!(node, reason = result, "map stream ended");

    if cp.sessions.detach(&slot) {
        let now = OffsetDateTime::now_utc();
        let _ = cp
            .tailnet
            .mutate(move |s, fx| {
                s.set_online(fx, node, false, now);
                Ok(())
            })
            .await;
    }
}

async fn stream_map(
    cp: &ControlPlane,
    slot: &SessionSlot,
    tx: &mpsc::Sender<Bytes>,
) -> &'static str {
    let node: NodeId = slot.node;
    let config = cp.map_config();
    let now = OffsetDateTime::now_utc();
    let Some(snapshot) = cp.tailnet.read(|s| {
        s.node(node)
            .cloned()
            .map(|me| FullMapSnapshot::take(s, &me, now))
    }) else {
        return "node gone";
    };
    let mut sent = snapshot.sent();
    let first = render_full_map(cp, snapshot, config, now).await;
    // Whatever changed while the full map was built is re-checked in the first delta.
    // The pieces go one by one: shared chunks stay shared until h2 writes them.
    for piece in first {
        if tx.send(piece).await.is_err() {
            return "client went away";
        }
    }
    let mut shutdown = cp.shutdown.clone();
    let keep_alive = keep_alive_message();
    loop {
        let wait = cp.settings.keep_alive + jitter(cp.settings.keep_alive_jitter);
        tokio::select! {
            _ = slot.woken() => {
                if slot.is_closed() {
                    return "replaced by a newer stream";
                }
                let pending = slot.take();
                if pending.is_empty() {
                    continue;
                }
                let config = cp.map_config();
                let now = OffsetDateTime::now_utc();
                let delta = cp.tailnet.read(|s| build_delta(s, node, pending, &mut sent, &config, now));
                match delta {
                    Delta::Send(resp) => {
                        if tx.send(encode_message(&resp)).await.is_err() {
                            return "client went away";
                        }
                    }
                    Delta::Nothing => {}
                    Delta::End => return "node deleted",
                }
            }
            _ = tokio::time::sleep(wait) => {
                if tx.send(keep_alive.clone()).await.is_err() {
                    return "client went away";
                }
            }
            _ = tx.closed() => return "client went away",
            _ = shutdown.changed() => return "server shutting down",
        }
    }
}

fn jitter(max: Duration) -> Duration {
    if max.is_zero() {
        Duration::ZERO
    } else {
        Duration::from_millis(rand::random::<u64>() % max.as_millis().max(1) as u64)
    }
}

/// Renders and encodes a full map without holding any lock. Large maps go to the blocking
/// pool, at most one per core at a time, so a reconnect storm cannot starve the writer, the
/// accept loop or the streams' small deltas of the async workers. Most of a large map is
/// shared chunk frames (`mapper::chunks`), compressed once for all viewers.
async fn render_full_map(
    cp: &ControlPlane,
    snapshot: FullMapSnapshot,
    config: std::sync::Arc<crate::mapper::MapConfig>,
    now: OffsetDateTime,
) -> Vec<Bytes> {
    const INLINE_PEERS: usize = 64;
    let chunks = cp.peer_chunks.clone();
    if snapshot.peer_count() <= INLINE_PEERS {
        return snapshot.encode(&config, &chunks, now);
    }
    let _permit = cp
        .full_map_permits
        .acquire()
        .await
        .expect("the semaphore is never closed");
    tokio::task::spawn_blocking(move || snapshot.encode(&config, &chunks, now))
        .await
        .expect("rendering a map does not panic")
}
