//! DERP framing, sans-IO: `type(1) || length(4, BE) || payload`.
//!
//! [`FrameDecoder`] is fed arbitrary byte chunks and yields whole frames; it checks the
//! length limits as soon as a header is complete, so an oversized frame is refused before
//! its payload is buffered. [`Frame::encode`] writes one frame.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use oxiscale_tailcfg::NodePublic;

/// Version spoken in ClientInfo/ServerInfo and the `Derp-Version` header.
pub const PROTOCOL_VERSION: u32 = 2;
/// Bytes of a node or server public key on the wire.
pub const KEY_LEN: usize = 32;
/// Bytes of a NaCl box nonce.
pub const NONCE_LEN: usize = 24;
/// Type byte plus the 4-byte length.
pub const FRAME_HEADER_LEN: usize = 5;
/// Largest packet carried in SendPacket/RecvPacket, after the key.
pub const MAX_PACKET_SIZE: usize = 64 << 10;
/// Largest frame of any kind.
pub const MAX_FRAME_SIZE: usize = 1 << 20;
/// Largest ClientInfo frame the server reads (key + nonce + box).
pub const MAX_CLIENT_INFO_LEN: usize = 256 << 10;
/// Largest Ping/Pong payload accepted; only the first 8 bytes matter.
pub const MAX_PING_LEN: usize = 1000;
/// Start of the ServerKey payload: `"DERP🔑"` in UTF-8.
pub const SERVER_KEY_MAGIC: [u8; 8] = [0x44, 0x45, 0x52, 0x50, 0xF0, 0x9F, 0x94, 0x91];

/// Frame type bytes (`derp.go`).
pub mod frame_type {
    pub const SERVER_KEY: u8 = 0x01;
    pub const CLIENT_INFO: u8 = 0x02;
    pub const SERVER_INFO: u8 = 0x03;
    pub const SEND_PACKET: u8 = 0x04;
    pub const RECV_PACKET: u8 = 0x05;
    pub const KEEP_ALIVE: u8 = 0x06;
    pub const NOTE_PREFERRED: u8 = 0x07;
    pub const PEER_GONE: u8 = 0x08;
    pub const PEER_PRESENT: u8 = 0x09;
    pub const FORWARD_PACKET: u8 = 0x0a;
    pub const WATCH_CONNS: u8 = 0x10;
    pub const CLOSE_PEER: u8 = 0x11;
    pub const PING: u8 = 0x12;
    pub const PONG: u8 = 0x13;
    pub const HEALTH: u8 = 0x14;
    pub const RESTARTING: u8 = 0x15;
}

/// Why a peer is reported gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerGoneReason {
    /// The peer was connected and has left.
    Disconnected,
    /// A packet was sent to a key that is not connected here.
    NotHere,
    /// A reason byte this implementation does not know.
    Other(u8),
}

impl PeerGoneReason {
    pub fn to_byte(self) -> u8 {
        match self {
            Self::Disconnected => 0x00,
            Self::NotHere => 0x01,
            Self::Other(b) => b,
        }
    }

    pub fn from_byte(b: u8) -> Self {
        match b {
            0x00 => Self::Disconnected,
            0x01 => Self::NotHere,
            other => Self::Other(other),
        }
    }
}

/// One decoded DERP frame. Mesh-only frames and unknown types surface as [`Frame::Other`],
/// which both sides skip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    ServerKey {
        key: [u8; KEY_LEN],
    },
    /// `sealed` is `nonce(24) || NaCl box`, opened by [`crate::handshake`].
    ClientInfo {
        key: NodePublic,
        sealed: Bytes,
    },
    ServerInfo {
        sealed: Bytes,
    },
    SendPacket {
        dst: NodePublic,
        packet: Bytes,
    },
    RecvPacket {
        src: NodePublic,
        packet: Bytes,
    },
    KeepAlive,
    NotePreferred {
        preferred: bool,
    },
    PeerGone {
        peer: NodePublic,
        reason: PeerGoneReason,
    },
    Ping {
        data: [u8; 8],
    },
    Pong {
        data: [u8; 8],
    },
    Health {
        problem: String,
    },
    Restarting {
        reconnect_in_ms: u32,
        try_for_ms: u32,
    },
    Other {
        frame_type: u8,
        payload: Bytes,
    },
}

