//! [`NoiseStream`]: tokio `AsyncRead + AsyncWrite` plaintext over the record layer.
//!
//! Writes gather plaintext into an open record right where its ciphertext will live and seal
//! it when it is full (4077 bytes) or on flush, so an HTTP/2 writer's many small frames
//! become few full records. Sealed ciphertext is bounded: past [`WRITE_HIGH_WATER`] bytes a
//! write first pushes bytes to the socket and returns `Pending` if it cannot.

use std::error::Error as StdError;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};

use bytes::{Buf, BufMut, BytesMut};
use oxiscale_tailcfg::ChallengePublic;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::io::poll_read_buf;

use crate::handshake::HEADER_LEN;
use crate::record::{
    Decoder, Encryptor, MAX_PLAINTEXT_LEN, MAX_RECORD_LEN, RecordError, Transport,
};

/// Sealed ciphertext allowed to wait for the socket before writes push back.
pub const WRITE_HIGH_WATER: usize = 64 * 1024;
/// What a write buffer can hold at most: the high water mark, the record that crossed it
/// and the open one.
const WRITE_CAPACITY: usize = WRITE_HIGH_WATER + 2 * MAX_RECORD_LEN;
/// How much a single socket read asks for at least.
const READ_CHUNK: usize = 16 * 1024;
/// First bytes of the optional server early payload.
pub const EARLY_PAYLOAD_MAGIC: [u8; 5] = [0xff, 0xff, 0xff, b'T', b'S'];
const EARLY_HEADER_LEN: usize = 9;
/// The client's cap on the early payload's JSON.
const MAX_EARLY_PAYLOAD_LEN: usize = 10 << 20;

/// JSON body of the early payload (`tailcfg.EarlyNoise`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EarlyNoise {
    #[serde(rename = "nodeKeyChallenge")]
    pub node_key_challenge: ChallengePublic,
}

/// A fresh per-connection challenge key for the early payload.
///
/// oxiscale does not verify `Tailscale-Node-Proof` headers, so the private half is dropped.
pub fn fresh_challenge() -> ChallengePublic {
    let secret = x25519_dalek::StaticSecret::random_from_rng(rand::rngs::OsRng);
    ChallengePublic(x25519_dalek::PublicKey::from(&secret).to_bytes())
}

/// The early payload's plaintext: magic, u32 BE length, JSON.
pub fn early_payload_bytes(challenge: ChallengePublic) -> Vec<u8> {
    let json = serde_json::to_vec(&EarlyNoise {
        node_key_challenge: challenge,
    })
    .expect("EarlyNoise serializes");
    let mut out = Vec::with_capacity(EARLY_HEADER_LEN + json.len());
    out.extend_from_slice(&EARLY_PAYLOAD_MAGIC);
    out.extend_from_slice(&(json.len() as u32).to_be_bytes());
    out.extend_from_slice(&json);
    out
}

/// Where a client stream puts the early payload it stripped, once it has read that far.
#[derive(Debug, Clone, Default)]
pub struct EarlyPayload(Arc<OnceLock<Option<ChallengePublic>>>);

impl EarlyPayload {
    /// `None` until the stream has read its first bytes; then `Some(None)` if the server sent
    /// no early payload, `Some(Some(key))` if it did.
    pub fn challenge(&self) -> Option<Option<ChallengePublic>> {
        self.0.get().copied()
    }
}

/// The transport error behind an I/O error from a [`NoiseStream`], looking through wrappers.
///
/// h2 (and so hyper's HTTP/2) keeps only the kind and text of I/O errors, so behind a
/// `hyper::Error` this finds nothing; the error's text still names the record error.
pub fn find_record_error<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a RecordError> {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(record) = e.downcast_ref::<RecordError>() {
            return Some(record);
        }
        // io::Error::source skips its own payload, so look at it explicitly.
        if let Some(inner) = e.downcast_ref::<io::Error>().and_then(|io| io.get_ref())
            && let Some(record) = find_record_error(inner)
        {
            return Some(record);
        }
        current = e.source();
    }
    None
}

