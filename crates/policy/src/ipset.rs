//! A set of IP addresses kept as sorted, disjoint, non-adjacent inclusive ranges, one list per
//! family. Tailscale renders resolved aliases from such a set: a one-address range as a bare IP,
//! a range that is exactly a CIDR as that CIDR, anything else as `a-b`.

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct IpSet {
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
}

fn v4_range(n: &Ipv4Net) -> (u32, u32) {
    (u32::from(n.network()), u32::from(n.broadcast()))
}
fn v6_range(n: &Ipv6Net) -> (u128, u128) {
    (u128::from(n.network()), u128::from(n.broadcast()))
}

/// Whether every address from `a` to `b` is one of `hosts` (never true for a run longer than
/// there are hosts, so this costs at most one lookup per host).
fn all_hosts(a: u128, b: u128, hosts: &HashSet<IpAddr>, addr: impl Fn(u128) -> IpAddr) -> bool {
    b - a < hosts.len() as u128 && (a..=b).all(|x| hosts.contains(&addr(x)))
}

fn normalize<T: Copy + Ord + num::Step>(r: &mut Vec<(T, T)>) {
    r.sort_unstable();
    let mut out: Vec<(T, T)> = Vec::with_capacity(r.len());
    for &(a, b) in r.iter() {
        if let Some(last) = out.last_mut()
            && (a <= last.1 || T::next(last.1) == Some(a))
        {
            if b > last.1 {
                last.1 = b;
            }
            continue;
        }
        out.push((a, b));
    }
    *r = out;
}

mod num {
    pub trait Step: Sized {
        fn next(v: Self) -> Option<Self>;
    }
    impl Step for u32 {
        fn next(v: u32) -> Option<u32> {
            v.checked_add(1)
        }
    }
    impl Step for u128 {
        fn next(v: u128) -> Option<u128> {
            v.checked_add(1)
        }
    }
}

fn subtract<
    T: Copy + Ord + num::Step + std::ops::Sub<Output = T> + std::ops::Add<Output = T> + From<u8>,
>(
    set: &[(T, T)],
    rem: &[(T, T)],
) -> Vec<(T, T)> {
    let one = T::from(1u8);
    let mut out = Vec::new();
    for &(mut a, b) in set {
        let mut alive = true;
        for &(ra, rb) in rem {
            if rb < a || ra > b {
                continue;
            }
            if ra > a {
                out.push((a, ra - one));
            }
            if rb >= b {
                alive = false;
                break;
            }
            a = rb + one;
        }
        if alive {
            out.push((a, b));
        }
    }
    out
}

fn overlaps<T: Copy + Ord>(set: &[(T, T)], a: T, b: T) -> bool {
    // first range whose end >= a
    let i = set.partition_point(|r| r.1 < a);
    i < set.len() && set[i].0 <= b
}

fn covers<T: Copy + Ord>(set: &[(T, T)], a: T, b: T) -> bool {
    let i = set.partition_point(|r| r.1 < a);
    i < set.len() && set[i].0 <= a && set[i].1 >= b
}

