//! The map stream as the generator sees it, sans-IO: split the HTTP/2 body into messages
//! (u32 little-endian length, then a zstd frame of JSON) and decode only the top-level keys
//! the scenarios need.
//!
//! Large messages (full maps of big tailnets) are not kept whole: only their first bytes are
//! buffered, enough to read the self node, and the rest is counted and dropped. That
//! keeps the generator's memory per node small and its CPU out of the server's way.

use std::cell::RefCell;
use std::io::Read;
use std::net::Ipv4Addr;

use oxiscale_tailcfg::FilterRule;
use serde::Deserialize;
use serde::de::IgnoredAny;

/// A length prefix beyond this is treated as a corrupt stream.
pub const MAX_MESSAGE_LEN: usize = 256 << 20;
/// Compressed bytes kept of a message too large to decode whole: enough for the frame header
/// and the whole first zstd block (≤ 128 KiB of content, stored raw at worst), since a
/// decoder emits nothing from a partial block.
pub const HEAD_LEN: usize = (128 << 10) + 1024;
/// Decompressed bytes read from such a head.
const HEAD_PLAIN_LEN: usize = 4 << 10;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("map message length {0} exceeds {MAX_MESSAGE_LEN}")]
    TooLong(usize),
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("zstd: {0}")]
    Zstd(#[source] std::io::Error),
    #[error("JSON: {0}")]
    Json(#[source] serde_json::Error),
}

/// One message cut from the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawMessage {
    /// Bytes on the stream: prefix plus compressed payload.
    pub wire_len: usize,
    /// The compressed payload, or its first [`HEAD_LEN`] bytes when `head_only`.
    pub data: Vec<u8>,
    pub head_only: bool,
}

/// Splits a byte stream fed in arbitrary chunks into [`RawMessage`]s.
#[derive(Debug)]
pub struct FrameDecoder {
    /// Messages up to this many compressed bytes are kept whole.
    collect_limit: usize,
    prefix: [u8; 4],
    prefix_len: usize,
    body: Option<Body>,
}

#[derive(Debug)]
struct Body {
    len: usize,
    received: usize,
    keep: usize,
    data: Vec<u8>,
}

impl FrameDecoder {
    pub fn new(collect_limit: usize) -> Self {
        FrameDecoder {
            collect_limit,
            prefix: [0; 4],
            prefix_len: 0,
            body: None,
        }
    }

    /// Consumes `chunk`, appending every message it completes to `out`.
    pub fn feed(&mut self, mut chunk: &[u8], out: &mut Vec<RawMessage>) -> Result<(), FrameError> {
        while !chunk.is_empty() {
            let Some(body) = &mut self.body else {
                let take = (4 - self.prefix_len).min(chunk.len());
                self.prefix[self.prefix_len..self.prefix_len + take]
                    .copy_from_slice(&chunk[..take]);
                self.prefix_len += take;
                chunk = &chunk[take..];
                if self.prefix_len == 4 {
                    self.prefix_len = 0;
                    let len = u32::from_le_bytes(self.prefix) as usize;
                    if len > MAX_MESSAGE_LEN {
                        return Err(FrameError::TooLong(len));
                    }
                    let keep = if len <= self.collect_limit {
                        len
                    } else {
                        HEAD_LEN.min(len)
                    };
                    self.body = Some(Body {
                        len,
                        received: 0,
                        keep,
                        data: Vec::with_capacity(keep),
                    });
                    self.finish_if_complete(out);
                }
                continue;
            };
            let take = (body.len - body.received).min(chunk.len());
            let keep_more = body.keep.saturating_sub(body.data.len()).min(take);
            body.data.extend_from_slice(&chunk[..keep_more]);
            body.received += take;
            chunk = &chunk[take..];
            self.finish_if_complete(out);
        }
        Ok(())
    }

    fn finish_if_complete(&mut self, out: &mut Vec<RawMessage>) {
        if let Some(body) = &self.body
            && body.received == body.len
        {
            let body = self.body.take().expect("checked above");
            out.push(RawMessage {
                wire_len: 4 + body.len,
                head_only: body.keep < body.len,
                data: body.data,
            });
        }
    }

