//! Background duties: deleting ephemeral nodes that stayed away, telling peers when node
//! keys expire, forgetting stale pending logins, dropping expired posture attributes.

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::tailnet::{Change, Tailnet};

pub struct Lifecycle {
    pub tailnet: Arc<Tailnet>,
    pub ephemeral_timeout: Duration,
}

impl Lifecycle {
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        // Often enough that an expiry or an ephemeral timeout is acted on within ~1 s.
        let tick =
            (self.ephemeral_timeout / 4).clamp(Duration::from_millis(250), Duration::from_secs(1));
        let mut last = OffsetDateTime::now_utc();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(tick) => {}
                _ = shutdown.changed() => return,
            }
            let now = OffsetDateTime::now_utc();
            self.reap_ephemeral(now).await;
            self.announce_expiries(last, now).await;
            self.forget_stale_logins(now).await;
            self.drop_expired_attributes(now).await;
            last = now;
        }
    }

    async fn reap_ephemeral(&self, now: OffsetDateTime) {
        let cutoff = now - self.ephemeral_timeout;
        let stale = self.tailnet.read(|s| s.stale_ephemeral_nodes(cutoff));
        if stale.is_empty() {
            return;
        }
        let result = self
            .tailnet
            .mutate(move |s, fx| Ok(s.reap_ephemeral(fx, &stale, cutoff)))
            .await;
        match result {
            Ok(deleted) if !deleted.is_empty() => {
                info!(nodes = ?deleted, "deleted ephemeral nodes after their inactivity timeout");
            }
            Ok(_) => {}
            Err(e) => warn!(error = %e, "could not delete stale ephemeral nodes"),
        }
    }

    async fn announce_expiries(&self, since: OffsetDateTime, now: OffsetDateTime) {
        let expired = self.tailnet.read(|s| s.newly_expired(since, now));
        if expired.is_empty() {
            return;
        }
        info!(nodes = ?expired, "node keys expired");
        let _ = self
            .tailnet
            .mutate(move |_, fx| {
                for id in expired {
                    fx.announce(Change::NodeUpserted(id));
                }
                Ok(())
            })
            .await;
    }

    /// Custom posture attributes past their expiry: dropped, so the policy is recompiled
    /// without them (an expired attribute counts as absent).
    async fn drop_expired_attributes(&self, now: OffsetDateTime) {
        let ids = self.tailnet.read(|s| s.nodes_with_expired_attributes(now));
        if ids.is_empty() {
            return;
        }
        match self
            .tailnet
            .mutate(move |s, fx| Ok(s.drop_expired_attributes(fx, &ids, now)))
            .await
        {
            Ok(changed) if !changed.is_empty() => {
                info!(nodes = ?changed, "posture attributes expired");
            }
            Ok(_) => {}
            Err(e) => warn!(error = %e, "could not drop expired posture attributes"),
        }
    }

    /// Interactive logins nobody approved in time: their waiting clients get an error.
    async fn forget_stale_logins(&self, now: OffsetDateTime) {
        if self.tailnet.read(|s| s.has_stale_pending_logins(now)) {
            let _ = self
                .tailnet
                .mutate(move |s, _| {
                    s.expire_pending_logins(now);
                    Ok(())
                })
                .await;
        }
    }
}