impl IpSet {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn from_nets<'a>(nets: impl IntoIterator<Item = &'a IpNet>) -> Self {
        let mut s = IpSet::new();
        for n in nets {
            s.push_net(n);
        }
        s.normalize();
        s
    }
    /// Adds without normalising; call [`IpSet::normalize`] after a batch.
    pub fn push_net(&mut self, n: &IpNet) {
        match n {
            IpNet::V4(n) => self.v4.push(v4_range(n)),
            IpNet::V6(n) => self.v6.push(v6_range(n)),
        }
    }
    pub fn push_addr(&mut self, a: IpAddr) {
        match a {
            IpAddr::V4(a) => {
                let v = u32::from(a);
                self.v4.push((v, v))
            }
            IpAddr::V6(a) => {
                let v = u128::from(a);
                self.v6.push((v, v))
            }
        }
    }
    pub fn normalize(&mut self) {
        normalize(&mut self.v4);
        normalize(&mut self.v6);
    }
    pub fn add_net(&mut self, n: &IpNet) {
        self.push_net(n);
        self.normalize();
    }
    pub fn union_with(&mut self, o: &IpSet) {
        self.v4.extend_from_slice(&o.v4);
        self.v6.extend_from_slice(&o.v6);
        self.normalize();
    }
    pub fn remove_net(&mut self, n: &IpNet) {
        match n {
            IpNet::V4(n) => self.v4 = subtract(&self.v4, &[v4_range(n)]),
            IpNet::V6(n) => self.v6 = subtract(&self.v6, &[v6_range(n)]),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }
    pub fn contains(&self, a: IpAddr) -> bool {
        match a {
            IpAddr::V4(a) => {
                let v = u32::from(a);
                overlaps(&self.v4, v, v)
            }
            IpAddr::V6(a) => {
                let v = u128::from(a);
                overlaps(&self.v6, v, v)
            }
        }
    }
    pub fn overlaps_net(&self, n: &IpNet) -> bool {
        match n {
            IpNet::V4(n) => {
                let (a, b) = v4_range(n);
                overlaps(&self.v4, a, b)
            }
            IpNet::V6(n) => {
                let (a, b) = v6_range(n);
                overlaps(&self.v6, a, b)
            }
        }
    }
    pub fn covers_net(&self, n: &IpNet) -> bool {
        match n {
            IpNet::V4(n) => {
                let (a, b) = v4_range(n);
                covers(&self.v4, a, b)
            }
            IpNet::V6(n) => {
                let (a, b) = v6_range(n);
                covers(&self.v6, a, b)
            }
        }
    }
    pub fn overlaps(&self, o: &IpSet) -> bool {
        o.v4.iter().any(|&(a, b)| overlaps(&self.v4, a, b))
            || o.v6.iter().any(|&(a, b)| overlaps(&self.v6, a, b))
    }
    pub fn is_subset_of(&self, o: &IpSet) -> bool {
        self.v4.iter().all(|&(a, b)| covers(&o.v4, a, b))
            && self.v6.iter().all(|&(a, b)| covers(&o.v6, a, b))
    }
    pub fn intersect(&self, o: &IpSet) -> IpSet {
        fn inter<T: Copy + Ord>(x: &[(T, T)], y: &[(T, T)]) -> Vec<(T, T)> {
            let (mut i, mut j, mut out) = (0, 0, Vec::new());
            while i < x.len() && j < y.len() {
                let a = x[i].0.max(y[j].0);
                let b = x[i].1.min(y[j].1);
                if a <= b {
                    out.push((a, b));
                }
                if x[i].1 < y[j].1 {
                    i += 1;
                } else {
                    j += 1;
                }
            }
            out
        }
        IpSet {
            v4: inter(&self.v4, &o.v4),
            v6: inter(&self.v6, &o.v6),
        }
    }

    /// Tailscale's rendering of the set for `SrcIPs`.
    pub fn to_strings(&self) -> Vec<String> {
        self.to_strings_keeping_hosts(&HashSet::new())
    }

    /// As [`IpSet::to_strings`], except that a run made only of `hosts` is written address by
    /// address: the service lists the addresses of nodes one by one even when they are
    /// consecutive, as they are when addresses are handed out in order.
    pub fn to_strings_keeping_hosts(&self, hosts: &HashSet<IpAddr>) -> Vec<String> {
        let mut out = Vec::new();
        for &(a, b) in &self.v4 {
            let (fa, fb) = (Ipv4Addr::from(a), Ipv4Addr::from(b));
            if a == b {
                out.push(fa.to_string());
            } else if all_hosts(a as u128, b as u128, hosts, |x| {
                Ipv4Addr::from(x as u32).into()
            }) {
                out.extend((a..=b).map(|x| Ipv4Addr::from(x).to_string()));
            } else if let Some(len) = exact_prefix_len(a as u128, b as u128, 32) {
                out.push(format!("{fa}/{len}"));
            } else {
                out.push(format!("{fa}-{fb}"));
            }
        }
        for &(a, b) in &self.v6 {
            let (fa, fb) = (Ipv6Addr::from(a), Ipv6Addr::from(b));
            if a == b {
                out.push(fa.to_string());
            } else if all_hosts(a, b, hosts, |x| Ipv6Addr::from(x).into()) {
                out.extend((a..=b).map(|x| Ipv6Addr::from(x).to_string()));
            } else if let Some(len) = exact_prefix_len(a, b, 128) {
                out.push(format!("{fa}/{len}"));
            } else {
                out.push(format!("{fa}-{fb}"));
            }
        }
        out
    }

    /// The set as a minimal list of CIDRs.
    pub fn prefixes(&self) -> Vec<IpNet> {
        let mut out = Vec::new();
        for &(a, b) in &self.v4 {
            for (net, len) in range_to_cidrs(a as u128, b as u128, 32) {
                out.push(IpNet::V4(
                    Ipv4Net::new(Ipv4Addr::from(net as u32), len).expect("len<=32"),
                ));
            }
        }
        for &(a, b) in &self.v6 {
            for (net, len) in range_to_cidrs(a, b, 128) {
                out.push(IpNet::V6(
                    Ipv6Net::new(Ipv6Addr::from(net), len).expect("len<=128"),
                ));
            }
        }
        out
    }
}