/// A frame the decoder refuses; the connection that sent it should be closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame type {frame_type:#04x} declares {len} bytes, more than the {max}-byte limit")]
    TooLarge {
        frame_type: u8,
        len: usize,
        max: usize,
    },
    #[error("frame type {frame_type:#04x} has {len} bytes, fewer than the {min} it needs")]
    TooShort {
        frame_type: u8,
        len: usize,
        min: usize,
    },
    #[error("ServerKey frame does not start with the DERP magic")]
    BadMagic,
    #[error("Health frame is not UTF-8")]
    HealthNotUtf8,
}

impl Frame {
    /// The type byte this frame is written with.
    pub fn frame_type(&self) -> u8 {
        use frame_type::*;
        match self {
            Frame::ServerKey { .. } => SERVER_KEY,
            Frame::ClientInfo { .. } => CLIENT_INFO,
            Frame::ServerInfo { .. } => SERVER_INFO,
            Frame::SendPacket { .. } => SEND_PACKET,
            Frame::RecvPacket { .. } => RECV_PACKET,
            Frame::KeepAlive => KEEP_ALIVE,
            Frame::NotePreferred { .. } => NOTE_PREFERRED,
            Frame::PeerGone { .. } => PEER_GONE,
            Frame::Ping { .. } => PING,
            Frame::Pong { .. } => PONG,
            Frame::Health { .. } => HEALTH,
            Frame::Restarting { .. } => RESTARTING,
            Frame::Other { frame_type, .. } => *frame_type,
        }
    }

    fn payload_len(&self) -> usize {
        match self {
            Frame::ServerKey { .. } => SERVER_KEY_MAGIC.len() + KEY_LEN,
            Frame::ClientInfo { sealed, .. } => KEY_LEN + sealed.len(),
            Frame::ServerInfo { sealed } => sealed.len(),
            Frame::SendPacket { packet, .. } | Frame::RecvPacket { packet, .. } => {
                KEY_LEN + packet.len()
            }
            Frame::KeepAlive => 0,
            Frame::NotePreferred { .. } => 1,
            Frame::PeerGone { .. } => KEY_LEN + 1,
            Frame::Ping { .. } | Frame::Pong { .. } => 8,
            Frame::Health { problem } => problem.len(),
            Frame::Restarting { .. } => 8,
            Frame::Other { payload, .. } => payload.len(),
        }
    }

    /// Appends the encoded frame to `out`. Callers keep packets within
    /// [`MAX_PACKET_SIZE`]; the encoder does not re-check what it is given.
    pub fn encode(&self, out: &mut BytesMut) {
        let len = self.payload_len();
        out.reserve(FRAME_HEADER_LEN + len);
        out.put_u8(self.frame_type());
        // Every constructor path keeps payloads far below 4 GiB.
        out.put_u32(len as u32);
        match self {
            Frame::ServerKey { key } => {
                out.put_slice(&SERVER_KEY_MAGIC);
                out.put_slice(key);
            }
            Frame::ClientInfo { key, sealed } => {
                out.put_slice(key.as_bytes());
                out.put_slice(sealed);
            }
            Frame::ServerInfo { sealed } => out.put_slice(sealed),
            Frame::SendPacket { dst: key, packet } | Frame::RecvPacket { src: key, packet } => {
                out.put_slice(key.as_bytes());
                out.put_slice(packet);
            }
            Frame::KeepAlive => {}
            Frame::NotePreferred { preferred } => out.put_u8(u8::from(*preferred)),
            Frame::PeerGone { peer, reason } => {
                out.put_slice(peer.as_bytes());
                out.put_u8(reason.to_byte());
            }
            Frame::Ping { data } | Frame::Pong { data } => out.put_slice(data),
            Frame::Health { problem } => out.put_slice(problem.as_bytes()),
            Frame::Restarting {
                reconnect_in_ms,
                try_for_ms,
            } => {
                out.put_u32(*reconnect_in_ms);
                out.put_u32(*try_for_ms);
            }
            Frame::Other { payload, .. } => out.put_slice(payload),
        }
    }

