//! The relay: accepts DERP byte streams, admits known node keys, forwards packets.
//!
//! Each connection runs a reader (this task) and a writer fed by two bounded queues:
//! packets from other clients and control frames (Pong, PeerGone). Senders never wait on
//! a receiver's queue: a full queue drops the packet, so one slow client cannot stall
//! anyone else.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use oxiscale_tailcfg::NodePublic;
use rand::Rng;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::frame::{Frame, FrameDecoder, FrameError, PeerGoneReason, frame_type};
use crate::handshake::{HandshakeError, KeyPair, ServerInfo};

/// Decides whether a client's node key may use the relay.
pub type AdmitFn = Arc<dyn Fn(&NodePublic) -> bool + Send + Sync>;

/// Health text sent to a refused client before closing.
pub const NOT_ADMITTED_MESSAGE: &str = "this node key is not authorized to use this DERP server";

/// Tunables; [`Default`] follows the reference server.
#[derive(Debug, Clone)]
pub struct DerpConfig {
    /// KeepAlive interval; up to 1/12 of it is added as jitter (60 s + 0–5 s).
    pub keep_alive: Duration,
    /// Packets queued per client before new ones are dropped.
    pub send_queue_depth: usize,
    /// Time allowed for a client to send ClientInfo.
    pub handshake_timeout: Duration,
    /// A write that does not finish within this closes the connection.
    pub write_timeout: Duration,
}

impl Default for DerpConfig {
    fn default() -> Self {
        Self {
            keep_alive: Duration::from_secs(60),
            send_queue_depth: 32,
            handshake_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
        }
    }
}

/// Why a connection ended (other than the client closing it cleanly).
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("bad frame: {0}")]
    Frame(#[from] FrameError),
    #[error("handshake: {0}")]
    Handshake(#[from] HandshakeError),
    #[error("no ClientInfo within the handshake timeout")]
    HandshakeTimeout,
    #[error("expected ClientInfo first, got frame type {0:#04x}")]
    ExpectedClientInfo(u8),
    #[error("connection closed before ClientInfo")]
    ClosedDuringHandshake,
    #[error("node key {0:?} is not admitted")]
    NotAdmitted(NodePublic),
    #[error("a newer connection for the same key replaced this one")]
    Replaced,
    #[error("disconnected by the server")]
    Disconnected,
    #[error("write did not complete within the write timeout")]
    WriteTimeout,
}

/// Counters for metrics; a snapshot from [`DerpServer::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DerpStats {
    /// Clients currently registered.
    pub connections: usize,
    /// Handshakes that ended in admission.
    pub accepted_total: u64,
    /// Handshakes refused by the admit check.
    pub refused_total: u64,
    pub packets_forwarded: u64,
    pub bytes_forwarded: u64,
    /// Packets dropped because the destination's queue was full.
    pub packets_dropped_queue_full: u64,
    /// Packets dropped because the destination is not connected.
    pub packets_dropped_not_here: u64,
}

#[derive(Default)]
struct Counters {
    accepted: AtomicU64,
    refused: AtomicU64,
    forwarded: AtomicU64,
    bytes: AtomicU64,
    queue_full: AtomicU64,
    not_here: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CloseReason {
    Replaced,
    Disconnected,
}

/// The registry's view of one connected client.
struct ClientHandle {
    conn_id: u64,
    packets: mpsc::Sender<(NodePublic, Bytes)>,
    control: mpsc::Sender<Frame>,
    close: watch::Sender<Option<CloseReason>>,
}

/// What a connection's own tasks hold.
struct Registration {
    conn_id: u64,
    packets: mpsc::Receiver<(NodePublic, Bytes)>,
    control_tx: mpsc::Sender<Frame>,
    control: mpsc::Receiver<Frame>,
    close: watch::Receiver<Option<CloseReason>>,
}

/// Upper bound on the per-connection "sent to" set used for PeerGone(Disconnected).
const MAX_TRACKED_PEERS: usize = 4096;
/// Control frames (Pong, PeerGone) queued per client.
const CONTROL_QUEUE_DEPTH: usize = 16;
/// Writer batches queued frames up to this many bytes per write.
const WRITE_BATCH_BYTES: usize = 64 << 10;
const READ_BUFFER_BYTES: usize = 32 << 10;

/// An embedded DERP relay. Wrap in an `Arc` and hand byte streams to
/// [`serve_connection`](Self::serve_connection) (the HTTP edge in [`crate::http`] does this).
pub struct DerpServer {
    keys: KeyPair,
    admit: AdmitFn,
    config: DerpConfig,
    clients: RwLock<HashMap<NodePublic, ClientHandle>>,
    next_conn_id: AtomicU64,
    counters: Counters,
}

impl DerpServer {
    /// A relay with the given server private key that serves only clients `admit` accepts.
    pub fn new(private_key: [u8; 32], admit: AdmitFn) -> Self {
        Self::with_config(private_key, admit, DerpConfig::default())
    }

