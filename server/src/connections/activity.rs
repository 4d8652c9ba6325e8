//! Whether a connection is doing anything: requests in progress (until their response body
//! is dropped) and requests served so far. A connection that has nothing in progress for
//! too long is closed; before its first request, that is the header timeout.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Load {
    in_progress: usize,
    started: u64,
}

/// Shared by a connection's service (which starts requests) and its watchdog.
#[derive(Clone)]
pub struct Activity {
    load: Arc<watch::Sender<Load>>,
}

/// One request in progress; dropping it ends the request.
pub struct InProgress {
    load: Arc<watch::Sender<Load>>,
}

impl Drop for InProgress {
    fn drop(&mut self) {
        self.load.send_modify(|l| l.in_progress -= 1);
    }
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            load: Arc::new(watch::channel(Load::default()).0),
        }
    }
}

impl Activity {
    pub fn start(&self) -> InProgress {
        self.load.send_modify(|l| {
            l.in_progress += 1;
            l.started += 1;
        });
        InProgress {
            load: self.load.clone(),
        }
    }

    /// Completes once the connection has had nothing in progress for `first` (before any
    /// request began) or `idle` (after); tells which.
    pub async fn idle(&self, first: Duration, idle: Duration) -> Idle {
        let mut rx = self.load.subscribe();
        loop {
            let load = *rx.borrow_and_update();
            if load.in_progress > 0 {
                // The sender lives as long as `self`: `changed` cannot fail here.
                let _ = rx.changed().await;
                continue;
            }
            let (wait, which) = if load.started == 0 {
                (first, Idle::NeverAsked)
            } else {
                (idle, Idle::Quiet)
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => return which,
                _ = rx.changed() => {}
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idle {
    /// No request ever began: the client sent no complete header in time.
    NeverAsked,
    /// Requests were served, and none is in progress since.
    Quiet,
}

/// A response body that keeps its request in progress until it is sent or dropped (a map
/// stream is in progress for as long as it streams).
pub struct Tracked<B> {
    body: B,
    _in_progress: InProgress,
}

impl<B> Tracked<B> {
    pub fn new(body: B, in_progress: InProgress) -> Tracked<B> {
        Tracked {
            body,
            _in_progress: in_progress,
        }
    }
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIRST: Duration = Duration::from_secs(10);
    const IDLE: Duration = Duration::from_secs(120);

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_never_asks_is_idle_after_the_header_timeout() {
        let a = Activity::default();
        let started = tokio::time::Instant::now();
        assert_eq!(a.idle(FIRST, IDLE).await, Idle::NeverAsked);
        assert_eq!(started.elapsed(), FIRST);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_progress_keeps_the_connection_however_long_it_takes() {
        let a = Activity::default();
        let request = a.start();
        let watchdog = tokio::spawn({
            let a = a.clone();
            async move { a.idle(FIRST, IDLE).await }
        });
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert!(
            !watchdog.is_finished(),
            "closed while a request was in progress"
        );
        let ended = tokio::time::Instant::now();
        drop(request);
        assert_eq!(watchdog.await.unwrap(), Idle::Quiet);
        assert_eq!(
            ended.elapsed(),
            IDLE,
            "the idle clock starts when the request ends"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn each_request_restarts_the_idle_clock() {
        let a = Activity::default();
        drop(a.start());
        let watchdog = tokio::spawn({
            let a = a.clone();
            async move { a.idle(FIRST, IDLE).await }
        });
        tokio::time::sleep(IDLE - Duration::from_secs(1)).await;
        drop(a.start());
        let restarted = tokio::time::Instant::now();
        assert_eq!(watchdog.await.unwrap(), Idle::Quiet);
        assert_eq!(restarted.elapsed(), IDLE);
    }
}
