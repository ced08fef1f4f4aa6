//! Server-Sent Events client helper: the next event of a stream parsed by
//! `eventsource-stream`.

use std::time::Duration;

use eventsource_stream::Event;
use futures::{Stream, StreamExt as _};

/// The next event, within 10 s; panics if the stream ends or breaks.
pub async fn next_event<S, E>(events: &mut S) -> Event
where
    S: Stream<Item = Result<Event, E>> + Unpin,
    E: std::fmt::Debug,
{
    tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .expect("an event in time")
        .expect("the stream is open")
        .expect("a well-formed event")
}