    /// Whether the stream stopped between messages.
    #[cfg(test)]
    pub fn at_boundary(&self) -> bool {
        self.body.is_none() && self.prefix_len == 0
    }
}

/// The receiving node as its own map describes it.
#[derive(Deserialize)]
struct SelfNode {
    #[serde(rename = "ID")]
    id: u64,
    /// `["100.64.0.5/32", "fd7a:…/128"]`.
    #[serde(rename = "Addresses", default)]
    addresses: Vec<String>,
}

impl SelfNode {
    fn ipv4(&self) -> Option<Ipv4Addr> {
        self.addresses
            .iter()
            .find_map(|a| a.split('/').next()?.parse().ok())
    }
}

#[derive(Deserialize)]
struct ChangedPeer {
    #[serde(rename = "ID")]
    id: u64,
    #[serde(rename = "Key", default)]
    key: String,
}

#[derive(Deserialize)]
struct Patch {
    #[serde(rename = "NodeID")]
    node_id: u64,
    #[serde(rename = "Endpoints")]
    endpoints: Option<IgnoredAny>,
}

/// The top-level keys the scenarios look at; serde skips the rest without allocating.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Wire {
    #[serde(rename = "KeepAlive")]
    keep_alive: bool,
    #[serde(rename = "Node")]
    node: Option<SelfNode>,
    #[serde(rename = "Peers")]
    peers: Option<Vec<IgnoredAny>>,
    #[serde(rename = "PeersChanged")]
    peers_changed: Vec<ChangedPeer>,
    #[serde(rename = "PeersRemoved")]
    peers_removed: Vec<u64>,
    #[serde(rename = "PeersChangedPatch")]
    peers_changed_patch: Vec<Patch>,
    #[serde(rename = "PacketFilter")]
    packet_filter: Option<Vec<FilterRule>>,
}

/// What one map message says, as far as the scenarios care.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MapMessage {
    pub keep_alive: bool,
    /// `Node.ID`: the receiving node's own ID.
    pub self_id: Option<u64>,
    /// The IPv4 address in `Node.Addresses`.
    pub self_ipv4: Option<Ipv4Addr>,
    /// Length of `Peers` (full maps only).
    pub peer_count: Option<usize>,
    /// `PeersChanged`: (ID, node key text).
    pub changed: Vec<(u64, String)>,
    pub removed: Vec<u64>,
    /// IDs in `PeersChangedPatch` whose patch carries `Endpoints`.
    pub patched_endpoints: Vec<u64>,
    /// Other IDs in `PeersChangedPatch` (online, DERP home, …).
    pub patched_other: Vec<u64>,
    /// The first port of every destination in `PacketFilter`, when the message has one.
    pub filter_ports: Option<Vec<u16>>,
    /// Only the head was decoded: the lists above are empty because unknown.
    pub head_only: bool,
}

/// Something a change made by the generator should make viewers hear about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// New endpoints of node `id` (lite update).
    Endpoints(u64),
    /// A new node with this node key text.
    Joined(String),
    /// Node `id` left the viewers' peer lists.
    Removed(u64),
    /// A packet filter with a rule for this port (a new policy).
    FilterPort(u16),
}

impl MapMessage {
    pub fn mentions(&self, target: &Target) -> bool {
        match target {
            Target::Endpoints(id) => {
                self.patched_endpoints.contains(id) || self.changed.iter().any(|(c, _)| c == id)
            }
            Target::Joined(key) => self.changed.iter().any(|(_, k)| k == key),
            Target::Removed(id) => self.removed.contains(id),
            Target::FilterPort(port) => self
                .filter_ports
                .as_ref()
                .is_some_and(|ports| ports.contains(port)),
        }
    }
}

thread_local! {
    /// One zstd decompression context per generator thread. A fresh context per message
    /// (`zstd::stream::decode_all`) allocated and cleared its workspace and buffers every
    /// time: 68 % of the generator's samples in a 5,000-node churn (`ZSTD_createDCtx`),
    /// which made the generator, not the server, set the latencies it reported.
    static DCTX: RefCell<zstd::zstd_safe::DCtx<'static>> =
        RefCell::new(zstd::zstd_safe::DCtx::create());
}

