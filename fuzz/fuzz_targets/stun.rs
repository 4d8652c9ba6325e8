//! The STUN responder's request parsing (`oxiscale_derp::stun::handle`). The first byte
//! picks the sender's address; the rest is the UDP payload. An answer goes only to a
//! Binding Request, and is a Binding Success Response with the request's transaction ID
//! and an XOR-MAPPED-ADDRESS that decodes to the sender.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use libfuzzer_sys::fuzz_target;
use oxiscale_derp::stun::{MAGIC_COOKIE, handle};

fuzz_target!(|data: &[u8]| {
    let Some((&which, packet)) = data.split_first() else {
        return;
    };
    let port = u16::from(which) * 257;
    let from = if which & 1 == 0 {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, which)), port)
    } else {
        SocketAddr::new(
            IpAddr::V6(Ipv6Addr::new(
                0x2001,
                0xdb8,
                0,
                0,
                0,
                0,
                0,
                u16::from(which),
            )),
            port,
        )
    };
    let Some(resp) = handle(packet, from) else {
        return;
    };
    assert_eq!(
        &packet[0..2],
        &[0x00, 0x01],
        "answered something not a Binding Request"
    );
    assert_eq!(packet[4..8], MAGIC_COOKIE);
    assert_eq!(&resp[0..2], &[0x01, 0x01]);
    assert_eq!(
        usize::from(u16::from_be_bytes([resp[2], resp[3]])) + 20,
        resp.len()
    );
    assert_eq!(resp[4..8], MAGIC_COOKIE);
    assert_eq!(resp[8..20], packet[8..20], "transaction ID");
    assert_eq!(xor_mapped_address(&resp), Some(from));
});

/// Reads XOR-MAPPED-ADDRESS (RFC 5389 §15.2) independently of the responder's code.
fn xor_mapped_address(resp: &[u8]) -> Option<SocketAddr> {
    let mut attrs = &resp[20..];
    while attrs.len() >= 4 {
        let kind = u16::from_be_bytes([attrs[0], attrs[1]]);
        let len = usize::from(u16::from_be_bytes([attrs[2], attrs[3]]));
        let value = attrs.get(4..4 + len)?;
        if kind == 0x0020 {
            let port = u16::from_be_bytes([value[2], value[3]]) ^ 0x2112;
            let mut key = MAGIC_COOKIE.to_vec();
            key.extend_from_slice(&resp[8..20]);
            let ip = match value[1] {
                0x01 => {
                    let b: [u8; 4] = std::array::from_fn(|i| value[4 + i] ^ key[i]);
                    IpAddr::V4(Ipv4Addr::from(b))
                }
                0x02 => {
                    let b: [u8; 16] = std::array::from_fn(|i| value[4 + i] ^ key[i]);
                    IpAddr::V6(Ipv6Addr::from(b))
                }
                _ => return None,
            };
            return Some(SocketAddr::new(ip, port));
        }
        attrs = &attrs[(4 + len.div_ceil(4) * 4).min(attrs.len())..];
    }
    None
}