/// Prefix length if `[a, b]` is exactly one CIDR block in a `bits`-wide family.
fn exact_prefix_len(a: u128, b: u128, bits: u8) -> Option<u8> {
    let span = b - a; // size - 1
    if span == u128::MAX {
        return if bits == 128 { Some(0) } else { None };
    }
    let size = span + 1;
    if !size.is_power_of_two() || !a.is_multiple_of(size) {
        return None;
    }
    Some(bits - size.trailing_zeros() as u8)
}

fn range_to_cidrs(mut a: u128, b: u128, bits: u8) -> Vec<(u128, u8)> {
    let block_last = |a: u128, k: u32| {
        if k >= 128 {
            u128::MAX
        } else {
            a + ((1u128 << k) - 1)
        }
    };
    let mut out = Vec::new();
    loop {
        // The largest block aligned at `a` that ends within `b`.
        let mut k = if a == 0 {
            bits as u32
        } else {
            a.trailing_zeros().min(bits as u32)
        };
        while k > 0 && block_last(a, k) > b {
            k -= 1;
        }
        out.push((a, bits - k as u8));
        let last = block_last(a, k);
        if last >= b {
            break;
        }
        a = last + 1;
    }
    out
}

pub fn net(s: &str) -> IpNet {
    s.parse().expect("static prefix")
}

/// Tailscale's wildcard source set: the CGNAT range without the ChromeOS VM range, plus the
/// Tailscale ULA range.
pub fn tailnet_wildcard() -> IpSet {
    let mut s = IpSet::from_nets(&[net("100.64.0.0/10"), net("fd7a:115c:a1e0::/48")]);
    s.remove_net(&net("100.115.92.0/23"));
    s
}

/// `autogroup:internet`: every address except private, CGNAT, Tailscale and link-local ranges.
pub fn the_internet() -> IpSet {
    let mut s = IpSet::from_nets(&[net("0.0.0.0/0"), net("2000::/3")]);
    for r in [
        "fc00::/7",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "fd7a:115c:a1e0::/48",
        "100.64.0.0/10",
        "fe80::/10",
        "169.254.0.0/16",
    ] {
        s.remove_net(&net(r));
    }
    s
}

pub fn all_ips() -> IpSet {
    IpSet::from_nets(&[net("0.0.0.0/0"), net("::/0")])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_renders_as_tailscale_does() {
        assert_eq!(
            tailnet_wildcard().to_strings(),
            vec![
                "100.64.0.0-100.115.91.255",
                "100.115.94.0-100.127.255.255",
                "fd7a:115c:a1e0::/48"
            ]
        );
    }

    #[test]
    fn ranges_merge_and_decompose() {
        let s = IpSet::from_nets(&[net("10.0.0.0/25"), net("10.0.0.128/25"), net("10.0.1.5/32")]);
        assert_eq!(s.to_strings(), vec!["10.0.0.0/24", "10.0.1.5"]);
        assert_eq!(s.prefixes(), vec![net("10.0.0.0/24"), net("10.0.1.5/32")]);
        let w = tailnet_wildcard();
        let p = w.prefixes();
        assert!(p.contains(&net("100.64.0.0/11")));
        assert!(!w.contains("100.115.92.1".parse().unwrap()));
        assert!(w.contains("100.115.94.1".parse().unwrap()));
        let all = all_ips();
        assert_eq!(all.prefixes(), vec![net("0.0.0.0/0"), net("::/0")]);
        assert_eq!(all.to_strings(), vec!["0.0.0.0/0", "::/0"]);
    }

    #[test]
    fn internet_excludes_private() {
        let i = the_internet();
        assert!(!i.contains("10.1.2.3".parse().unwrap()));
        assert!(i.contains("8.8.8.8".parse().unwrap()));
        assert!(!i.contains("fd7a:115c:a1e0::1".parse().unwrap()));
        assert!(i.contains("2001:db8::1".parse().unwrap()));
    }

    #[test]
    fn consecutive_node_addresses_are_written_one_by_one() {
        let mut s = IpSet::new();
        for a in ["100.64.0.15", "100.64.0.16", "100.64.0.17"] {
            s.push_addr(a.parse().unwrap());
        }
        s.push_net(&net("10.0.0.0/31"));
        s.normalize();
        assert_eq!(s.to_strings(), ["10.0.0.0/31", "100.64.0.15-100.64.0.17"]);
        let hosts: HashSet<IpAddr> = ["100.64.0.15", "100.64.0.16", "100.64.0.17", "10.0.0.0"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        // 10.0.0.1 is no node's: the prefix stays a prefix.
        assert_eq!(
            s.to_strings_keeping_hosts(&hosts),
            ["10.0.0.0/31", "100.64.0.15", "100.64.0.16", "100.64.0.17"]
        );
    }
}
