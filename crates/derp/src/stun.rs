//! STUN binding responder (the RFC 5389 subset Tailscale's netcheck uses).
//!
//! [`handle`] is pure: request bytes and source address in, response bytes out (or nothing
//! for anything that is not a well-formed Binding Request). [`serve_stun`] is the UDP loop.

use std::net::{IpAddr, SocketAddr};

use tokio::net::UdpSocket;

pub const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
const HEADER_LEN: usize = 20;
const BINDING_REQUEST: u16 = 0x0001;
const BINDING_SUCCESS: u16 = 0x0101;
const ATTR_XOR_MAPPED_ADDRESS: u16 = 0x0020;
const ATTR_FINGERPRINT: u16 = 0x8028;
const FINGERPRINT_XOR: u32 = 0x5354_554E;

/// Answers a Binding Request from `from` with a Binding Success Response carrying
/// XOR-MAPPED-ADDRESS. Returns `None` for anything else: wrong type, magic cookie or
/// length, malformed attributes, or a FINGERPRINT that does not match. SOFTWARE and
/// other attributes are accepted without being checked.
pub fn handle(packet: &[u8], from: SocketAddr) -> Option<Vec<u8>> {
    let txid = parse_binding_request(packet)?;
    Some(binding_response(&txid, from))
}

/// The transaction ID of a valid Binding Request.
fn parse_binding_request(packet: &[u8]) -> Option<[u8; 12]> {
    if packet.len() < HEADER_LEN {
        return None;
    }
    let msg_type = u16::from_be_bytes([packet[0], packet[1]]);
    let attrs_len = u16::from_be_bytes([packet[2], packet[3]]) as usize;
    if msg_type != BINDING_REQUEST || packet[4..8] != MAGIC_COOKIE {
        return None;
    }
    if !attrs_len.is_multiple_of(4) || packet.len() != HEADER_LEN + attrs_len {
        return None;
    }
    let mut offset = HEADER_LEN;
    while offset < packet.len() {
        if packet.len() - offset < 4 {
            return None;
        }
        let attr_type = u16::from_be_bytes([packet[offset], packet[offset + 1]]);
        let value_len = u16::from_be_bytes([packet[offset + 2], packet[offset + 3]]) as usize;
        let value_start = offset + 4;
        let padded_len = value_len.div_ceil(4) * 4;
        if packet.len() - value_start < padded_len {
            return None;
        }
        if attr_type == ATTR_FINGERPRINT {
            // FINGERPRINT is last and covers everything before it.
            if value_len != 4 || value_start + 4 != packet.len() {
                return None;
            }
            let want = u32::from_be_bytes(packet[value_start..value_start + 4].try_into().ok()?);
            if crc32(&packet[..offset]) ^ FINGERPRINT_XOR != want {
                return None;
            }
        }
        offset = value_start + padded_len;
    }
    let mut txid = [0u8; 12];
    txid.copy_from_slice(&packet[8..20]);
    Some(txid)
}

fn binding_response(txid: &[u8; 12], from: SocketAddr) -> Vec<u8> {
    let port = from.port() ^ 0x2112;
    let (family, addr): (u8, Vec<u8>) = match from.ip() {
        IpAddr::V4(ip) => (
            0x01,
            ip.octets()
                .iter()
                .zip(MAGIC_COOKIE)
                .map(|(a, k)| a ^ k)
                .collect(),
        ),
        IpAddr::V6(ip) => {
            let key: Vec<u8> = MAGIC_COOKIE.iter().chain(txid.iter()).copied().collect();
            (
                0x02,
                ip.octets().iter().zip(key).map(|(a, k)| a ^ k).collect(),
            )
        }
    };
    let value_len = 4 + addr.len();
    let mut out = Vec::with_capacity(HEADER_LEN + 4 + value_len);
    out.extend_from_slice(&BINDING_SUCCESS.to_be_bytes());
    out.extend_from_slice(&((4 + value_len) as u16).to_be_bytes());
    out.extend_from_slice(&MAGIC_COOKIE);
    out.extend_from_slice(txid);
    out.extend_from_slice(&ATTR_XOR_MAPPED_ADDRESS.to_be_bytes());
    out.extend_from_slice(&(value_len as u16).to_be_bytes());
    out.push(0);
    out.push(family);
    out.extend_from_slice(&port.to_be_bytes());
    out.extend_from_slice(&addr);
    out
}