fn record_io_error(err: RecordError) -> io::Error {
    let kind = match err {
        RecordError::Truncated { .. } => io::ErrorKind::UnexpectedEof,
        _ => io::ErrorKind::InvalidData,
    };
    io::Error::new(kind, err)
}

enum EarlyState {
    /// Server side, or client after the first bytes.
    Done,
    /// Client side: the first 9 plaintext bytes decide whether an early payload is present.
    Detect(EarlyPayload),
}

/// Plaintext byte stream over an established Noise session on `IO`.
pub struct NoiseStream<IO> {
    io: IO,
    encryptor: Encryptor,
    decoder: Decoder,
    /// Decrypted bytes not yet handed to the reader.
    plain: BytesMut,
    read_eof: bool,
    /// Sealed ciphertext (`out[..sealed]`), then possibly one open record being filled.
    out: BytesMut,
    sealed: usize,
    early: EarlyState,
}

impl<IO> std::fmt::Debug for NoiseStream<IO> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NoiseStream")
            .field("buffered_plaintext", &self.plain.len())
            .field("unsent", &self.out.len())
            .finish_non_exhaustive()
    }
}

impl<IO> NoiseStream<IO> {
    /// A stream that passes all plaintext through (server side).
    pub fn new(io: IO, transport: Transport) -> Self {
        let (encryptor, decoder) = transport.into_parts();
        Self {
            io,
            encryptor,
            decoder,
            plain: BytesMut::new(),
            read_eof: false,
            out: BytesMut::new(),
            sealed: 0,
            early: EarlyState::Done,
        }
    }

    /// A client stream that strips the server's optional early payload from the front of
    /// the plaintext, lazily on first read, and reports it through the returned handle.
    pub fn new_client(io: IO, transport: Transport) -> (Self, EarlyPayload) {
        let mut stream = Self::new(io, transport);
        let slot = EarlyPayload::default();
        stream.early = EarlyState::Detect(slot.clone());
        (stream, slot)
    }

    /// Queues the early payload as the first plaintext (server side, before any write).
    pub fn queue_early_payload(&mut self, challenge: ChallengePublic) -> io::Result<()> {
        self.seal_open_record()?;
        self.encryptor
            .encrypt(&early_payload_bytes(challenge), &mut self.out)
            .map_err(record_io_error)?;
        self.sealed = self.out.len();
        Ok(())
    }

    /// Queues bytes to go out unencrypted ahead of everything not yet written: the handshake
    /// response, so it shares a flush (and usually a TCP segment) with what follows.
    pub(crate) fn queue_raw(&mut self, bytes: &[u8]) {
        debug_assert!(self.out.is_empty(), "raw bytes must precede all records");
        self.out.extend_from_slice(bytes);
        self.sealed = self.out.len();
    }

    pub fn get_ref(&self) -> &IO {
        &self.io
    }

    pub fn get_mut(&mut self) -> &mut IO {
        &mut self.io
    }

    fn has_open_record(&self) -> bool {
        self.out.len() > self.sealed
    }

    fn seal_open_record(&mut self) -> io::Result<()> {
        if !self.has_open_record() {
            return Ok(());
        }
        if self.out.len() == self.sealed + HEADER_LEN {
            // Opened but never written to: not worth an empty record.
            self.out.truncate(self.sealed);
            return Ok(());
        }
        self.encryptor
            .seal(&mut self.out, self.sealed)
            .map_err(record_io_error)?;
        self.sealed = self.out.len();
        Ok(())
    }
}