    pub fn with_config(private_key: [u8; 32], admit: AdmitFn, config: DerpConfig) -> Self {
        Self {
            keys: KeyPair::from_private(private_key),
            admit,
            config,
            clients: RwLock::new(HashMap::new()),
            next_conn_id: AtomicU64::new(1),
            counters: Counters::default(),
        }
    }

    /// The server's public key, sent in the ServerKey frame and `Derp-Public-Key` header.
    pub fn public_key(&self) -> NodePublic {
        self.keys.public()
    }

    /// Closes the connection of `key`, if any (e.g. the node was deleted or expired).
    /// Returns whether a client was connected.
    pub fn disconnect(&self, key: &NodePublic) -> bool {
        let removed = self.clients_write().remove(key);
        match removed {
            Some(handle) => {
                handle.close.send_replace(Some(CloseReason::Disconnected));
                true
            }
            None => false,
        }
    }

    pub fn is_connected(&self, key: &NodePublic) -> bool {
        self.clients_read().contains_key(key)
    }

    pub fn stats(&self) -> DerpStats {
        let c = &self.counters;
        DerpStats {
            connections: self.clients_read().len(),
            accepted_total: c.accepted.load(Ordering::Relaxed),
            refused_total: c.refused.load(Ordering::Relaxed),
            packets_forwarded: c.forwarded.load(Ordering::Relaxed),
            bytes_forwarded: c.bytes.load(Ordering::Relaxed),
            packets_dropped_queue_full: c.queue_full.load(Ordering::Relaxed),
            packets_dropped_not_here: c.not_here.load(Ordering::Relaxed),
        }
    }

    // A poisoned lock only means another connection panicked mid-update of a plain map;
    // the map itself is still consistent, so keep serving.
    fn clients_read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<NodePublic, ClientHandle>> {
        self.clients.read().unwrap_or_else(|e| e.into_inner())
    }