/// Reads `data`'s zstd frames (any number of them) through this thread's context.
fn with_decoder<T>(
    data: &[u8],
    read: impl FnOnce(&mut dyn Read) -> std::io::Result<T>,
) -> std::io::Result<T> {
    DCTX.with(|cell| {
        let mut dctx = cell.borrow_mut();
        let mut decoder = zstd::stream::read::Decoder::with_context(data, &mut dctx);
        read(&mut decoder)
    })
}

/// Decompresses a whole message. The JSON is returned too: the floor benchmark re-sends it.
pub fn decompress(data: &[u8]) -> Result<Vec<u8>, DecodeError> {
    with_decoder(data, |r| {
        let mut json = Vec::new();
        r.read_to_end(&mut json).map(|_| json)
    })
    .map_err(DecodeError::Zstd)
}

/// Decodes a message's JSON into the summary.
pub fn parse(json: &[u8]) -> Result<MapMessage, DecodeError> {
    let w: Wire = serde_json::from_slice(json).map_err(DecodeError::Json)?;
    let mut m = MapMessage {
        keep_alive: w.keep_alive,
        self_id: w.node.as_ref().map(|n| n.id),
        self_ipv4: w.node.as_ref().and_then(SelfNode::ipv4),
        peer_count: w.peers.map(|p| p.len()),
        changed: w.peers_changed.into_iter().map(|p| (p.id, p.key)).collect(),
        removed: w.peers_removed,
        filter_ports: w.packet_filter.map(|rules| {
            rules
                .iter()
                .flat_map(|r| &r.dst_ports)
                .map(|d| d.ports.first)
                .collect()
        }),
        ..Default::default()
    };
    for p in w.peers_changed_patch {
        if p.endpoints.is_some() {
            m.patched_endpoints.push(p.node_id);
        } else {
            m.patched_other.push(p.node_id);
        }
    }
    Ok(m)
}

/// Decodes the start of a message too large to keep: only `Node`, which the server writes
/// first (`{"Node":{"ID":…`) in every message that has one, and which fits in the head.
pub fn parse_head(head: &[u8]) -> MapMessage {
    let mut plain = Vec::with_capacity(HEAD_PLAIN_LEN);
    // The input is cut short on purpose: keep whatever decoded before the end.
    let _ = with_decoder(head, |decoder| {
        let mut limited = decoder.take(HEAD_PLAIN_LEN as u64);
        let mut buf = [0u8; 1024];
        loop {
            match limited.read(&mut buf) {
                Ok(0) | Err(_) => return Ok(()),
                Ok(n) => plain.extend_from_slice(&buf[..n]),
            }
        }
    });
    let node = leading_node(&plain);
    MapMessage {
        self_id: node.as_ref().map(|n| n.id),
        self_ipv4: node.as_ref().and_then(SelfNode::ipv4),
        head_only: true,
        ..Default::default()
    }
}