    /// The encoded frame as a fresh buffer.
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::new();
        self.encode(&mut out);
        out.freeze()
    }

    /// Parses a complete payload of the given type.
    pub fn parse(frame_type: u8, mut payload: Bytes) -> Result<Frame, FrameError> {
        use frame_type::*;
        let need = |min: usize| {
            if payload.len() < min {
                Err(FrameError::TooShort {
                    frame_type,
                    len: payload.len(),
                    min,
                })
            } else {
                Ok(())
            }
        };
        let frame = match frame_type {
            SERVER_KEY => {
                need(SERVER_KEY_MAGIC.len() + KEY_LEN)?;
                if payload[..8] != SERVER_KEY_MAGIC {
                    return Err(FrameError::BadMagic);
                }
                // Extra trailing bytes are reserved for future use and ignored.
                Frame::ServerKey {
                    key: take_key(&mut payload.slice(8..)).0,
                }
            }
            CLIENT_INFO => {
                need(KEY_LEN)?;
                let key = take_key(&mut payload);
                Frame::ClientInfo {
                    key,
                    sealed: payload,
                }
            }
            SERVER_INFO => Frame::ServerInfo { sealed: payload },
            SEND_PACKET => {
                need(KEY_LEN)?;
                let dst = take_key(&mut payload);
                Frame::SendPacket {
                    dst,
                    packet: payload,
                }
            }
            RECV_PACKET => {
                need(KEY_LEN)?;
                let src = take_key(&mut payload);
                Frame::RecvPacket {
                    src,
                    packet: payload,
                }
            }
            KEEP_ALIVE => Frame::KeepAlive,
            NOTE_PREFERRED => {
                need(1)?;
                Frame::NotePreferred {
                    preferred: payload[0] != 0,
                }
            }
            PEER_GONE => {
                need(KEY_LEN)?;
                let peer = take_key(&mut payload);
                // Old servers sent the key alone, meaning "disconnected".
                let reason = payload
                    .first()
                    .copied()
                    .map_or(PeerGoneReason::Disconnected, PeerGoneReason::from_byte);
                Frame::PeerGone { peer, reason }
            }
            PING | PONG => {
                need(8)?;
                let mut data = [0u8; 8];
                data.copy_from_slice(&payload[..8]);
                if frame_type == PING {
                    Frame::Ping { data }
                } else {
                    Frame::Pong { data }
                }
            }
            HEALTH => Frame::Health {
                problem: String::from_utf8(payload.to_vec())
                    .map_err(|_| FrameError::HealthNotUtf8)?,
            },
            RESTARTING => {
                need(8)?;
                let reconnect_in_ms = payload.get_u32();
                let try_for_ms = payload.get_u32();
                Frame::Restarting {
                    reconnect_in_ms,
                    try_for_ms,
                }
            }
            other => Frame::Other {
                frame_type: other,
                payload,
            },
        };
        Ok(frame)
    }
}

fn take_key(payload: &mut Bytes) -> NodePublic {
    let mut key = [0u8; KEY_LEN];
    key.copy_from_slice(&payload[..KEY_LEN]);
    payload.advance(KEY_LEN);
    NodePublic(key)
}

/// The largest payload a frame of this type may declare.
pub fn max_payload_len(frame_type: u8) -> usize {
    use frame_type::*;
    match frame_type {
        SEND_PACKET | RECV_PACKET => KEY_LEN + MAX_PACKET_SIZE,
        FORWARD_PACKET => 2 * KEY_LEN + MAX_PACKET_SIZE,
        CLIENT_INFO => MAX_CLIENT_INFO_LEN,
        PING | PONG => MAX_PING_LEN,
        _ => MAX_FRAME_SIZE,
    }
}

/// Incremental decoder: [`feed`](Self::feed) bytes as they arrive, then drain
/// [`next_frame`](Self::next_frame) until it returns `Ok(None)`.
///
/// After an error the stream is unsynchronised; the caller must drop the connection.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: BytesMut,
}