    fn clients_write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<NodePublic, ClientHandle>> {
        self.clients.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs one DERP connection to completion: handshake, admission, then relaying.
    /// `Ok(())` means the client closed the stream.
    pub async fn serve_connection<IO>(&self, io: IO) -> Result<(), ConnError>
    where
        IO: AsyncRead + AsyncWrite + Send + Unpin,
    {
        let (mut rd, mut wr) = tokio::io::split(io);
        let mut decoder = FrameDecoder::new();

        write_frames(
            &mut wr,
            &[Frame::ServerKey {
                key: self.keys.public().0,
            }],
            self.config.write_timeout,
        )
        .await?;
        let (client, _info) = tokio::time::timeout(
            self.config.handshake_timeout,
            self.read_client_info(&mut rd, &mut decoder),
        )
        .await
        .map_err(|_| ConnError::HandshakeTimeout)??;

        if !(self.admit)(&client) {
            return self.refuse(&mut wr, client).await;
        }
        let registration = self.register(client);
        let conn_id = registration.conn_id;
        // Checked again once registered: a node revoked during the handshake was either
        // still unregistered when `disconnect` ran (caught here) or is closed by it.
        if !(self.admit)(&client) {
            self.unregister(client, conn_id, &HashSet::new());
            return self.refuse(&mut wr, client).await;
        }
        let server_info = Frame::ServerInfo {
            sealed: self
                .keys
                .seal_server_info(&client, &ServerInfo::current())
                .into(),
        };
        // Written before the writer loop starts, so it precedes any queued packet.
        if let Err(err) = write_frames(&mut wr, &[server_info], self.config.write_timeout).await {
            self.unregister(client, conn_id, &HashSet::new());
            return Err(err);
        }
        self.counters.accepted.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(client = ?client, conn_id, "DERP client connected");
        let mut close = registration.close.clone();
        let mut sent_to = HashSet::new();

        let result = {
            let reader = self.read_loop(
                &mut rd,
                &mut decoder,
                client,
                &registration.control_tx,
                &mut sent_to,
            );
            let writer = write_loop(
                &mut wr,
                registration.packets,
                registration.control,
                &self.config,
            );
            tokio::select! {
                r = reader => r,
                w = writer => w,
                reason = close.wait_for(Option::is_some) => match reason.map(|r| *r) {
                    Ok(Some(CloseReason::Replaced)) => Err(ConnError::Replaced),
                    _ => Err(ConnError::Disconnected),
                },
            }
        };
        self.unregister(client, conn_id, &sent_to);
        tracing::debug!(client = ?client, conn_id, ?result, "DERP client gone");
        result
    }

    /// Tells a client it is not admitted, then closes.
    async fn refuse<W: AsyncWrite + Unpin>(
        &self,
        wr: &mut W,
        client: NodePublic,
    ) -> Result<(), ConnError> {
        self.counters.refused.fetch_add(1, Ordering::Relaxed);
        // Debug, not info: a revoked node retries every few seconds.
        tracing::debug!(client = ?client, "DERP client refused: key not admitted");
        let health = Frame::Health {
            problem: NOT_ADMITTED_MESSAGE.to_owned(),
        };
        write_frames(wr, &[health], self.config.write_timeout).await?;
        let _ = wr.shutdown().await;
        Err(ConnError::NotAdmitted(client))
    }

    async fn read_client_info<R: AsyncRead + Unpin>(
        &self,
        rd: &mut R,
        decoder: &mut FrameDecoder,
    ) -> Result<(NodePublic, crate::handshake::ClientInfo), ConnError> {
        let mut buf = [0u8; 4096];
        loop {
            if let Some(frame) = decoder.next_frame()? {
                let Frame::ClientInfo { key, sealed } = frame else {
                    return Err(ConnError::ExpectedClientInfo(frame.frame_type()));
                };
                // The box opens only with the private key behind `key`: this proves identity.
                let info = self.keys.open_client_info(&key, &sealed)?;
                return Ok((key, info));
            }
            // Refuse a wrong first frame from its type byte, before buffering its payload.
            if let Some(t) = decoder.pending_frame_type()
                && t != frame_type::CLIENT_INFO
            {
                return Err(ConnError::ExpectedClientInfo(t));
            }
            let n = rd.read(&mut buf).await?;
            if n == 0 {
                return Err(ConnError::ClosedDuringHandshake);
            }
            decoder.feed(&buf[..n]);
        }
    }

    fn register(&self, key: NodePublic) -> Registration {
        let conn_id = self.next_conn_id.fetch_add(1, Ordering::Relaxed);
        let (packets_tx, packets_rx) = mpsc::channel(self.config.send_queue_depth.max(1));
        let (control_tx, control_rx) = mpsc::channel(CONTROL_QUEUE_DEPTH);
        let (close_tx, close_rx) = watch::channel(None);
        let handle = ClientHandle {
            conn_id,
            packets: packets_tx,
            control: control_tx.clone(),
            close: close_tx,
        };
        let previous = self.clients_write().insert(key, handle);
        if let Some(previous) = previous {
            // Newest wins: the old connection is usually a dead TCP session the client
            // already gave up on.
            previous.close.send_replace(Some(CloseReason::Replaced));
        }
        Registration {
            conn_id,
            packets: packets_rx,
            control_tx,
            control: control_rx,
            close: close_rx,
        }
    }

    fn unregister(&self, key: NodePublic, conn_id: u64, sent_to: &HashSet<NodePublic>) {
        let still_here = {
            let mut clients = self.clients_write();
            if clients.get(&key).is_some_and(|h| h.conn_id == conn_id) {
                clients.remove(&key);
            }
            clients.contains_key(&key)
        };
        if still_here {
            // Replaced by a newer connection: the key is still reachable.
            return;
        }
        let clients = self.clients_read();
        for peer in sent_to {
            if let Some(handle) = clients.get(peer) {
                // Peers that received from us drop their route via this relay on PeerGone.
                let _ = handle.control.try_send(Frame::PeerGone {
                    peer: key,
                    reason: PeerGoneReason::Disconnected,
                });
            }
        }
    }

    async fn read_loop<R: AsyncRead + Unpin>(
        &self,
        rd: &mut R,
        decoder: &mut FrameDecoder,
        me: NodePublic,
        control: &mpsc::Sender<Frame>,
        sent_to: &mut HashSet<NodePublic>,
    ) -> Result<(), ConnError> {
        let mut buf = vec![0u8; READ_BUFFER_BYTES];
        let mut not_here_limit = TokenBucket::new(3.0, 1.0, Instant::now());
        loop {
            while let Some(frame) = decoder.next_frame()? {
                self.handle_frame(frame, me, control, sent_to, &mut not_here_limit);
            }
            let n = rd.read(&mut buf).await?;
            if n == 0 {
                return Ok(());
            }
            decoder.feed(&buf[..n]);
        }
    }

    fn handle_frame(
        &self,
        frame: Frame,
        me: NodePublic,
        control: &mpsc::Sender<Frame>,
        sent_to: &mut HashSet<NodePublic>,
        not_here_limit: &mut TokenBucket,
    ) {
        match frame {
            Frame::SendPacket { dst, packet } => {
                let queue = self.clients_read().get(&dst).map(|h| h.packets.clone());
                let Some(queue) = queue else {
                    self.counters.not_here.fetch_add(1, Ordering::Relaxed);
                    if not_here_limit.take(Instant::now()) {
                        let _ = control.try_send(Frame::PeerGone {
                            peer: dst,
                            reason: PeerGoneReason::NotHere,
                        });
                    }
                    return;
                };
                let len = packet.len() as u64;
                match queue.try_send((me, packet)) {
                    Ok(()) => {
                        self.counters.forwarded.fetch_add(1, Ordering::Relaxed);
                        self.counters.bytes.fetch_add(len, Ordering::Relaxed);
                        if sent_to.len() < MAX_TRACKED_PEERS {
                            sent_to.insert(dst);
                        }
                    }
                    Err(_) => {
                        self.counters.queue_full.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Frame::Ping { data } => {
                // A client flooding pings only loses its own pongs.
                let _ = control.try_send(Frame::Pong { data });
            }
            Frame::NotePreferred { preferred } => {
                tracing::trace!(client = ?me, preferred, "NotePreferred");
            }
            // KeepAlive/Pong from clients, mesh frames (no mesh here) and unknown types are
            // skipped, as the protocol asks.
            _ => {}
        }
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(
    wr: &mut W,
    mut packets: mpsc::Receiver<(NodePublic, Bytes)>,
    mut control: mpsc::Receiver<Frame>,
    config: &DerpConfig,
) -> Result<(), ConnError> {
    let mut out = BytesMut::with_capacity(WRITE_BATCH_BYTES);
    let mut next_keep_alive = Instant::now() + jittered(config.keep_alive);
    let encode_packet = |out: &mut BytesMut, src: NodePublic, packet: Bytes| {
        Frame::RecvPacket { src, packet }.encode(out)
    };
    loop {
        out.clear();
        tokio::select! {
            biased;
            Some(frame) = control.recv() => frame.encode(&mut out),
            Some((src, packet)) = packets.recv() => encode_packet(&mut out, src, packet),
            () = tokio::time::sleep_until(next_keep_alive) => {
                Frame::KeepAlive.encode(&mut out);
                next_keep_alive = Instant::now() + jittered(config.keep_alive);
            }
            else => return Ok(()),
        }
        // Batch whatever else is already queued into the same write.
        while out.len() < WRITE_BATCH_BYTES {
            if let Ok(frame) = control.try_recv() {
                frame.encode(&mut out);
            } else if let Ok((src, packet)) = packets.try_recv() {
                encode_packet(&mut out, src, packet);
            } else {
                break;
            }
        }
        write_bytes(wr, &out, config.write_timeout).await?;
    }
}

async fn write_frames<W: AsyncWrite + Unpin>(
    wr: &mut W,
    frames: &[Frame],
    limit: Duration,
) -> Result<(), ConnError> {
    let mut out = BytesMut::new();
    for f in frames {
        f.encode(&mut out);
    }
    write_bytes(wr, &out, limit).await
}

async fn write_bytes<W: AsyncWrite + Unpin>(
    wr: &mut W,
    bytes: &[u8],
    limit: Duration,
) -> Result<(), ConnError> {
    tokio::time::timeout(limit, async {
        wr.write_all(bytes).await?;
        wr.flush().await
    })
    .await
    .map_err(|_| ConnError::WriteTimeout)?
    .map_err(ConnError::Io)
}

fn jittered(base: Duration) -> Duration {
    let max_jitter_ms = (base.as_millis() / 12) as u64;
    base + Duration::from_millis(rand::thread_rng().gen_range(0..=max_jitter_ms))
}

/// Token bucket for rate-limiting replies such as PeerGone(NotHere); sans-IO (`now` is given).
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    tokens: f64,
    burst: f64,
    per_second: f64,
    last: Instant,
}

impl TokenBucket {
    pub(crate) fn new(burst: f64, per_second: f64, now: Instant) -> Self {
        Self {
            tokens: burst,
            burst,
            per_second,
            last: now,
        }
    }

    /// Takes one token if available.
    pub(crate) fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_bucket_allows_burst_then_refills() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(3.0, 1.0, t0);
        assert!(b.take(t0) && b.take(t0) && b.take(t0));
        assert!(!b.take(t0));
        assert!(!b.take(t0 + Duration::from_millis(500)));
        assert!(b.take(t0 + Duration::from_millis(1000)));
        assert!(!b.take(t0 + Duration::from_millis(1100)));
        // Long idle refills only up to the burst.
        let later = t0 + Duration::from_secs(100);
        assert!(b.take(later) && b.take(later) && b.take(later));
        assert!(!b.take(later));
    }

    #[test]
    fn jitter_stays_within_a_twelfth() {
        for _ in 0..100 {
            let d = jittered(Duration::from_secs(60));
            assert!(d >= Duration::from_secs(60) && d <= Duration::from_secs(65));
        }
    }
}
