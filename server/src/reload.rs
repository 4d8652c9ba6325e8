//! What wakes a file that is reloaded while the server runs (the policy file, the TLS
//! certificate): its poll interval, SIGHUP, or the server stopping.

use std::time::Duration;

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::watch;
use tokio::time::{Interval, MissedTickBehavior};
use tracing::warn;

pub struct Triggers {
    tick: Interval,
    hup: Option<Signal>,
    shutdown: watch::Receiver<bool>,
}

impl Triggers {
    /// `what` names the file in the warning when SIGHUP cannot be watched.
    pub fn new(every: Duration, what: &str, shutdown: watch::Receiver<bool>) -> Triggers {
        let hup = match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                warn!(error = %e, "cannot watch SIGHUP; {what} reloads only when its file changes");
                None
            }
        };
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Triggers {
            tick,
            hup,
            shutdown,
        }
    }

    /// `Some(true)` for SIGHUP (reload whatever the file looks like), `Some(false)` when it
    /// is time to poll, `None` once the server stops.
    pub async fn next(&mut self) -> Option<bool> {
        let hup = async {
            match self.hup.as_mut() {
                Some(h) => h.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = self.tick.tick() => Some(false),
            Some(()) = hup => Some(true),
            _ = self.shutdown.changed() => None,
        }
    }
}
