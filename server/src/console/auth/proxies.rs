//! Who the client is behind a reverse proxy (headscale's `trusted_proxies`): the peer's
//! address, unless the peer is a trusted proxy; then the nearest address in
//! `X-Forwarded-For` that is not one. A client that is not a trusted proxy cannot choose
//! its address by sending the header.

use std::net::IpAddr;

use axum::http::HeaderMap;
use ipnet::IpNet;

pub fn client_of(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    // Each proxy appends what it saw: read from the right, past our own proxies.
    for hop in hops.iter().rev() {
        match hop.parse::<IpAddr>() {
            Ok(ip) if is_trusted(&ip) => continue,
            Ok(ip) => return ip,
            // Not an address: nothing to its left can be told apart from a forgery.
            Err(_) => return peer,
        }
    }
    peer
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn only_a_trusted_proxy_may_name_the_client() {
        let trusted: Vec<IpNet> = vec![
            "10.0.0.0/8".parse().unwrap(),
            "192.0.2.7/32".parse().unwrap(),
        ];
        let h = headers(&["198.51.100.9, 10.1.2.3"]);
        // A client speaking directly cannot choose its address.
        assert_eq!(
            client_of(ip("203.0.113.5"), &h, &trusted),
            ip("203.0.113.5")
        );
        // Through two of our proxies: the address the first one saw.
        assert_eq!(client_of(ip("192.0.2.7"), &h, &trusted), ip("198.51.100.9"));
        // A forged hop left of the real client is not believed.
        let forged = headers(&["1.2.3.4", "198.51.100.9"]);
        assert_eq!(
            client_of(ip("10.0.0.1"), &forged, &trusted),
            ip("198.51.100.9")
        );
        // No header, or garbage: the proxy itself.
        assert_eq!(
            client_of(ip("10.0.0.1"), &headers(&[]), &trusted),
            ip("10.0.0.1")
        );
        let junk = headers(&["198.51.100.9, not-an-ip"]);
        assert_eq!(client_of(ip("10.0.0.1"), &junk, &trusted), ip("10.0.0.1"));
        // With nothing trusted the header means nothing.
        assert_eq!(client_of(ip("10.0.0.1"), &h, &[]), ip("10.0.0.1"));
    }
}
