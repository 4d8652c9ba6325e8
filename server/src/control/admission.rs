//! When a large first map may start: during a mass registration, after it.
//!
//! A first map of a large tailnet is bulk transfer (≈ 0.9 MB at 10,000 nodes) and the
//! start of a stream that is sent a delta for every change after it. While hundreds of
//! nodes register each second, each first map sent early is followed by a delta for every
//! node that registers after it, so a mass join of N nodes costs N²/2 peers in one
//! message per stream per epoch on top of the first maps. Holding first maps back until
//! the burst is over sends each node its peers once, in shared, pre-compressed chunks,
//! and leaves the cores to the registrations meanwhile: a 10,000-node join on two cores
//! registered 2.6–2.9× as fast and had every first map out 13–30 % sooner, while the
//! median node waited 2–3 s longer for its own (BENCHMARKS.md).
//!
//! The hold applies only to a burst (registrations at `burst_per_second` or more, and the
//! last one less than `quiet` ago) and never lasts longer than `max_wait`. Streams that
//! reconnect register nobody and are not held; clients that restart re-register and count
//! towards a burst like new ones; a node joining now and then is never held.

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::Instant;

/// When first maps are held back during a burst of registrations.
#[derive(Debug, Clone, Copy)]
pub struct Deferral {
    /// Registrations per second (a rate decaying over a second) that make a burst.
    pub burst_per_second: f64,
    /// A burst is over once no registration has arrived for this long.
    pub quiet: Duration,
    /// Longest a first map is held back, however long the burst.
    pub max_wait: Duration,
}

impl Deferral {
    /// At 50 a second a pause of 200 ms is ten mean gaps: within a burst it happens with
    /// odds of e⁻¹⁰, so it marks the end of one.
    pub const DEFAULT: Deferral = Deferral {
        burst_per_second: 50.0,
        quiet: Duration::from_millis(200),
        max_wait: Duration::from_secs(10),
    };
}

/// Decides when each large first map may go out; see the module documentation.
#[derive(Debug)]
pub struct FullMapAdmission {
    /// Bounds the first maps between snapshot and hand-over to HTTP/2 (a storm's bytes in
    /// flight).
    in_flight: Semaphore,
    deferral: Deferral,
    registrations: Mutex<RegistrationRate>,
}

impl FullMapAdmission {
    pub fn new(in_flight: usize, deferral: Deferral) -> FullMapAdmission {
        FullMapAdmission {
            in_flight: Semaphore::new(in_flight),
            deferral,
            registrations: Mutex::default(),
        }
    }

    /// A node was registered. The clock is read under the lock, so that the last
    /// registration never moves back.
    pub fn registration_seen(&self) {
        self.rate().seen(Instant::now());
    }

    /// Waits until a first map may start. The permit is held until the map's last piece
    /// has been handed to HTTP/2.
    pub async fn admit(&self) -> SemaphorePermit<'_> {
        let asked = Instant::now();
        let permit = self
            .in_flight
            .acquire()
            .await
            .expect("the semaphore is never closed");
        let latest = asked + self.deferral.max_wait;
        loop {
            let now = Instant::now();
            let burst_ends = self.rate().burst_ends(now, &self.deferral);
            match burst_ends {
                Some(ends) if now < latest => tokio::time::sleep_until(ends.min(latest)).await,
                _ => return permit,
            }
        }
    }

    fn rate(&self) -> std::sync::MutexGuard<'_, RegistrationRate> {
        self.registrations
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Registrations per second, as a count that decays with a one-second time constant: a
/// steady R a second holds it near R.
#[derive(Debug, Default)]
struct RegistrationRate {
    /// The rate just after the last registration.
    level: f64,
    last: Option<Instant>,
}

impl RegistrationRate {
    fn seen(&mut self, now: Instant) {
        let decayed = match self.last {
            Some(last) => self.level * (-(now - last).as_secs_f64()).exp(),
            None => 0.0,
        };
        self.level = decayed + 1.0;
        self.last = Some(now);
    }

    /// When the burst in progress ends if no registration arrives; `None` outside a burst.
    fn burst_ends(&self, now: Instant, deferral: &Deferral) -> Option<Instant> {
        let last = self.last?;
        let ends = last + deferral.quiet;
        (self.level >= deferral.burst_per_second && ends > now).then_some(ends)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEST: Deferral = Deferral {
        burst_per_second: 10.0,
        quiet: Duration::from_millis(500),
        max_wait: Duration::from_secs(5),
    };

    async fn registrations(a: &FullMapAdmission, count: usize, every: Duration) {
        for _ in 0..count {
            a.registration_seen();
            tokio::time::sleep(every).await;
        }
    }

    /// How long after the call a first map is admitted.
    async fn admitted_after(a: &FullMapAdmission) -> Duration {
        let asked = Instant::now();
        let _permit = a.admit().await;
        Instant::now() - asked
    }

    #[test]
    fn the_rate_counts_registrations_of_the_last_second() {
        let start = Instant::now();
        let mut rate = RegistrationRate::default();
        for i in 0..100 {
            rate.seen(start + Duration::from_millis(10 * i));
        }
        assert!((60.0..70.0).contains(&rate.level), "{}", rate.level);
        let mut slow = RegistrationRate::default();
        for i in 0..50 {
            slow.seen(start + Duration::from_millis(200 * i));
        }
        assert!((5.0..6.0).contains(&slow.level), "{}", slow.level);
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_burst_maps_go_at_once_up_to_the_bound() {
        let a = FullMapAdmission::new(2, TEST);
        // Five registrations a second is no burst.
        registrations(&a, 20, Duration::from_millis(200)).await;
        let first = a.admit().await;
        let _second = a.admit().await;
        let third = tokio::time::timeout(Duration::from_secs(60), a.admit()).await;
        assert!(third.is_err(), "a third map got past a bound of two");
        drop(first);
        assert_eq!(admitted_after(&a).await, Duration::ZERO);
    }

    /// Registrations from time 0, `count` of them `every` apart, and a first map asked for
    /// at `asked_at`: how long that map waits.
    async fn wait_in_burst(count: usize, every: Duration, asked_at: Duration) -> Duration {
        let a = FullMapAdmission::new(8, TEST);
        let map = async {
            tokio::time::sleep(asked_at).await;
            admitted_after(&a).await
        };
        let (waited, ()) = tokio::join!(map, registrations(&a, count, every));
        waited
    }

    #[tokio::test(start_paused = true)]
    async fn during_a_burst_maps_wait_until_it_has_been_quiet() {
        // 100 a second for a second, then nothing. Asked at 0.3 s; the last registration
        // came at 0.99 s; quiet from 1.49 s.
        let waited =
            wait_in_burst(100, Duration::from_millis(10), Duration::from_millis(300)).await;
        assert_eq!(waited, Duration::from_millis(1190));
    }

    #[tokio::test(start_paused = true)]
    async fn no_map_waits_longer_than_max_wait() {
        // 100 a second for 20 s.
        let waited = wait_in_burst(2000, Duration::from_millis(10), Duration::from_secs(1)).await;
        assert_eq!(waited, TEST.max_wait);
    }
}
