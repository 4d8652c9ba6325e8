//! How many connections each address holds open, and the bound on it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use ipnet::IpNet;

use crate::net::subscriber;

/// Counts open connections per subscriber (`net::subscriber`). Trusted proxies carry many
/// clients each and are not counted.
pub struct PerAddress {
    limit: usize,
    exempt: Vec<IpNet>,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One admitted connection; dropping it frees its place.
pub struct Admitted {
    owner: Arc<PerAddress>,
    counted: Option<IpAddr>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let Some(key) = self.counted else { return };
        let mut open = self.owner.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                open.remove(&key);
            }
        }
    }
}

impl PerAddress {
    /// `limit` 0: no bound.
    pub fn new(limit: usize, exempt: Vec<IpNet>) -> Arc<PerAddress> {
        Arc::new(PerAddress {
            limit,
            exempt,
            open: Mutex::default(),
        })
    }

    /// A place for a connection from `peer`, or `None` if its address holds the most it may.
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Option<Admitted> {
        if self.limit == 0 || self.exempt.iter().any(|net| net.contains(&peer)) {
            return Some(Admitted {
                owner: self.clone(),
                counted: None,
            });
        }
        let key = subscriber(peer);
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(key).or_insert(0);
        if *n >= self.limit {
            return None;
        }
        *n += 1;
        Some(Admitted {
            owner: self.clone(),
            counted: Some(key),
        })
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.open.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_address_gets_its_limit_and_a_place_back_when_one_closes() {
        let counts = PerAddress::new(2, vec![]);
        let a = counts.admit(ip("192.0.2.1")).unwrap();
        let _b = counts.admit(ip("192.0.2.1")).unwrap();
        assert!(counts.admit(ip("192.0.2.1")).is_none());
        assert!(
            counts.admit(ip("192.0.2.2")).is_some(),
            "others are not held up"
        );
        drop(a);
        assert!(counts.admit(ip("192.0.2.1")).is_some());
    }

    #[test]
    fn rotating_ipv6_addresses_of_one_slash_64_share_its_limit() {
        let counts = PerAddress::new(2, vec![]);
        let _a = counts.admit(ip("2001:db8::1")).unwrap();
        let _b = counts.admit(ip("2001:db8::ffff:2")).unwrap();
        assert!(counts.admit(ip("2001:db8::abcd:3")).is_none());
        assert!(counts.admit(ip("2001:db8:0:1::1")).is_some());
    }

    #[test]
    fn trusted_proxies_are_not_counted_and_zero_means_no_bound() {
        let counts = PerAddress::new(1, vec!["10.0.0.0/8".parse().unwrap()]);
        let held: Vec<_> = (0..10)
            .map(|_| counts.admit(ip("10.1.2.3")).unwrap())
            .collect();
        assert_eq!(counts.tracked(), 0);
        drop(held);
        let unbounded = PerAddress::new(0, vec![]);
        let held: Vec<_> = (0..10)
            .map(|_| unbounded.admit(ip("192.0.2.1")).unwrap())
            .collect();
        assert_eq!(held.len(), 10);
    }

    #[test]
    fn closed_connections_leave_nothing_behind() {
        let counts = PerAddress::new(3, vec![]);
        let held: Vec<_> = (0..3)
            .map(|i| counts.admit(ip(&format!("192.0.2.{i}"))).unwrap())
            .collect();
        assert_eq!(counts.tracked(), 3);
        drop(held);
        assert_eq!(counts.tracked(), 0);
    }
}
