//! Tailscale addresses: one IPv4 from the configured part of 100.64.0.0/10 and one IPv6 from
//! the configured part of fd7a:115c:a1e0::/48 per node, never handed out twice, freed when the
//! node is deleted.

use std::collections::HashSet;
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};

use crate::config::Allocation;

/// Addresses inside 100.64.0.0/10 that Tailscale reserves.
fn reserved_v4(ip: Ipv4Addr) -> bool {
    let quad100 = Ipv4Addr::new(100, 100, 100, 100);
    let chromeos: Ipv4Net = "100.115.92.0/23".parse().expect("valid literal");
    ip == quad100 || chromeos.contains(&ip)
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AllocError {
    #[error("no free address left in {0}")]
    Exhausted(String),
}

#[derive(Debug, Clone)]
pub struct AddressPool {
    v4: Option<Ipv4Net>,
    v6: Option<Ipv6Net>,
    allocation: Allocation,
    used4: HashSet<Ipv4Addr>,
    used6: HashSet<Ipv6Addr>,
    /// Where the sequential search resumes, so allocation stays O(1) amortised.
    cursor4: u32,
    cursor6: u128,
}

impl AddressPool {
    pub fn new(v4: Option<Ipv4Net>, v6: Option<Ipv6Net>, allocation: Allocation) -> Self {
        AddressPool {
            v4,
            v6,
            allocation,
            used4: HashSet::new(),
            used6: HashSet::new(),
            cursor4: 0,
            cursor6: 0,
        }
    }

    /// Marks an address loaded from the database as taken.
    pub fn mark_used(&mut self, v4: Option<Ipv4Addr>, v6: Option<Ipv6Addr>) {
        if let Some(ip) = v4 {
            self.used4.insert(ip);
        }
        if let Some(ip) = v6 {
            self.used6.insert(ip);
        }
    }

    pub fn release(&mut self, v4: Option<Ipv4Addr>, v6: Option<Ipv6Addr>) {
        if let Some(ip) = v4 {
            self.used4.remove(&ip);
        }
        if let Some(ip) = v6 {
            self.used6.remove(&ip);
        }
    }

    pub fn contains_v4(&self, ip: Ipv4Addr) -> bool {
        self.v4.is_some_and(|n| n.contains(&ip))
    }

    pub fn contains_v6(&self, ip: Ipv6Addr) -> bool {
        self.v6.is_some_and(|n| n.contains(&ip))
    }

    pub fn has_v4(&self) -> bool {
        self.v4.is_some()
    }

    pub fn has_v6(&self) -> bool {
        self.v6.is_some()
    }

    /// A free IPv4 address, marked as used; `Ok(None)` when IPv4 is not configured.
    pub fn allocate_v4(&mut self) -> Result<Option<Ipv4Addr>, AllocError> {
        let Some(net) = self.v4 else { return Ok(None) };
        let base = u32::from(net.network());
        let size = 1u64 << (32 - net.prefix_len());
        // Skip the network address and, in small nets, the broadcast address.
        let usable = size.saturating_sub(2).max(1) as u32;
        for i in 0..usable {
            let offset = match self.allocation {
                Allocation::Sequential => (self.cursor4 + i) % usable,
                Allocation::Random => rand::random::<u32>() % usable,
            };
            let ip = Ipv4Addr::from(base + 1 + offset);
            if !reserved_v4(ip) && !self.used4.contains(&ip) {
                self.used4.insert(ip);
                self.cursor4 = (offset + 1) % usable;
                return Ok(Some(ip));
            }
        }
        Err(AllocError::Exhausted(net.to_string()))
    }

    /// A free IPv6 address, marked as used; `Ok(None)` when IPv6 is not configured.
    pub fn allocate_v6(&mut self) -> Result<Option<Ipv6Addr>, AllocError> {
        let Some(net) = self.v6 else { return Ok(None) };
        let base = u128::from(net.network());
        let bits = 128 - u32::from(net.prefix_len());
        let usable: u128 = if bits >= 127 {
            u128::MAX - 1
        } else {
            (1u128 << bits) - 1
        };
        // The space is vast; a bounded number of probes always finds a free address unless
        // the prefix is tiny, in which case the loop covers it all.
        let probes = usable.min(1 << 20);
        for i in 0..probes {
            let offset = match self.allocation {
                Allocation::Sequential => (self.cursor6 + i) % usable,
                Allocation::Random => rand::random::<u128>() % usable,
            };
            let ip = Ipv6Addr::from(base + 1 + offset);
            if !self.used6.contains(&ip) {
                self.used6.insert(ip);
                self.cursor6 = (offset + 1) % usable;
                return Ok(Some(ip));
            }
        }
        Err(AllocError::Exhausted(net.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(v4: &str) -> AddressPool {
        AddressPool::new(
            Some(v4.parse().unwrap()),
            Some("fd7a:115c:a1e0::/48".parse().unwrap()),
            Allocation::Sequential,
        )
    }

    #[test]
    fn sequential_addresses_are_unique_and_skip_the_network_address() {
        let mut p = pool("100.64.0.0/10");
        assert_eq!(p.allocate_v4().unwrap(), Some(Ipv4Addr::new(100, 64, 0, 1)));
        assert_eq!(p.allocate_v4().unwrap(), Some(Ipv4Addr::new(100, 64, 0, 2)));
        assert_eq!(
            p.allocate_v6().unwrap(),
            Some("fd7a:115c:a1e0::1".parse().unwrap())
        );
        assert_eq!(
            p.allocate_v6().unwrap(),
            Some("fd7a:115c:a1e0::2".parse().unwrap())
        );
    }

    #[test]
    fn loaded_addresses_are_not_reused_and_released_ones_are() {
        let mut p = pool("100.64.0.0/29");
        p.mark_used(Some(Ipv4Addr::new(100, 64, 0, 1)), None);
        assert_eq!(p.allocate_v4().unwrap(), Some(Ipv4Addr::new(100, 64, 0, 2)));
        let mut got: Vec<_> = (0..4).map(|_| p.allocate_v4().unwrap().unwrap()).collect();
        got.sort();
        assert_eq!(got.len(), 4);
        assert_eq!(
            p.allocate_v4(),
            Err(AllocError::Exhausted("100.64.0.0/29".into()))
        );
        p.release(Some(Ipv4Addr::new(100, 64, 0, 4)), None);
        assert_eq!(p.allocate_v4().unwrap(), Some(Ipv4Addr::new(100, 64, 0, 4)));
    }

    #[test]
    fn reserved_addresses_are_skipped() {
        let mut p = pool("100.100.100.96/29");
        let got: Vec<_> = std::iter::from_fn(|| p.allocate_v4().ok().flatten()).collect();
        assert!(!got.contains(&Ipv4Addr::new(100, 100, 100, 100)));
        assert_eq!(got.len(), 5, "six usable, one reserved: {got:?}");
    }

    #[test]
    fn random_allocation_stays_inside_the_prefix() {
        let mut p = AddressPool::new(
            Some("100.64.0.0/24".parse().unwrap()),
            None,
            Allocation::Random,
        );
        for _ in 0..100 {
            let ip = p.allocate_v4().unwrap().unwrap();
            assert!(p.contains_v4(ip));
        }
        assert_eq!(p.allocate_v6().unwrap(), None);
    }
}
