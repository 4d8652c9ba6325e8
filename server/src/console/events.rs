//! `/console/events`: a server-sent event stream that tells the console's live pages when
//! machines changed, so they refetch. It carries no tailnet data itself (the refetch goes
//! through the server functions and their checks). Bursts are coalesced: at most one event
//! per [`COALESCE`], and a stalled browser holds only its place in the change feed.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;

use crate::tailnet::feed::ChangeFeed;

/// The shortest time between two events to one browser.
const COALESCE: Duration = Duration::from_millis(500);
/// Comment lines that keep idle proxies from closing the stream.
const KEEP_ALIVE: Duration = Duration::from_secs(25);

/// The name of the event the console listens for.
pub const EVENT_NAME: &str = app::dto::tailnet::MACHINES_CHANGED_EVENT;

pub async fn handler(
    State(feed): State<Arc<ChangeFeed>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let rx = feed.watch();
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.changed().await.ok()?;
        // Let a burst (a node joining touches several things) finish, then report it once.
        tokio::time::sleep(COALESCE).await;
        let version = *rx.borrow_and_update();
        let event = Event::default().event(EVENT_NAME).data(version.to_string());
        Some((Ok(event), rx))
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
}
