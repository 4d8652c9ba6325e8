//! Short-lived, single-use server-side records of sign-ins in flight (state, nonce, PKCE
//! verifier; confirmations waiting for a click). Anyone on the internet can start a sign-in,
//! so the store is bounded in count and time: a full store refuses new entries rather than
//! growing, and an entry is gone after its lifetime or its first use.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct ShortLived<T> {
    entries: Mutex<HashMap<String, (Instant, T)>>,
    lifetime: Duration,
    capacity: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many sign-ins are in progress; try again in a few minutes")]
pub struct Full;

impl<T> ShortLived<T> {
    pub fn new(lifetime: Duration, capacity: usize) -> Self {
        ShortLived {
            entries: Mutex::new(HashMap::new()),
            lifetime,
            capacity,
        }
    }

    /// Keeps `value` under `key` (a random token the caller made).
    pub fn insert(&self, key: String, value: T, now: Instant) -> Result<(), Full> {
        let mut entries = self.lock();
        if entries.len() >= self.capacity {
            let lifetime = self.lifetime;
            entries.retain(|_, (created, _)| now.duration_since(*created) < lifetime);
        }
        if entries.len() >= self.capacity {
            return Err(Full);
        }
        entries.insert(key, (now, value));
        Ok(())
    }

    /// Takes the entry out: a second use of the same key finds nothing.
    pub fn take(&self, key: &str, now: Instant) -> Option<T> {
        let (created, value) = self.lock().remove(key)?;
        (now.duration_since(created) < self.lifetime).then_some(value)
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, T)>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_used_once() {
        let store = ShortLived::new(Duration::from_secs(60), 10);
        let now = Instant::now();
        store.insert("s".into(), 1, now).unwrap();
        assert_eq!(store.take("s", now), Some(1));
        assert_eq!(store.take("s", now), None);
        assert_eq!(store.take("unknown", now), None);
    }

    #[test]
    fn an_entry_is_gone_after_its_lifetime() {
        let store = ShortLived::new(Duration::from_secs(60), 10);
        let now = Instant::now();
        store.insert("s".into(), 1, now).unwrap();
        assert_eq!(store.take("s", now + Duration::from_secs(61)), None);
    }

    #[test]
    fn a_full_store_refuses_until_entries_expire() {
        let store = ShortLived::new(Duration::from_secs(60), 2);
        let now = Instant::now();
        store.insert("a".into(), 1, now).unwrap();
        store.insert("b".into(), 2, now).unwrap();
        assert_eq!(store.insert("c".into(), 3, now), Err(Full));
        assert_eq!(store.len(), 2);
        let later = now + Duration::from_secs(61);
        store.insert("c".into(), 3, later).unwrap();
        assert_eq!(store.len(), 1, "expired entries were dropped to make room");
    }
}
