//! Sign-in throttling: exponential backoff per (username, client address) and, more
//! leniently, per client address. Only the guessing client waits, and the table is bounded:
//! bad attempts slow the guesser down without locking anyone else out or filling memory.
//!
//! An attempt is counted when it is let through, before its password is checked, and a
//! success takes it back: a burst sent at once cannot all pass the check while the first of
//! them are still being hashed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures allowed before waiting starts, per (name, address) and per address.
const FREE_PER_NAME: u32 = 3;
const FREE_PER_ADDRESS: u32 = 20;
const MAX_DELAY: Duration = Duration::from_secs(300);
/// A key with no failure for this long is forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(900);
const MAX_ENTRIES: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
}

#[derive(Default)]
pub struct Throttle {
    entries: Mutex<HashMap<String, Failures>>,
}

fn delay(count: u32, free: u32) -> Duration {
    if count < free {
        return Duration::ZERO;
    }
    let doublings = (count - free).min(16);
    Duration::from_secs(1u64 << doublings).min(MAX_DELAY)
}

/// Where attempts come from: the IPv4 address, or the IPv6 /64 (`net::subscriber`).
fn source(addr: IpAddr) -> String {
    match crate::net::subscriber(addr) {
        IpAddr::V6(net) => format!("{net}/64"),
        v4 => v4.to_string(),
    }
}

fn keys(name: &str, addr: Option<IpAddr>) -> [(String, u32); 2] {
    let addr = addr.map(source).unwrap_or_else(|| "-".into());
    [
        (
            format!("n:{}|{addr}", name.to_ascii_lowercase()),
            FREE_PER_NAME,
        ),
        (format!("a:{addr}"), FREE_PER_ADDRESS),
    ]
}

impl Throttle {
    /// Lets an attempt through and counts it as a failure until [`Self::succeeded`] says
    /// otherwise, or `Err(wait)` while this name or address must wait.
    pub fn attempt(&self, name: &str, addr: Option<IpAddr>) -> Result<(), Duration> {
        self.attempt_at(name, addr, Instant::now())
    }

    fn attempt_at(&self, name: &str, addr: Option<IpAddr>, now: Instant) -> Result<(), Duration> {
        let mut entries = self.entries.lock().expect("throttle lock");
        let mut wait = Duration::ZERO;
        for (key, free) in keys(name, addr) {
            if let Some(f) = entries.get(&key) {
                let until = f.last + delay(f.count, free);
                wait = wait.max(until.saturating_duration_since(now));
            }
        }
        if !wait.is_zero() {
            return Err(wait);
        }
        Self::count(&mut entries, name, addr, now);
        Ok(())
    }

