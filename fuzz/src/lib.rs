//! What the fuzz targets share with each other and with the seed generator
//! (`examples/seeds.rs`): the fixed keys, the request encoding of the ts2021 target, the
//! policy target's tailnet, and a way to cut input into chunks.

use std::sync::OnceLock;

use http::header::{HeaderName, HeaderValue};
use oxiscale_noise::StaticKey;
use oxiscale_policy::Topology;

/// The server's Noise key in the handshake and upgrade targets. Fixed, so seeds made by
/// `examples/seeds.rs` carry initiations this server can accept.
pub fn server_key() -> StaticKey {
    StaticKey::from_bytes([0x5a; 32])
}

/// Session keys of the records target, one per direction.
pub const RECORD_KEY_A: [u8; 32] = [0x11; 32];
pub const RECORD_KEY_B: [u8; 32] = [0x22; 32];

/// The ts2021 target's input: the first line is the request URI, each further line a
/// `name: value` header. Lines that make no valid URI or header are skipped, so mutations
/// of one header do not throw the rest away.
pub fn request_from_bytes(data: &[u8]) -> http::Request<()> {
    let mut lines = data.split(|&b| b == b'\n');
    let mut builder = http::Request::post("/ts2021");
    if let Some(uri) = lines.next()
        && let Ok(uri) = http::Uri::try_from(uri.trim_ascii())
    {
        builder = builder.uri(uri);
    }
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (line[..colon].trim_ascii(), line[colon + 1..].trim_ascii());
        if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        {
            builder = builder.header(name, value);
        }
    }
    builder.body(()).unwrap_or_else(|_| http::Request::new(()))
}

/// The inverse of [`request_from_bytes`], for seeds.
pub fn request_to_bytes(uri: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut out = uri.as_bytes().to_vec();
    for (name, value) in headers {
        out.extend_from_slice(format!("\n{name}: {value}").as_bytes());
    }
    out
}

/// A tailnet from the policy golden cases (acl-a01): users, tagged and owned nodes, a
/// subnet router and an exit node, so every kind of policy selector has something to match.
pub fn topology() -> &'static Topology {
    static TOPOLOGY: OnceLock<Topology> = OnceLock::new();
    TOPOLOGY.get_or_init(|| {
        let json: serde_json::Value =
            serde_json::from_str(include_str!("topology.json")).expect("topology.json is JSON");
        oxiscale_policy::topology_from_json(&json).expect("topology.json is a topology")
    })
}

/// Cuts `data` into chunks of 7 × each byte of `sizes` (cycled; a zero counts as one), or
/// one chunk if `sizes` is empty, to feed streaming decoders the way a socket might.
pub fn chunks<'a>(data: &'a [u8], sizes: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
    let mut rest = data;
    let mut i = 0;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let size = match sizes {
            [] => rest.len(),
            _ => usize::from(sizes[i % sizes.len()]).max(1) * 7,
        };
        i += 1;
        let (chunk, tail) = rest.split_at(size.min(rest.len()));
        rest = tail;
        Some(chunk)
    })
}

/// A Hostinfo the server accepted is stored and echoed to peers: it must serialize, within
/// the bound if it passed `check_bounds`, and read back with the fields the server acts on
/// unchanged. (Other values are compared as bytes only once re-serialized: JSON numbers
/// need not survive a float round trip bit for bit.)
pub fn check_hostinfo(hostinfo: &oxiscale_tailcfg::Hostinfo, within_bounds: bool) {
    let json = serde_json::to_vec(hostinfo).expect("a parsed Hostinfo serializes");
    if within_bounds {
        assert!(json.len() <= oxiscale_tailcfg::bounds::MAX_HOSTINFO_BYTES);
    }
    let back: oxiscale_tailcfg::Hostinfo =
        serde_json::from_slice(&json).expect("a serialized Hostinfo reads back");
    assert_eq!(back.hostname, hostinfo.hostname);
    assert_eq!(back.os, hostinfo.os);
    assert_eq!(back.ipn_version, hostinfo.ipn_version);
    assert_eq!(back.routable_ips, hostinfo.routable_ips);
    assert_eq!(back.request_tags, hostinfo.request_tags);
    assert_eq!(back.preferred_derp(), hostinfo.preferred_derp());
    assert_eq!(back.rest.len(), hostinfo.rest.len());
}
