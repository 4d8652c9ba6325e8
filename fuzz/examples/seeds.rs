//! Writes the seeds that need real keys or exact encodings into `corpus/<target>/`:
//! genuine initiations for the server key the targets use, records sealed with the
//! records target's keys, every DERP frame type, STUN Binding Requests. The text seeds
//! (policies, configs, JSON requests) come from the repository's data; see FUZZING.md.
//!
//! `cargo +nightly run --example seeds` (from fuzz/).

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::{Bytes, BytesMut};
use oxiscale_derp::PeerGoneReason;
use oxiscale_derp::frame::{Frame, SERVER_KEY_MAGIC};
use oxiscale_fuzz::{RECORD_KEY_A, RECORD_KEY_B, request_to_bytes, server_key};
use oxiscale_noise::{Initiator, StaticKey, Transport};
use oxiscale_tailcfg::NodePublic;

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new("corpus").join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
}

fn initiation(client: u8, version: u16) -> [u8; 101] {
    let client = StaticKey::from_bytes([client; 32]);
    Initiator::new(&client, &server_key().public(), version)
        .unwrap()
        .1
}

fn main() {
    // noise_handshake: the first byte picks the minimum version (bit 1), then the message.
    write(
        "noise_handshake",
        "current",
        &[&[0u8][..], &initiation(1, 130)].concat(),
    );
    write(
        "noise_handshake",
        "old-version",
        &[&[2u8][..], &initiation(2, 90)].concat(),
    );

    // noise_session: client key, version, no tampering, a payload; then one tampered.
    let mut genuine = vec![3u8; 32];
    genuine.extend_from_slice(&130u16.to_be_bytes());
    genuine.push(0);
    genuine.extend_from_slice(b"GET /machine/map HTTP/2");
    write("noise_session", "genuine", &genuine);
    let mut tampered = genuine[..34].to_vec();
    tampered.extend_from_slice(&[40, 0x80, 0]);
    write("noise_session", "tampered", &tampered);

    // noise_records: records as the peer seals them, whole and in 7-byte chunks.
    let mut sender = Transport::new(RECORD_KEY_B, RECORD_KEY_A);
    let mut wire = BytesMut::new();
    sender
        .encrypt(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", &mut wire)
        .unwrap();
    sender
        .encryptor_mut()
        .encrypt_record(b"", &mut wire)
        .unwrap();
    sender.encrypt(&[0x42; 5000], &mut wire).unwrap();
    write("noise_records", "records", &[&[0u8, 0][..], &wire].concat());
    write(
        "noise_records",
        "records-chunked",
        &[&[0u8, 1, 1][..], &wire].concat(),
    );
    write(
        "noise_records",
        "round-trip",
        &[&[1u8, 2, 3, 9, 0, 0, 0][..], b"hello\xffworld\xff\xffagain"].concat(),
    );
    write(
        "noise_records",
        "round-trip-tampered",
        &[&[1u8, 0, 0, 20, 1][..], b"abc"].concat(),
    );

    // ts2021_upgrade: both forms, an old client, bad base64.
    let init = BASE64.encode(initiation(4, 130));
    write(
        "ts2021_upgrade",
        "post",
        &request_to_bytes(
            "/ts2021",
            &[
                ("Upgrade", "tailscale-control-protocol"),
                ("Connection", "upgrade"),
                ("X-Tailscale-Handshake", &init),
            ],
        ),
    );
    let query = init
        .replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D");
    write(
        "ts2021_upgrade",
        "websocket",
        &request_to_bytes(
            &format!("/ts2021?X-Tailscale-Handshake={query}"),
            &[
                ("Upgrade", "websocket"),
                ("Connection", "Upgrade"),
                ("Sec-WebSocket-Version", "13"),
                ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
                ("Sec-WebSocket-Protocol", "tailscale-control-protocol"),
            ],
        ),
    );
    write(
        "ts2021_upgrade",
        "old-version",
        &request_to_bytes(
            "/ts2021",
            &[
                ("Upgrade", "tailscale-control-protocol"),
                ("X-Tailscale-Handshake", &BASE64.encode(initiation(5, 90))),
            ],
        ),
    );
    write(
        "ts2021_upgrade",
        "bad-base64",
        &request_to_bytes(
            "/ts2021",
            &[
                ("Upgrade", "tailscale-control-protocol"),
                ("X-Tailscale-Handshake", "not*base64"),
            ],
        ),
    );

    // derp_frames: one of each type in one stream, and each alone.
    let key = NodePublic([9; 32]);
    let mut server_key_payload = SERVER_KEY_MAGIC.to_vec();
    server_key_payload.extend_from_slice(&[7; 32]);
    let frames = [
        Frame::ServerKey { key: [7; 32] },
        Frame::ClientInfo {
            key,
            sealed: Bytes::from_static(&[1; 60]),
        },
        Frame::ServerInfo {
            sealed: Bytes::from_static(&[2; 40]),
        },
        Frame::SendPacket {
            dst: key,
            packet: Bytes::from_static(b"wireguard"),
        },
        Frame::RecvPacket {
            src: key,
            packet: Bytes::from_static(b"wireguard"),
        },
        Frame::KeepAlive,
        Frame::NotePreferred { preferred: true },
        Frame::PeerGone {
            peer: key,
            reason: PeerGoneReason::NotHere,
        },
        Frame::Ping { data: *b"pingping" },
        Frame::Pong { data: *b"pongpong" },
        Frame::Health {
            problem: "overloaded".into(),
        },
        Frame::Restarting {
            reconnect_in_ms: 500,
            try_for_ms: 10_000,
        },
        Frame::Other {
            frame_type: 0x10,
            payload: Bytes::new(),
        },
    ];
    let mut all = vec![0u8];
    for (i, frame) in frames.iter().enumerate() {
        let bytes = frame.to_bytes();
        write(
            "derp_frames",
            &format!("frame-{i:02}"),
            &[&[0u8][..], &bytes].concat(),
        );
        all.extend_from_slice(&bytes);
    }
    write("derp_frames", "all", &all);

    // stun: Binding Requests as netcheck sends them (SOFTWARE, FINGERPRINT), and bare.
    let txid = [0x5c; 12];
    let mut bare = vec![0x00, 0x01, 0x00, 0x00];
    bare.extend_from_slice(&oxiscale_derp::stun::MAGIC_COOKIE);
    bare.extend_from_slice(&txid);
    write("stun", "bare-v4", &[&[0u8][..], &bare].concat());
    write("stun", "bare-v6", &[&[1u8][..], &bare].concat());
    let mut req = vec![0x00, 0x01, 0x00, 20];
    req.extend_from_slice(&oxiscale_derp::stun::MAGIC_COOKIE);
    req.extend_from_slice(&txid);
    req.extend_from_slice(&[0x80, 0x22, 0x00, 0x08]);
    req.extend_from_slice(b"tailnode");
    let crc = crc32(&req) ^ 0x5354_554E;
    req.extend_from_slice(&[0x80, 0x28, 0x00, 0x04]);
    req.extend_from_slice(&crc.to_be_bytes());
    write("stun", "tailnode", &[&[2u8][..], &req].concat());
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}