    fn count(
        entries: &mut HashMap<String, Failures>,
        name: &str,
        addr: Option<IpAddr>,
        now: Instant,
    ) {
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, f| now.saturating_duration_since(f.last) < FORGET_AFTER);
        }
        for (key, _) in keys(name, addr) {
            if entries.len() >= MAX_ENTRIES && !entries.contains_key(&key) {
                // Full of fresh entries: someone is spraying. Drop the oldest rather than
                // grow without bound.
                if let Some(oldest) = entries
                    .iter()
                    .min_by_key(|(_, f)| f.last)
                    .map(|(k, _)| k.clone())
                {
                    entries.remove(&oldest);
                }
            }
            let entry = entries.entry(key).or_insert(Failures {
                count: 0,
                last: now,
            });
            if now.saturating_duration_since(entry.last) >= FORGET_AFTER {
                entry.count = 0;
            }
            entry.count = entry.count.saturating_add(1);
            entry.last = now;
        }
    }

    /// A successful sign-in clears that name's failures from that address (the address's
    /// own count keeps the attempt: it is lenient enough).
    pub fn succeeded(&self, name: &str, addr: Option<IpAddr>) {
        let [(key, _), _] = keys(name, addr);
        self.entries.lock().expect("throttle lock").remove(&key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    /// `attempt_at` that was let through and then failed.
    fn fail(t: &Throttle, name: &str, addr: Option<IpAddr>, now: Instant) {
        Throttle::count(&mut t.entries.lock().unwrap(), name, addr, now);
    }

    #[test]
    fn backoff_starts_after_the_free_attempts_and_doubles() {
        let t = Throttle::default();
        let now = Instant::now();
        for _ in 0..FREE_PER_NAME {
            assert!(t.attempt_at("alice", ip("10.0.0.1"), now).is_ok());
        }
        assert_eq!(
            t.attempt_at("alice", ip("10.0.0.1"), now),
            Err(Duration::from_secs(1))
        );
        let later = now + Duration::from_secs(1);
        assert!(t.attempt_at("alice", ip("10.0.0.1"), later).is_ok());
        assert_eq!(
            t.attempt_at("ALICE", ip("10.0.0.1"), later),
            Err(Duration::from_secs(2))
        );
        // Waiting it out lets the next attempt through.
        assert!(
            t.attempt_at("alice", ip("10.0.0.1"), later + Duration::from_secs(2))
                .is_ok()
        );
    }

    /// A burst sent at once: only the free attempts get to the password check, because
    /// each is counted when it is let through, not when its hash is done.
    #[test]
    fn a_burst_gets_only_the_free_attempts_through() {
        let t = Throttle::default();
        let now = Instant::now();
        let through = (0..100)
            .filter(|_| t.attempt_at("alice", ip("10.0.0.1"), now).is_ok())
            .count();
        assert_eq!(through, FREE_PER_NAME as usize);
    }

    #[test]
    fn an_ipv6_guesser_rotating_addresses_in_its_64_shares_one_budget() {
        let t = Throttle::default();
        let now = Instant::now();
        let through = (0..100u16)
            .filter(|i| {
                let addr = ip(&format!("2001:db8:1:2:{i:x}::1"));
                t.attempt_at("alice", addr, now).is_ok()
            })
            .count();
        assert_eq!(through, FREE_PER_NAME as usize);
        assert!(
            t.attempt_at("alice", ip("2001:db8:1:3::1"), now).is_ok(),
            "another /64"
        );
        assert_eq!(source("::ffff:10.0.0.1".parse().unwrap()), "10.0.0.1");
    }

    #[test]
    fn a_guesser_does_not_lock_out_the_same_name_elsewhere_or_other_names() {
        let t = Throttle::default();
        let now = Instant::now();
        for _ in 0..10 {
            fail(&t, "alice", ip("10.0.0.1"), now);
        }
        assert!(t.attempt_at("alice", ip("10.0.0.1"), now).is_err());
        assert!(t.attempt_at("alice", ip("10.0.0.2"), now).is_ok());
        assert!(t.attempt_at("bob", ip("10.0.0.1"), now).is_ok());
    }

    #[test]
    fn success_clears_the_name_and_delays_are_capped() {
        let t = Throttle::default();
        let now = Instant::now();
        for _ in 0..100 {
            fail(&t, "alice", ip("10.0.0.1"), now);
        }
        assert_eq!(t.attempt_at("alice", ip("10.0.0.1"), now), Err(MAX_DELAY));
        t.succeeded("alice", ip("10.0.0.1"));
        // The address's own count (100 > 20 free) still applies.
        assert!(t.attempt_at("alice", ip("10.0.0.1"), now).is_err());
        assert!(
            t.attempt_at("alice", ip("10.0.0.1"), now + MAX_DELAY)
                .is_ok()
        );
    }

    #[test]
    fn a_success_takes_its_attempt_back() {
        let t = Throttle::default();
        let now = Instant::now();
        for _ in 0..10 {
            assert!(t.attempt_at("alice", ip("10.0.0.1"), now).is_ok());
            t.succeeded("alice", ip("10.0.0.1"));
        }
    }
}
