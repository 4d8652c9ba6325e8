//! The floor of a fan-out: the unavoidable per-receiver work of sending one message —
//! zstd level 1 (what the server uses) and ChaCha20-Poly1305 record encryption — with no
//! map building, JSON, HTTP/2 or scheduling.

use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use oxiscale_noise::Transport;

#[derive(Debug, Clone, Copy)]
pub struct Floor {
    pub receivers: usize,
    pub json_len: usize,
    pub wire_len: usize,
    pub total: Duration,
}

/// Compresses and encrypts `json` once per receiver, as the server would for each stream.
pub fn measure(json: &[u8], receivers: usize) -> Floor {
    let mut compressor = zstd::bulk::Compressor::new(1).expect("zstd context");
    let mut transport = Transport::new(rand::random(), rand::random());
    let mut framed = BytesMut::new();
    let mut records = BytesMut::new();
    let mut wire_len = 0;
    let start = Instant::now();
    for _ in 0..receivers {
        let compressed = compressor
            .compress(json)
            .expect("zstd compression into a growable buffer");
        framed.clear();
        framed.put_u32_le(compressed.len() as u32);
        framed.extend_from_slice(&compressed);
        records.clear();
        transport
            .encrypt(&framed, &mut records)
            .expect("nonces last far longer than a benchmark");
        wire_len = records.len();
    }
    Floor {
        receivers,
        json_len: json.len(),
        wire_len,
        total: start.elapsed(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_with_receivers_and_reports_sizes() {
        let json = br#"{"PeersChangedPatch":[{"NodeID":5,"Endpoints":["198.51.0.5:41642"]}]}"#;
        let f = measure(json, 100);
        assert_eq!(f.receivers, 100);
        assert_eq!(f.json_len, json.len());
        // One record: 3-byte header + 4-byte length + zstd frame + 16-byte tag.
        assert!(
            f.wire_len > 3 + 4 + 16 && f.wire_len < json.len() + 64,
            "{f:?}"
        );
        assert!(f.total > Duration::ZERO);
    }
}
