//! What each node is told: full maps, deltas, and their encoding on the stream.
//!
//! Dependencies point one way, each module using only those listed before it (and this
//! one's `MapConfig` and encoding):
//!
//! 1. Leaves: `sent` (what a session has sent its node), `pending` (what it has yet to
//!    tell it), `chunks` (peer chunks shared by full maps); `derp_map` stands apart.
//! 2. `build`: rendering full maps and peers.
//! 3. `epoch`: cutting the change stream into epochs and their shared deltas.
//! 4. `delta`: what a woken session sends, shared or built for its node.
//! 5. `session`: the registry of streams, their mailboxes and the epoch publisher.

pub mod build;
pub mod chunks;
pub mod delta;
pub mod derp_map;
pub mod epoch;
pub mod pending;
pub mod sent;
pub mod session;
#[cfg(test)]
mod test_tailnet;

use std::cell::RefCell;

use bytes::{BufMut, Bytes, BytesMut};
use oxiscale_tailcfg::{DerpMap, DnsConfig, MapResponse};

use crate::config::Config;
use crate::tailnet::dns::DnsSettings;

/// The parts of every map that come from configuration, computed once.
#[derive(Debug, Clone)]
pub struct MapConfig {
    pub derp_map: DerpMap,
    pub dns_config: DnsConfig,
    /// The tailnet's display name.
    pub domain: String,
}

impl MapConfig {
    /// The configuration file's values; DNS may change later through [`MapConfig::set_dns`].
    pub fn new(config: &Config, derp_map: DerpMap) -> MapConfig {
        let mut map_config = MapConfig {
            derp_map,
            dns_config: DnsConfig::default(),
            domain: String::new(),
        };
        map_config.set_dns(&DnsSettings::from_config(&config.dns));
        map_config
    }

    /// Puts DNS settings (from the file, or changed at run time) into every map from now on.
    pub fn set_dns(&mut self, settings: &DnsSettings) {
        self.dns_config = settings.to_tailcfg();
        self.domain = settings.base_domain.trim_matches('.').to_owned();
    }
}

/// `DNSConfig` from the `dns.*` keys, with headscale's meanings.
pub fn dns_config(config: &Config) -> DnsConfig {
    DnsSettings::from_config(&config.dns).to_tailcfg()
}

thread_local! {
    static COMPRESSOR: RefCell<Option<zstd::bulk::Compressor<'static>>> = const { RefCell::new(None) };
}

/// One message of the map stream: 4-byte little-endian length, then the zstd frame of the
/// JSON (clients of capability ≥ 1.86 always ask for zstd and always decode it).
pub fn encode_message(response: &MapResponse) -> Bytes {
    let json = serde_json::to_vec(response).expect("map responses serialise");
    frame_zstd(&json)
}

/// One zstd frame of `json`, with the calling thread's compressor (one context per
/// thread, not per stream: a context is ~1 MB at level 1).
pub fn compress(json: &[u8]) -> Vec<u8> {
    COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        let compressor =
            c.get_or_insert_with(|| zstd::bulk::Compressor::new(1).expect("zstd context"));
        compressor
            .compress(json)
            .expect("zstd compression into a growable buffer")
    })
}

/// Frames already-serialised JSON.
pub fn frame_zstd(json: &[u8]) -> Bytes {
    let compressed = compress(json);
    let mut out = BytesMut::with_capacity(4 + compressed.len());
    out.put_u32_le(compressed.len() as u32);
    out.extend_from_slice(&compressed);
    out.freeze()
}

/// The keep-alive message, identical every time.
pub fn keep_alive_message() -> Bytes {
    frame_zstd(br#"{"KeepAlive":true}"#)
}

#[cfg(test)]
mod tests {
    use super::*;
    use oxiscale_tailcfg::Resolver;

    #[test]
    fn messages_are_length_prefixed_zstd_json() {
        let msg = keep_alive_message();
        let len = u32::from_le_bytes(msg[..4].try_into().unwrap()) as usize;
        assert_eq!(len, msg.len() - 4);
        let json = zstd::bulk::decompress(&msg[4..], 1 << 20).unwrap();
        assert_eq!(json, br#"{"KeepAlive":true}"#);
    }

    #[test]
    fn magic_dns_adds_the_base_domain_and_split_routes() {
        let mut c = Config::default();
        c.dns.base_domain = "tail.test".into();
        c.dns.nameservers.global = vec!["1.1.1.1".into()];
        c.dns
            .nameservers
            .split
            .insert("corp.example".into(), vec!["10.0.0.53".into()]);
        c.dns.search_domains = vec!["corp.example".into()];
        let d = dns_config(&c);
        assert!(d.proxied);
        assert_eq!(d.domains, vec!["tail.test", "corp.example"]);
        assert_eq!(
            d.routes["corp.example."],
            vec![Resolver {
                addr: "10.0.0.53".into()
            }]
        );
        assert!(d.routes["tail.test."].is_empty());
        assert_eq!(
            d.fallback_resolvers,
            vec![Resolver {
                addr: "1.1.1.1".into()
            }]
        );
        c.dns.override_local_dns = true;
        assert_eq!(
            dns_config(&c).resolvers,
            vec![Resolver {
                addr: "1.1.1.1".into()
            }]
        );
    }
}