/// The `Node` object at the start of a cut-short message; what follows it is not read.
fn leading_node(json: &[u8]) -> Option<SelfNode> {
    let rest = json.strip_prefix(br#"{"Node":"#)?;
    SelfNode::deserialize(&mut serde_json::Deserializer::from_slice(rest)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(json: &[u8]) -> Vec<u8> {
        let z = zstd::bulk::compress(json, 1).unwrap();
        let mut out = (z.len() as u32).to_le_bytes().to_vec();
        out.extend_from_slice(&z);
        out
    }

    #[test]
    fn splits_messages_across_arbitrary_chunks() {
        let mut wire = frame(br#"{"KeepAlive":true}"#);
        wire.extend(frame(br#"{"PeersRemoved":[7]}"#));
        for chunk_size in [1, 2, 3, 5, 4096] {
            let mut dec = FrameDecoder::new(1 << 20);
            let mut out = Vec::new();
            for chunk in wire.chunks(chunk_size) {
                dec.feed(chunk, &mut out).unwrap();
            }
            assert_eq!(out.len(), 2, "chunk size {chunk_size}");
            assert!(dec.at_boundary());
            assert_eq!(out[0].wire_len + out[1].wire_len, wire.len());
            let first = parse(&decompress(&out[0].data).unwrap()).unwrap();
            assert!(first.keep_alive);
            let second = parse(&decompress(&out[1].data).unwrap()).unwrap();
            assert_eq!(second.removed, vec![7]);
            assert!(second.mentions(&Target::Removed(7)));
            assert!(!second.mentions(&Target::Removed(8)));
        }
    }

    #[test]
    fn a_partial_message_waits_for_the_rest() {
        let wire = frame(br#"{"KeepAlive":true}"#);
        let mut dec = FrameDecoder::new(1 << 20);
        let mut out = Vec::new();
        dec.feed(&wire[..wire.len() - 1], &mut out).unwrap();
        assert!(out.is_empty() && !dec.at_boundary());
        dec.feed(&wire[wire.len() - 1..], &mut out).unwrap();
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn absurd_lengths_are_refused() {
        let mut dec = FrameDecoder::new(1 << 20);
        let err = dec
            .feed(&u32::MAX.to_le_bytes(), &mut Vec::new())
            .unwrap_err();
        assert_eq!(err, FrameError::TooLong(u32::MAX as usize));
    }

    /// A self node as the server writes it: nested objects and arrays around `Addresses`.
    const SELF_NODE: &str = r#"{"ID":4242,"StableID":"n4242","Name":"bench-1.example.","User":1,
        "Key":"nodekey:01","Addresses":["100.64.0.5/32","fd7a:115c:a1e0::5/128"],
        "AllowedIPs":["100.64.0.5/32"],"Endpoints":["198.51.0.1:41641"],
        "Hostinfo":{"OS":"linux","NetInfo":{"PreferredDERP":999}},
        "CapMap":{"https://tailscale.com/cap/ssh":null,"default-auto-update":[false]}}"#;

    #[test]
    fn large_messages_keep_only_their_head_and_still_give_the_self_node() {
        let mut json = format!(r#"{{"Node":{SELF_NODE},"Peers":["#).into_bytes();
        for i in 0..200_000 {
            json.extend(format!(r#"{{"ID":{i},"Key":"nodekey:{i:064x}"}},"#).as_bytes());
        }
        json.extend(br#"{"ID":0}]}"#);
        let wire = frame(&json);
        assert!(
            wire.len() > HEAD_LEN,
            "the test needs a message larger than the head"
        );
        let mut dec = FrameDecoder::new(1024);
        let mut out = Vec::new();
        dec.feed(&wire, &mut out).unwrap();
        assert_eq!(out.len(), 1);
        assert!(out[0].head_only);
        assert_eq!(out[0].data.len(), HEAD_LEN);
        assert_eq!(out[0].wire_len, wire.len());
        let m = parse_head(&out[0].data);
        assert_eq!(m.self_id, Some(4242));
        assert_eq!(m.self_ipv4, Some(Ipv4Addr::new(100, 64, 0, 5)));
        assert!(m.head_only);

        // Decoded whole, the same message gives its peer count.
        let mut dec = FrameDecoder::new(usize::MAX);
        let mut out = Vec::new();
        dec.feed(&wire, &mut out).unwrap();
        let full = parse(&decompress(&out[0].data).unwrap()).unwrap();
        assert_eq!(full.self_id, Some(4242));
        assert_eq!(full.self_ipv4, Some(Ipv4Addr::new(100, 64, 0, 5)));
        assert_eq!(full.peer_count, Some(200_001));
    }

    #[test]
    fn the_self_ipv4_is_whichever_address_is_ipv4() {
        let ipv6_first =
            parse(br#"{"Node":{"ID":9,"Addresses":["fd7a:115c:a1e0::9/128","100.64.1.9/32"]}}"#)
                .unwrap();
        assert_eq!(ipv6_first.self_ipv4, Some(Ipv4Addr::new(100, 64, 1, 9)));
        let ipv6_only = parse(br#"{"Node":{"ID":9,"Addresses":["fd7a:115c:a1e0::9/128"]}}"#);
        assert_eq!(ipv6_only.unwrap().self_ipv4, None);
        let no_node = parse(br#"{"PeersRemoved":[1]}"#).unwrap();
        assert_eq!((no_node.self_id, no_node.self_ipv4), (None, None));
    }

    #[test]
    fn the_head_of_a_poorly_compressible_map_still_gives_the_self_id() {
        // Random keys compress badly: the first 128 KiB block is far larger than a few KiB.
        let mut json = br#"{"Node":{"ID":77,"Name":"x"},"Peers":["#.to_vec();
        for i in 0..5_000 {
            let key: [u8; 32] = rand::random();
            let disco: [u8; 32] = rand::random();
            json.extend(
                format!(
                    r#"{{"ID":{i},"Key":"nodekey:{}","DiscoKey":"discokey:{}"}},"#,
                    hex(&key),
                    hex(&disco)
                )
                .as_bytes(),
            );
        }
        json.extend(br#"{"ID":0}]}"#);
        let wire = frame(&json);
        assert!(
            wire.len() > HEAD_LEN,
            "the test needs a message larger than the head"
        );
        let mut dec = FrameDecoder::new(1024);
        let mut out = Vec::new();
        dec.feed(&wire, &mut out).unwrap();
        assert!(out[0].head_only);
        assert_eq!(parse_head(&out[0].data).self_id, Some(77));
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn mentions_follow_the_kind_of_change() {
        let m = parse(
            br#"{"PeersChanged":[{"ID":3,"Key":"nodekey:ab","Other":[1,2]}],
                "PeersChangedPatch":[{"NodeID":5,"Endpoints":["1.2.3.4:5"]},{"NodeID":6,"Online":true}],
                "Unknown":{"x":1}}"#,
        )
        .unwrap();
        assert!(m.mentions(&Target::Endpoints(5)));
        assert!(
            !m.mentions(&Target::Endpoints(6)),
            "an online patch is not an endpoint change"
        );
        assert!(
            m.mentions(&Target::Endpoints(3)),
            "a full peer carries its endpoints"
        );
        assert!(m.mentions(&Target::Joined("nodekey:ab".into())));
        assert!(!m.mentions(&Target::Joined("nodekey:cd".into())));
        assert_eq!(m.patched_other, vec![6]);
        assert!(!m.mentions(&Target::FilterPort(22)), "no packet filter");
        let filter = parse(
            br#"{"PacketFilter":[{"SrcIPs":["*"],"DstPorts":[{"IP":"*","Ports":{"First":0,"Last":65535}}]},
                {"SrcIPs":["*"],"DstPorts":[{"IP":"*","Ports":{"First":40001,"Last":40001}}]}]}"#,
        )
        .unwrap();
        assert!(filter.mentions(&Target::FilterPort(40001)));
        assert!(
            !filter.mentions(&Target::FilterPort(40002)),
            "an older policy"
        );
    }

    #[test]
    fn the_shared_context_decodes_message_after_message_even_after_garbage() {
        let a = zstd::bulk::compress(br#"{"KeepAlive":true}"#, 1).unwrap();
        let mut b = zstd::bulk::compress(br#"{"PeersRemoved":[1],"#, 1).unwrap();
        b.extend(zstd::bulk::compress(br#""ControlTime":"x"}"#, 1).unwrap());
        assert_eq!(decompress(&a).unwrap(), br#"{"KeepAlive":true}"#);
        assert!(decompress(&a[..a.len() / 2]).is_err());
        assert!(decompress(b"not zstd").is_err());
        assert_eq!(
            decompress(&b).unwrap(),
            br#"{"PeersRemoved":[1],"ControlTime":"x"}"#,
            "two frames, one message"
        );
        assert_eq!(decompress(&a).unwrap(), br#"{"KeepAlive":true}"#);
    }

    #[test]
    fn bad_payloads_are_errors_not_panics() {
        assert!(decompress(b"not zstd").is_err());
        assert!(parse(b"{").is_err());
        assert_eq!(parse_head(b"junk").self_id, None);
        assert!(leading_node(br#"{"Node":{"ID":x"#).is_none());
        assert!(
            leading_node(br#"{"Node":{"ID":1,"Addresses":["100.64"#).is_none(),
            "a node cut short"
        );
    }
}