impl<IO: AsyncRead + Unpin> NoiseStream<IO> {
    /// Decrypts until at least `want` plaintext bytes are buffered or the stream ends.
    fn poll_fill(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<io::Result<()>> {
        loop {
            if self.plain.len() >= want {
                return Poll::Ready(Ok(()));
            }
            match self.decoder.next_record().map_err(record_io_error)? {
                Some(record) if self.plain.is_empty() => {
                    self.plain = record;
                    continue;
                }
                Some(record) => {
                    self.plain.extend_from_slice(&record);
                    continue;
                }
                None => {}
            }
            if self.read_eof {
                return Poll::Ready(self.decoder.finish().map_err(record_io_error));
            }
            let buf = self.decoder.buffer_mut();
            // Into spare capacity, not zeroed first: every byte read is decrypted anyway.
            buf.reserve(READ_CHUNK);
            let polled = poll_read_buf(Pin::new(&mut self.io), cx, buf);
            match polled {
                Poll::Pending => {
                    // An idle connection (the usual state of a map long-poll) keeps no
                    // read buffer: 10,000 of them would otherwise pin 160 MiB.
                    if buf.is_empty() {
                        *buf = BytesMut::new();
                    }
                    return Poll::Pending;
                }
                Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
                Poll::Ready(Ok(0)) => self.read_eof = true,
                Poll::Ready(Ok(_)) => {}
            }
        }
    }

    fn poll_strip_early_payload(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let EarlyState::Detect(slot) = &self.early else {
            return Poll::Ready(Ok(()));
        };
        let slot = slot.clone();
        ready!(self.poll_fill(cx, EARLY_HEADER_LEN))?;
        let mut challenge = None;
        if self.plain.len() >= EARLY_HEADER_LEN && self.plain[..5] == EARLY_PAYLOAD_MAGIC {
            let len =
                u32::from_be_bytes([self.plain[5], self.plain[6], self.plain[7], self.plain[8]])
                    as usize;
            if len > MAX_EARLY_PAYLOAD_LEN {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("early payload of {len} bytes exceeds {MAX_EARLY_PAYLOAD_LEN}"),
                )));
            }
            ready!(self.poll_fill(cx, EARLY_HEADER_LEN + len))?;
            if self.plain.len() < EARLY_HEADER_LEN + len {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "stream ended inside the early payload",
                )));
            }
            let early: EarlyNoise =
                serde_json::from_slice(&self.plain[EARLY_HEADER_LEN..EARLY_HEADER_LEN + len])
                    .map_err(|err| {
                        io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("bad early payload: {err}"),
                        )
                    })?;
            challenge = Some(early.node_key_challenge);
            self.plain.advance(EARLY_HEADER_LEN + len);
        }
        let _ = slot.0.set(challenge);
        self.early = EarlyState::Done;
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncWrite + Unpin> NoiseStream<IO> {
    /// Writes sealed ciphertext until it is all out or the socket is not ready.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sealed > 0 {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.out[..self.sealed]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out.advance(n);
            self.sealed -= n;
        }
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for NoiseStream<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_strip_early_payload(cx))?;
        if this.plain.is_empty() {
            ready!(this.poll_fill(cx, 1))?;
        }
        let n = this.plain.len().min(buf.remaining());
        buf.put_slice(&this.plain[..n]);
        this.plain.advance(n);
        if this.plain.is_empty() {
            // Drop the empty view's hold on the receive buffer's allocation.
            this.plain = BytesMut::new();
        }
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for NoiseStream<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if this.sealed >= WRITE_HIGH_WATER {
            if let Poll::Ready(Err(err)) = this.poll_drain(cx) {
                return Poll::Ready(Err(err));
            }
            if this.sealed >= WRITE_HIGH_WATER {
                return Poll::Pending;
            }
        }
        if buf.len() >= MAX_PLAINTEXT_LEN {
            // A bulk write (a map's DATA frame): room for a whole batch at once, instead of
            // doubling record by record and copying what is held at every step.
            this.out
                .reserve(WRITE_CAPACITY.saturating_sub(this.out.len()));
        }
        let mut written = 0;
        while written < buf.len() && this.sealed < WRITE_HIGH_WATER {
            if !this.has_open_record() {
                this.out.put_bytes(0, HEADER_LEN);
            }
            let open_len = this.out.len() - this.sealed - HEADER_LEN;
            let take = (MAX_PLAINTEXT_LEN - open_len).min(buf.len() - written);
            this.out.extend_from_slice(&buf[written..written + take]);
            written += take;
            if open_len + take == MAX_PLAINTEXT_LEN {
                this.seal_open_record()?;
            }
        }
        Poll::Ready(Ok(written))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        this.seal_open_record()?;
        ready!(this.poll_drain(cx))?;
        // The writer is done for now and a long poll is mostly idle: give the buffer back
        // (`capacity()` would not tell its size; a drained view has little left).
        // Drains in the middle of a write keep theirs, as more is coming.
        this.out = BytesMut::new();
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.as_mut().poll_flush(cx))?;
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    use super::*;
    use crate::record::{MAX_RECORD_LEN, MSG_RECORD};

    const KEY_A: [u8; 32] = [1; 32];
    const KEY_B: [u8; 32] = [2; 32];

    fn server_and_client_transports() -> (Transport, Transport) {
        (Transport::new(KEY_A, KEY_B), Transport::new(KEY_B, KEY_A))
    }

    #[tokio::test]
    async fn big_transfer_both_ways() {
        let (a, b) = duplex(8 * 1024);
        let (ta, tb) = server_and_client_transports();
        let mut server = NoiseStream::new(a, ta);
        let (mut client, early) = NoiseStream::new_client(b, tb);
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 256) as u8).collect();

        let expected = data.clone();
        let server_task = tokio::spawn(async move {
            let mut got = vec![0u8; expected.len()];
            server.read_exact(&mut got).await.unwrap();
            assert_eq!(got, expected);
            server.write_all(&got).await.unwrap();
            server.flush().await.unwrap();
            server
        });
        client.write_all(&data).await.unwrap();
        client.flush().await.unwrap();
        let mut back = vec![0u8; data.len()];
        client.read_exact(&mut back).await.unwrap();
        assert_eq!(back, data);
        assert_eq!(early.challenge(), Some(None), "no early payload was sent");
        server_task.await.unwrap();
    }

    #[tokio::test]
    async fn small_writes_are_batched_into_full_records() {
        let (a, mut raw) = duplex(1 << 20);
        let (ta, _) = server_and_client_transports();
        let mut stream = NoiseStream::new(a, ta);
        for _ in 0..1000 {
            stream.write_all(&[0xaa; 9]).await.unwrap();
        }
        stream.flush().await.unwrap();
        drop(stream);
        let mut wire = Vec::new();
        raw.read_to_end(&mut wire).await.unwrap();
        // 9000 bytes: two full records and one of 846 bytes.
        assert_eq!(wire.len(), 9000 + 3 * 19);
        assert_eq!(&wire[..3], &[MSG_RECORD, 0x0f, 0xfd]);
        assert!(wire.len() > MAX_RECORD_LEN);
    }

    #[tokio::test]
    async fn early_payload_is_stripped_and_reported() {
        let (a, b) = duplex(64 * 1024);
        let (ta, tb) = server_and_client_transports();
        let mut server = NoiseStream::new(a, ta);
        let challenge = fresh_challenge();
        server.queue_early_payload(challenge).unwrap();
        server.write_all(b"PRI h2 bytes").await.unwrap();
        server.flush().await.unwrap();

        let (mut client, early) = NoiseStream::new_client(b, tb);
        assert_eq!(early.challenge(), None);
        let mut got = [0u8; 12];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"PRI h2 bytes");
        assert_eq!(early.challenge(), Some(Some(challenge)));
    }

    #[test]
    fn early_payload_layout() {
        let challenge = ChallengePublic([0xab; 32]);
        let bytes = early_payload_bytes(challenge);
        assert_eq!(&bytes[..5], b"\xff\xff\xffTS");
        let len = u32::from_be_bytes(bytes[5..9].try_into().unwrap()) as usize;
        assert_eq!(len, bytes.len() - 9);
        assert_eq!(
            std::str::from_utf8(&bytes[9..]).unwrap(),
            format!("{{\"nodeKeyChallenge\":\"chalpub:{}\"}}", "ab".repeat(32))
        );
    }

    #[tokio::test]
    async fn short_first_message_without_early_payload_passes_through() {
        let (a, b) = duplex(1024);
        let (ta, tb) = server_and_client_transports();
        let mut server = NoiseStream::new(a, ta);
        server.write_all(b"hi").await.unwrap();
        server.shutdown().await.unwrap();
        drop(server);
        let (mut client, early) = NoiseStream::new_client(b, tb);
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"hi");
        assert_eq!(early.challenge(), Some(None));
    }

    #[tokio::test]
    async fn truncated_record_mid_stream_is_an_error() {
        let (a, mut raw) = duplex(64 * 1024);
        let (_, tb) = server_and_client_transports();
        let mut sender = Transport::new(KEY_A, KEY_B);
        let mut wire = BytesMut::new();
        sender.encrypt(b"complete record", &mut wire).unwrap();
        sender.encrypt(b"this one is cut", &mut wire).unwrap();
        raw.write_all(&wire[..wire.len() - 7]).await.unwrap();
        drop(raw);

        let mut receiver = NoiseStream::new(a, tb);
        let mut got = [0u8; 15];
        receiver.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"complete record");
        let err = receiver.read(&mut got).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(
            find_record_error(&err),
            Some(&RecordError::Truncated {
                buffered: 3 + 15 + 16 - 7
            })
        );
    }

    #[tokio::test]
    async fn garbage_is_an_invalid_data_error() {
        let (a, mut raw) = duplex(1024);
        let (ta, _) = server_and_client_transports();
        raw.write_all(b"\x17\x03\x03garbage").await.unwrap();
        let mut receiver = NoiseStream::new(a, ta);
        let err = receiver.read(&mut [0u8; 16]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert_eq!(
            find_record_error(&err),
            Some(&RecordError::BadType { got: 0x17 })
        );
    }

    #[tokio::test]
    async fn idle_stream_holds_no_large_buffers() {
        let (a, b) = duplex(1 << 20);
        let (ta, tb) = server_and_client_transports();
        let mut server = NoiseStream::new(a, ta);
        let mut client = NoiseStream::new(b, tb);
        let data = vec![0x42u8; 200_000];
        client.write_all(&data).await.unwrap();
        client.flush().await.unwrap();
        let mut got = vec![0u8; data.len()];
        server.read_exact(&mut got).await.unwrap();
        // Now idle: the next read is pending.
        let mut one = [0u8; 1];
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(20), server.read(&mut one))
                .await
                .is_err()
        );
        assert_eq!(server.decoder.buffered(), 0);
        assert_eq!(server.decoder.buffer_mut().capacity(), 0);
        assert_eq!(server.plain.capacity(), 0);
        // A flushed writer keeps no buffer at all.
        assert_eq!(client.out.capacity(), 0);
    }

    #[tokio::test]
    async fn writes_push_back_when_the_socket_is_full() {
        // Nobody reads the far end: buffered ciphertext must stay bounded.
        let (a, _far) = duplex(4096);
        let (ta, _) = server_and_client_transports();
        let mut stream = NoiseStream::new(a, ta);
        let chunk = vec![0u8; 16 * 1024];
        let mut accepted = 0usize;
        let result = tokio::time::timeout(std::time::Duration::from_millis(200), async {
            loop {
                accepted += stream.write(&chunk).await.unwrap();
            }
        })
        .await;
        assert!(result.is_err(), "writes never blocked");
        assert!(
            accepted < WRITE_HIGH_WATER + 2 * 4096 + 4096 + chunk.len(),
            "accepted {accepted}"
        );
        assert!(stream.out.len() <= WRITE_HIGH_WATER + MAX_RECORD_LEN + 8192);
    }
}
