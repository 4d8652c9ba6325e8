//! Fan-out probes: a change made at `t0` and, per viewer, when its stream first said so.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::frame::{MapMessage, Target};
use crate::stats::Summary;

pub struct Probe {
    pub target: Target,
    pub t0: Instant,
    /// Per viewer index: already heard (or not expected to).
    heard: Vec<AtomicBool>,
    remaining: AtomicUsize,
    expected: usize,
    latencies_us: Mutex<Vec<u64>>,
    /// Wire bytes of the messages that delivered the change.
    bytes: AtomicU64,
    /// JSON of the first delivering message, for the floor measurement.
    sample_json: Mutex<Option<Vec<u8>>>,
    done: Notify,
}

/// What a finished (or timed-out) probe measured.
#[derive(Debug, Clone)]
pub struct ProbeResult {
    pub latencies_us: Vec<u64>,
    pub expected: usize,
    pub bytes: u64,
    pub sample_json: Option<Vec<u8>>,
}

impl ProbeResult {
    pub fn summary(&self) -> Summary {
        Summary::of_micros(&mut self.latencies_us.clone())
    }
}

impl Probe {
    /// `viewers[i]`: whether viewer `i` should hear about the change.
    pub fn new(target: Target, viewers: &[bool], t0: Instant) -> Probe {
        let expected = viewers.iter().filter(|v| **v).count();
        Probe {
            target,
            t0,
            heard: viewers.iter().map(|v| AtomicBool::new(!v)).collect(),
            remaining: AtomicUsize::new(expected),
            expected,
            latencies_us: Mutex::new(Vec::with_capacity(expected)),
            bytes: AtomicU64::new(0),
            sample_json: Mutex::new(None),
            done: Notify::new(),
        }
    }

    /// Records that `viewer` received `msg` at `now`; returns whether it was news.
    pub fn observe(
        &self,
        viewer: usize,
        msg: &MapMessage,
        wire_len: usize,
        json: &[u8],
        now: Instant,
    ) -> bool {
        let Some(flag) = self.heard.get(viewer) else {
            return false;
        };
        if flag.load(Ordering::Relaxed) || !msg.mentions(&self.target) {
            return false;
        }
        if flag.swap(true, Ordering::AcqRel) {
            return false;
        }
        let us = now.saturating_duration_since(self.t0).as_micros() as u64;
        lock(&self.latencies_us).push(us);
        self.bytes.fetch_add(wire_len as u64, Ordering::Relaxed);
        {
            let mut sample = lock(&self.sample_json);
            if sample.is_none() {
                *sample = Some(json.to_vec());
            }
        }
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.done.notify_waiters();
        }
        true
    }

    pub fn is_complete(&self) -> bool {
        self.remaining.load(Ordering::Acquire) == 0
    }

    /// Waits until every expected viewer heard, or `timeout`.
    pub async fn wait(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.done.notified();
            if self.is_complete() {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.is_complete();
            }
        }
    }

    pub fn result(&self) -> ProbeResult {
        ProbeResult {
            latencies_us: lock(&self.latencies_us).clone(),
            expected: self.expected,
            bytes: self.bytes.load(Ordering::Relaxed),
            sample_json: lock(&self.sample_json).clone(),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The probes streams check each message against.
#[derive(Default)]
pub struct Probes {
    active: RwLock<Vec<Arc<Probe>>>,
}

impl Probes {
    pub fn add(&self, probe: Arc<Probe>) {
        self.active
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(probe);
    }

    pub fn remove(&self, probe: &Arc<Probe>) {
        self.active
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|p| !Arc::ptr_eq(p, probe));
    }

    pub fn is_empty(&self) -> bool {
        self.active
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }

    pub fn observe(&self, viewer: usize, msg: &MapMessage, wire_len: usize, json: &[u8]) {
        let now = Instant::now();
        for p in self.active.read().unwrap_or_else(|p| p.into_inner()).iter() {
            p.observe(viewer, msg, wire_len, json, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn removal(id: u64) -> MapMessage {
        MapMessage {
            removed: vec![id],
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn counts_each_expected_viewer_once() {
        let t0 = Instant::now();
        let probe = Probe::new(Target::Removed(9), &[true, false, true], t0);
        let later = t0 + Duration::from_millis(5);
        assert!(
            !probe.observe(0, &removal(8), 10, b"{}", later),
            "other node"
        );
        assert!(probe.observe(0, &removal(9), 10, b"{\"a\":1}", later));
        assert!(!probe.observe(0, &removal(9), 10, b"{}", later), "twice");
        assert!(
            !probe.observe(1, &removal(9), 10, b"{}", later),
            "not a viewer"
        );
        assert!(
            !probe.observe(7, &removal(9), 10, b"{}", later),
            "out of range"
        );
        assert!(!probe.wait(Duration::from_millis(1)).await);
        assert!(probe.observe(2, &removal(9), 20, b"{}", t0 + Duration::from_millis(9)));
        assert!(probe.wait(Duration::from_millis(1)).await);
        let r = probe.result();
        assert_eq!(r.expected, 2);
        assert_eq!(r.bytes, 30);
        assert_eq!(r.sample_json.as_deref(), Some(&b"{\"a\":1}"[..]));
        let s = r.summary();
        assert_eq!(s.max, Duration::from_millis(9));
        assert_eq!(s.p50, Duration::from_millis(5));
    }
}