impl FrameDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn feed(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// Bytes received but not yet part of a returned frame.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Type byte of the frame being received, once its first byte has arrived.
    pub fn pending_frame_type(&self) -> Option<u8> {
        self.buf.first().copied()
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        if self.buf.len() < FRAME_HEADER_LEN {
            return Ok(None);
        }
        let frame_type = self.buf[0];
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        let max = max_payload_len(frame_type);
        if len > max {
            return Err(FrameError::TooLarge {
                frame_type,
                len,
                max,
            });
        }
        if self.buf.len() < FRAME_HEADER_LEN + len {
            // Reserve once so a large frame arriving in small chunks is not copied repeatedly.
            self.buf.reserve(FRAME_HEADER_LEN + len - self.buf.len());
            return Ok(None);
        }
        self.buf.advance(FRAME_HEADER_LEN);
        let payload = self.buf.split_to(len).freeze();
        Frame::parse(frame_type, payload).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> NodePublic {
        NodePublic([b; 32])
    }

    fn all_frames() -> Vec<Frame> {
        vec![
            Frame::ServerKey { key: [7; 32] },
            Frame::ClientInfo {
                key: key(1),
                sealed: Bytes::from_static(&[9; 60]),
            },
            Frame::ServerInfo {
                sealed: Bytes::from_static(&[8; 50]),
            },
            Frame::SendPacket {
                dst: key(2),
                packet: Bytes::from_static(b"hello"),
            },
            Frame::RecvPacket {
                src: key(3),
                packet: Bytes::from(vec![0xaa; MAX_PACKET_SIZE]),
            },
            Frame::KeepAlive,
            Frame::NotePreferred { preferred: true },
            Frame::NotePreferred { preferred: false },
            Frame::PeerGone {
                peer: key(4),
                reason: PeerGoneReason::NotHere,
            },
            Frame::PeerGone {
                peer: key(5),
                reason: PeerGoneReason::Disconnected,
            },
            Frame::Ping { data: *b"12345678" },
            Frame::Pong { data: *b"abcdefgh" },
            Frame::Health {
                problem: "duplicate client".into(),
            },
            Frame::Restarting {
                reconnect_in_ms: 500,
                try_for_ms: 10_000,
            },
            Frame::Other {
                frame_type: 0x42,
                payload: Bytes::from_static(b"future"),
            },
        ]
    }

    #[test]
    fn server_key_bytes_match_the_wire() {
        let bytes = Frame::ServerKey { key: [0x11; 32] }.to_bytes();
        assert_eq!(&bytes[..5], &[0x01, 0, 0, 0, 40]);
        assert_eq!(&bytes[5..13], b"DERP\xF0\x9F\x94\x91");
        assert_eq!(&bytes[13..], &[0x11; 32]);
    }

    #[test]
    fn peer_gone_and_send_packet_layout() {
        let bytes = Frame::PeerGone {
            peer: key(4),
            reason: PeerGoneReason::NotHere,
        }
        .to_bytes();
        assert_eq!(&bytes[..5], &[0x08, 0, 0, 0, 33]);
        assert_eq!(bytes[37], 0x01);
        let bytes = Frame::SendPacket {
            dst: key(2),
            packet: Bytes::from_static(b"xy"),
        }
        .to_bytes();
        assert_eq!(&bytes[..5], &[0x04, 0, 0, 0, 34]);
        assert_eq!(&bytes[37..], b"xy");
    }

    #[test]
    fn round_trips_every_frame_in_one_chunk() {
        let mut wire = BytesMut::new();
        for f in all_frames() {
            f.encode(&mut wire);
        }
        let mut dec = FrameDecoder::new();
        dec.feed(&wire);
        let mut got = Vec::new();
        while let Some(f) = dec.next_frame().unwrap() {
            got.push(f);
        }
        assert_eq!(got, all_frames());
        assert_eq!(dec.buffered(), 0);
    }

    #[test]
    fn round_trips_when_fed_one_byte_at_a_time_and_in_odd_chunks() {
        let mut wire = BytesMut::new();
        for f in all_frames() {
            f.encode(&mut wire);
        }
        for chunk_size in [1usize, 2, 3, 4, 5, 6, 7, 13, 4096] {
            let mut dec = FrameDecoder::new();
            let mut got = Vec::new();
            for chunk in wire.chunks(chunk_size) {
                dec.feed(chunk);
                while let Some(f) = dec.next_frame().unwrap() {
                    got.push(f);
                }
            }
            assert_eq!(got, all_frames(), "chunk size {chunk_size}");
        }
    }

    #[test]
    fn partial_header_and_partial_payload_wait_for_more() {
        let wire = Frame::Ping { data: *b"pingpong" }.to_bytes();
        let mut dec = FrameDecoder::new();
        assert_eq!(dec.pending_frame_type(), None);
        dec.feed(&wire[..3]);
        assert_eq!(dec.pending_frame_type(), Some(frame_type::PING));
        assert_eq!(dec.next_frame().unwrap(), None);
        dec.feed(&wire[3..9]);
        assert_eq!(dec.next_frame().unwrap(), None);
        dec.feed(&wire[9..]);
        assert_eq!(
            dec.next_frame().unwrap(),
            Some(Frame::Ping { data: *b"pingpong" })
        );
        assert_eq!(dec.next_frame().unwrap(), None);
    }

    #[test]
    fn refuses_oversized_frames_from_the_header_alone() {
        let mut dec = FrameDecoder::new();
        dec.feed(&[0x42, 0x00, 0x10, 0x00, 0x01]); // 1 MiB + 1
        assert_eq!(
            dec.next_frame(),
            Err(FrameError::TooLarge {
                frame_type: 0x42,
                len: MAX_FRAME_SIZE + 1,
                max: MAX_FRAME_SIZE
            })
        );
        // Exactly 1 MiB of an unknown type is still allowed (skipped by callers).
        let mut dec = FrameDecoder::new();
        dec.feed(&[0x42, 0x00, 0x10, 0x00, 0x00]);
        assert_eq!(dec.next_frame(), Ok(None));
    }

    #[test]
    fn refuses_packets_over_64k_and_client_info_over_256k() {
        let mut dec = FrameDecoder::new();
        let len = (KEY_LEN + MAX_PACKET_SIZE + 1) as u32;
        dec.feed(&[frame_type::SEND_PACKET]);
        dec.feed(&len.to_be_bytes());
        assert!(matches!(
            dec.next_frame(),
            Err(FrameError::TooLarge {
                frame_type: 0x04,
                ..
            })
        ));

        let mut dec = FrameDecoder::new();
        dec.feed(&[frame_type::CLIENT_INFO]);
        dec.feed(&((MAX_CLIENT_INFO_LEN + 1) as u32).to_be_bytes());
        assert!(matches!(
            dec.next_frame(),
            Err(FrameError::TooLarge {
                frame_type: 0x02,
                ..
            })
        ));

        let mut dec = FrameDecoder::new();
        dec.feed(&[frame_type::PING]);
        dec.feed(&1001u32.to_be_bytes());
        assert!(matches!(
            dec.next_frame(),
            Err(FrameError::TooLarge {
                frame_type: 0x12,
                ..
            })
        ));
    }

    #[test]
    fn refuses_short_payloads_and_bad_magic() {
        let mut dec = FrameDecoder::new();
        dec.feed(&[frame_type::SEND_PACKET, 0, 0, 0, 3, 1, 2, 3]);
        assert_eq!(
            dec.next_frame(),
            Err(FrameError::TooShort {
                frame_type: 0x04,
                len: 3,
                min: 32
            })
        );
        let mut payload = vec![0u8; 40];
        payload[..8].copy_from_slice(b"NOTDERP!");
        assert_eq!(
            Frame::parse(frame_type::SERVER_KEY, payload.into()),
            Err(FrameError::BadMagic)
        );
        assert!(matches!(
            Frame::parse(frame_type::PING, Bytes::from_static(b"short")),
            Err(FrameError::TooShort { .. })
        ));
    }

    #[test]
    fn server_key_ignores_trailing_bytes_and_old_peer_gone_has_no_reason() {
        let mut payload = SERVER_KEY_MAGIC.to_vec();
        payload.extend_from_slice(&[5; 32]);
        payload.extend_from_slice(b"future");
        assert_eq!(
            Frame::parse(frame_type::SERVER_KEY, payload.into()),
            Ok(Frame::ServerKey { key: [5; 32] })
        );
        assert_eq!(
            Frame::parse(frame_type::PEER_GONE, Bytes::from(vec![6; 32])),
            Ok(Frame::PeerGone {
                peer: key(6),
                reason: PeerGoneReason::Disconnected
            })
        );
    }
}
