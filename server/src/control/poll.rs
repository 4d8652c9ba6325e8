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
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tracing::{debug, info, warn};

use super::errors::ControlError;
use super::{ControlBody, ControlPlane, empty, text};
use crate::mapper::build::FullMapSnapshot;
use crate::mapper::delta::Delta;
use crate::mapper::session::SessionSlot;
use crate::mapper::{encode_message, keep_alive_message};
use crate::tailnet::model::NodeId;
use crate::telemetry::{self, MapKind};

/// Messages queued between the session task and the HTTP/2 writer. Small on purpose:
/// pending changes coalesce in the session while the client is slow.
const STREAM_QUEUE: usize = 2;

/// Maps with more peers than this are rendered on the blocking pool and admitted into
/// flight by `ControlPlane::first_maps`.
const INLINE_PEERS: usize = 64;

/// Longest a slow reader keeps its full map's admission permit.
const FULL_MAP_HOLD: Duration = Duration::from_secs(5);

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
    if let Err(e) = req.check_bounds() {
        warn!(machine = %machine.short(), error = %e, "map request refused");
        return text(StatusCode::BAD_REQUEST, &e.to_string());
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
        Err(e) => {
            let answer = ControlError::from(&e);
            match answer {
                ControlError::UnknownNode => {
                    info!(machine = %machine.short(), node_key = %req.node_key.short(), "map request for an unknown node")
                }
                _ => warn!(machine = %machine.short(), error = %e, "map request refused"),
            }
            return text(answer.status(), &answer.to_string());
        }
    };

    if req.is_lite_update() {
        return empty(StatusCode::OK);
    }
    if !req.stream {
        let Some(_turn) = cp.one_shot_maps.claim(node) else {
            return text(
                StatusCode::TOO_MANY_REQUESTS,
                "a full map for this node is being built; wait for it",
            );
        };
        let config = cp.map_config();
        let snapshot = cp.tailnet.read(|s| {
            s.node(node)
                .cloned()
                .map(|me| FullMapSnapshot::take(s, &cp.peer_chunks, &me, now))
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
    // A reconnect storm must not hold every stream's first map in memory at once: a large
    // map is admitted (snapshot, render, hand-over to h2) only with a permit, released
    // once its last piece has been taken by the HTTP/2 writer (which holds at most about a
    // piece beyond the client's flow-control window), or after FULL_MAP_HOLD for a slow
    // reader, so that a few stuck clients cannot stall everyone's first map.
    let large = cp.tailnet.read(|s| s.node_count()) > INLINE_PEERS;
    let admission = if large {
        // A first map may wait out a burst of registrations; a client that leaves or a
        // server that stops meanwhile must not keep its place.
        // So must a stream a newer one of its node replaced (before its snapshot, a slot
        // is woken only when it is closed).
        let mut shutdown = cp.shutdown.clone();
        let admit = cp.first_maps.admit();
        tokio::pin!(admit);
        loop {
            tokio::select! {
                admitted = &mut admit => break Some(admitted),
                () = tx.closed() => return "client went away",
                _ = shutdown.changed() => return "server shutting down",
                () = slot.woken() => if slot.is_closed() {
                    return "replaced by a newer stream";
                },
            }
        }
    } else {
        None
    };
    if slot.is_closed() {
        return "replaced by a newer stream";
    }
    let config = cp.map_config();
    let now = OffsetDateTime::now_utc();
    slot.start_recording();
    let Some(snapshot) = cp.tailnet.read(|s| {
        s.node(node)
            .cloned()
            .map(|me| FullMapSnapshot::take(s, &cp.peer_chunks, &me, now))
    }) else {
        return "node gone";
    };
    let mut sent = snapshot.sent();
    let first = render_full_map(cp, snapshot, config, now).await;
    telemetry::map_message(MapKind::Full, first.iter().map(Bytes::len).sum());
    // Whatever changed while the full map was built is re-checked in the first delta.
    // The pieces go one by one: shared chunks stay shared until h2 writes them. `reserve`
    // before taking a piece, so that the hold timeout cannot drop one half-sent.
    let mut pieces = first.into_iter().peekable();
    let send_all = async {
        while pieces.peek().is_some() {
            let Ok(place) = tx.reserve().await else {
                return false;
            };
            place.send(pieces.next().expect("peeked"));
        }
        true
    };
    let sent_in_time = tokio::time::timeout(FULL_MAP_HOLD, send_all).await;
    drop(admission);
    if sent_in_time == Ok(false) {
        return "client went away";
    }
    for piece in pieces {
        if tx.send(piece).await.is_err() {
            return "client went away";
        }
    }
    let mut shutdown = cp.shutdown.clone();
    // Waited on across iterations: registering them anew for every delta showed in
    // fan-out profiles.
    let stopping = shutdown.changed();
    let client_gone = tx.closed();
    tokio::pin!(stopping, client_gone);
    let keep_alive = keep_alive_message();
    let gap = || cp.settings.keep_alive + jitter(cp.settings.keep_alive_jitter);
    let mut clock = KeepAliveClock::new(Instant::now(), gap());
    // Moved only when it fires: setting a timer per delta cost a timer-wheel insertion and
    // removal per message.
    let timer = tokio::time::sleep_until(clock.due());
    tokio::pin!(timer);
    loop {
        tokio::select! {
            _ = slot.woken() => {
                if slot.is_closed() {
                    return "replaced by a newer stream";
                }
                let taken = slot.take();
                if taken.is_empty() {
                    continue;
                }
                let config = cp.map_config();
                let now = OffsetDateTime::now_utc();
                let delta = cp.tailnet.read(|s| taken.into_delta(s, node, &mut sent, &config, now));
                cp.sessions.count_delta(&delta);
                let message = match delta {
                    Delta::Send(resp) => encode_message(&resp),
                    Delta::Shared(shared) => shared.frame(&config).await,
                    Delta::Nothing => continue,
                    Delta::End => return "node deleted or expired",
                };
                let bytes = message.len();
                if tx.send(message).await.is_err() {
                    return "client went away";
                }
                telemetry::map_message(MapKind::Delta, bytes);
                clock.sent(Instant::now());
            }
            _ = &mut timer => {
                if clock.is_due(Instant::now()) {
                    if tx.send(keep_alive.clone()).await.is_err() {
                        return "client went away";
                    }
                    telemetry::map_message(MapKind::KeepAlive, keep_alive.len());
                    clock = KeepAliveClock::new(Instant::now(), gap());
                }
                timer.as_mut().reset(clock.due());
            }
            _ = &mut client_gone => return "client went away",
            _ = &mut stopping => return "server shutting down",
        }
    }
}

/// When a stream's next keep-alive is due: a gap after the last message it was sent.
#[derive(Debug, Clone, Copy)]
struct KeepAliveClock {
    last_sent: Instant,
    gap: Duration,
}

impl KeepAliveClock {
    fn new(last_sent: Instant, gap: Duration) -> KeepAliveClock {
        KeepAliveClock { last_sent, gap }
    }

    /// A message went out: the keep-alive moves back.
    fn sent(&mut self, at: Instant) {
        self.last_sent = at;
    }

    fn due(&self) -> Instant {
        self.last_sent + self.gap
    }

    fn is_due(&self, now: Instant) -> bool {
        now >= self.due()
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
    if snapshot.peer_count() <= INLINE_PEERS {
        return snapshot.encode(&config, now);
    }
    let _permit = cp
        .full_map_permits
        .acquire()
        .await
        .expect("the semaphore is never closed");
    tokio::task::spawn_blocking(move || snapshot.encode(&config, now))
        .await
        .expect("rendering a map does not panic")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_keep_alive_is_due_a_gap_after_the_last_message() {
        let start = Instant::now();
        let gap = Duration::from_secs(50);
        let mut clock = KeepAliveClock::new(start, gap);
        assert_eq!(clock.due(), start + gap);
        clock.sent(start + Duration::from_secs(30));
        assert!(
            !clock.is_due(start + gap),
            "the timer set at the start fires early"
        );
        assert_eq!(clock.due(), start + Duration::from_secs(80));
        assert!(clock.is_due(start + Duration::from_secs(80)));
    }
}