/// CRC-32 (IEEE 802.3, reflected, poly 0xEDB88320) as FINGERPRINT uses it.
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

/// Answers STUN requests on `socket` forever. Receive and send errors (e.g. ICMP
/// unreachable reported on the next call) are logged and skipped; bad packets are ignored.
pub async fn serve_stun(socket: UdpSocket) {
    let mut buf = vec![0u8; 2048];
    loop {
        let (len, from) = match socket.recv_from(&mut buf).await {
            Ok(got) => got,
            Err(err) => {
                tracing::debug!(%err, "STUN receive failed");
                // Avoid spinning if the socket is persistently broken.
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let Some(response) = handle(&buf[..len], from) else {
            tracing::trace!(%from, len, "ignored non-STUN or malformed packet");
            continue;
        };
        if let Err(err) = socket.send_to(&response, from).await {
            tracing::debug!(%err, %from, "STUN send failed");
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    /// The 40-byte request tailscaled sends: header(20), SOFTWARE "tailnode"(12), FINGERPRINT(8).
    pub(crate) fn tailnode_request(txid: [u8; 12]) -> Vec<u8> {
        let mut req = Vec::new();
        req.extend_from_slice(&[0x00, 0x01, 0x00, 20]);
        req.extend_from_slice(&MAGIC_COOKIE);
        req.extend_from_slice(&txid);
        req.extend_from_slice(&[0x80, 0x22, 0x00, 0x08]);
        req.extend_from_slice(b"tailnode");
        let fp = crc32(&req) ^ FINGERPRINT_XOR;
        req.extend_from_slice(&[0x80, 0x28, 0x00, 0x04]);
        req.extend_from_slice(&fp.to_be_bytes());
        req
    }

    /// Independent reading of a response, as a client would: returns (txid, address).
    pub(crate) fn parse_response(resp: &[u8]) -> Option<([u8; 12], SocketAddr)> {
        if resp.len() < 20 || resp[0..2] != [0x01, 0x01] || resp[4..8] != MAGIC_COOKIE {
            return None;
        }
        let len = u16::from_be_bytes([resp[2], resp[3]]) as usize;
        if resp.len() != 20 + len {
            return None;
        }
        let txid: [u8; 12] = resp[8..20].try_into().ok()?;
        let attr = &resp[20..];
        if attr[0..2] != [0x00, 0x20] {
            return None;
        }
        let vlen = u16::from_be_bytes([attr[2], attr[3]]) as usize;
        let v = &attr[4..4 + vlen];
        let port = u16::from_be_bytes([v[2], v[3]]) ^ 0x2112;
        let ip = match v[1] {
            1 => {
                let o: [u8; 4] = std::array::from_fn(|i| v[4 + i] ^ MAGIC_COOKIE[i]);
                IpAddr::V4(Ipv4Addr::from(o))
            }
            2 => {
                let mut key = MAGIC_COOKIE.to_vec();
                key.extend_from_slice(&txid);
                let o: [u8; 16] = std::array::from_fn(|i| v[4 + i] ^ key[i]);
                IpAddr::V6(Ipv6Addr::from(o))
            }
            _ => return None,
        };
        Some((txid, SocketAddr::new(ip, port)))
    }

    #[test]
    fn crc32_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn answers_ipv4_with_xor_mapped_address() {
        let txid = *b"abcdefghijkl";
        let from: SocketAddr = "192.0.2.7:41641".parse().unwrap();
        let resp = handle(&tailnode_request(txid), from).unwrap();
        assert_eq!(resp.len(), 32);
        assert_eq!(&resp[2..4], &[0, 12]);
        assert_eq!(parse_response(&resp), Some((txid, from)));
        // Port 41641 = 0xa2a9, XOR 0x2112 = 0x83bb; 192 ^ 0x21 = 0xe1.
        assert_eq!(&resp[26..29], &[0x83, 0xbb, 0xe1]);
    }

    #[test]
    fn answers_ipv6_with_txid_in_the_xor_key() {
        let txid = [9u8; 12];
        let from: SocketAddr = "[2001:db8::1234]:3478".parse().unwrap();
        let resp = handle(&tailnode_request(txid), from).unwrap();
        assert_eq!(resp.len(), 44);
        assert_eq!(&resp[2..4], &[0, 24]);
        assert_eq!(parse_response(&resp), Some((txid, from)));
    }

    #[test]
    fn lenient_about_software_and_fingerprint_absence() {
        let mut bare = vec![0x00, 0x01, 0x00, 0x00];
        bare.extend_from_slice(&MAGIC_COOKIE);
        bare.extend_from_slice(&[1; 12]);
        assert!(handle(&bare, "127.0.0.1:1".parse().unwrap()).is_some());

        let mut other_software = tailnode_request([2; 12])[..32].to_vec();
        other_software[24..32].copy_from_slice(b"otherapp");
        other_software[3] = 12;
        assert!(handle(&other_software, "127.0.0.1:1".parse().unwrap()).is_some());
    }

    #[test]
    fn ignores_malformed_requests() {
        let from: SocketAddr = "127.0.0.1:5".parse().unwrap();
        let good = tailnode_request([3; 12]);
        assert_eq!(good.len(), 40);
        assert!(handle(&good, from).is_some());

        let mut bad_type = good.clone();
        bad_type[1] = 0x11;
        let mut bad_cookie = good.clone();
        bad_cookie[4] = 0;
        let mut bad_len = good.clone();
        bad_len[3] = 24;
        let mut bad_fingerprint = good.clone();
        *bad_fingerprint.last_mut().unwrap() ^= 1;
        let mut attr_overrun = good.clone();
        attr_overrun[22..24].copy_from_slice(&[0x00, 0x40]);
        let trailing = [good.as_slice(), &[0u8][..]].concat();
        let response = handle(&good, from).unwrap();
        let cases: Vec<(&str, &[u8])> = vec![
            ("empty", &[]),
            ("short header", &good[..19]),
            ("truncated", &good[..36]),
            ("trailing byte", &trailing),
            ("type", &bad_type),
            ("cookie", &bad_cookie),
            ("length", &bad_len),
            ("fingerprint", &bad_fingerprint),
            ("attribute overrun", &attr_overrun),
            ("response, not request", &response),
        ];
        for (name, packet) in cases {
            assert_eq!(handle(packet, from), None, "{name}");
        }
    }

    async fn exchange_over_udp(server_ip: &str) {
        let server = UdpSocket::bind(format!("{server_ip}:0")).await.unwrap();
        let server_addr = server.local_addr().unwrap();
        let task = tokio::spawn(serve_stun(server));
        let client = UdpSocket::bind(format!("{server_ip}:0")).await.unwrap();
        let client_addr = client.local_addr().unwrap();
        let mut buf = [0u8; 1500];

        // Garbage first: it must be ignored without ending the loop.
        client
            .send_to(b"not stun at all", server_addr)
            .await
            .unwrap();
        client.send_to(&[0u8; 20], server_addr).await.unwrap();
        let txid = *b"0123456789ab";
        client
            .send_to(&tailnode_request(txid), server_addr)
            .await
            .unwrap();
        let (n, from) = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            client.recv_from(&mut buf),
        )
        .await
        .expect("a STUN response")
        .unwrap();
        assert_eq!(from, server_addr);
        assert_eq!(parse_response(&buf[..n]), Some((txid, client_addr)));
        // The garbage produced no reply: the next datagram is the answer to a second request.
        client
            .send_to(&tailnode_request([7; 12]), server_addr)
            .await
            .unwrap();
        let (n, _) = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            client.recv_from(&mut buf),
        )
        .await
        .expect("a second STUN response")
        .unwrap();
        assert_eq!(parse_response(&buf[..n]), Some(([7; 12], client_addr)));
        task.abort();
    }

    #[tokio::test]
    async fn serves_ipv4_over_a_real_socket() {
        exchange_over_udp("127.0.0.1").await;
    }

    #[tokio::test]
    async fn serves_ipv6_over_a_real_socket() {
        exchange_over_udp("[::1]").await;
    }
}
