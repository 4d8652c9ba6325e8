//! A cheap feed of "the machine list changed" for watchers such as the console's live
//! pages. The writer only bumps a counter (never waits, never queues): every watcher holds
//! one `watch` receiver, so a slow or stalled watcher costs a fixed few bytes, and any number
//! of changes between two looks at the counter reach it as one.

use tokio::sync::watch;

use super::{Change, ChangeListener};

pub struct ChangeFeed {
    version: watch::Sender<u64>,
}

impl Default for ChangeFeed {
    fn default() -> Self {
        ChangeFeed {
            version: watch::Sender::new(0),
        }
    }
}

impl ChangeFeed {
    /// A receiver that sees the counter move after each batch of machine changes.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }
}

/// Whether a change is visible on the machine pages (list or detail).
fn shows_on_machine_pages(change: &Change) -> bool {
    match change {
        Change::NodeUpserted(_) | Change::NodeOnline { .. } | Change::NodeRemoved(_) => true,
        // Endpoint and DERP churn is frequent and shows only on a machine's own page, which
        // a reload brings up to date; refetching every open list for it is not worth it.
        Change::NodePatched(_)
        | Change::Visibility
        | Change::Filters
        | Change::DnsConfig
        | Change::DerpMap => false,
    }
}

impl ChangeListener for ChangeFeed {
    fn on_changes(&self, changes: &[Change]) {
        if changes.iter().any(shows_on_machine_pages) {
            // send_modify updates even without receivers and never blocks on them.
            self.version.send_modify(|v| *v = v.wrapping_add(1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn many_changes_reach_a_watcher_as_one_and_others_not_at_all() {
        let feed = ChangeFeed::default();
        let mut rx = feed.watch();
        feed.on_changes(&[Change::DnsConfig, Change::Visibility]);
        assert!(!rx.has_changed().unwrap());
        for id in 0..1000 {
            feed.on_changes(&[Change::NodeRemoved(id)]);
        }
        assert!(rx.has_changed().unwrap());
        rx.changed().await.unwrap();
        assert_eq!(*rx.borrow_and_update(), 1000);
        assert!(!rx.has_changed().unwrap());
    }
}
