//! The event stream of an SSE route: the guest's events, already in wire
//! format, written into the response body with keep-alive comments, until
//! one side ends it. The guest calls are [`crate::guest::sse`]'s.
//!
//! Invariant: a client that stops reading holds up only its own stream's
//! body; the stream still ends on drain, idle timeout or the guest's close.

use std::pin::pin;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::control::drain::Drain;
use crate::guest::pubsub::Outgoing;
use crate::guest::sse::Session;
use crate::guest::stream::Stream;

/// Streams the events of `session`'s guest into `body` until the client
/// goes away, the guest closes the stream or fails, a limit ends it, or the
/// gateway drains. A comment line goes out every `keep_alive` so proxies keep
/// the stream open and a departed client is noticed (only a write can tell).
pub async fn run(session: Session, body: mpsc::Sender<Bytes>, drain: Drain, keep_alive: Duration) {
    let Stream {
        mut calls,
        mut outbox,
        mut inbox,
        ending,
        limits,
        metrics,
        open,
    } = session;
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + keep_alive, keep_alive);
    let mut idle = pin!(tokio::time::sleep(limits.idle_timeout));
    let mut failed = false;
    loop {
        let chunk = tokio::select! {
            _ = ticks.tick() => Bytes::from_static(b": keep-alive\n\n"),
            Some(outgoing) = outbox.recv() => match outgoing {
                Outgoing::Event(wire) => {
                    metrics.messages_out.inc();
                    Bytes::from(wire)
                }
                // WebSocket messages have no place in an event stream.
                Outgoing::Message(_) => continue,
            },
            Some(published) = inbox.recv() => {
                idle.as_mut().reset(tokio::time::Instant::now() + limits.idle_timeout);
                if let Err(error) = calls.publish(published).await {
                    tracing::warn!(handler = calls.handler(), "SSE guest failed; ending the stream: {error:#}");
                    failed = true;
                    break;
                }
                continue;
            }
            () = body.closed() => break,
            _ = ending.ended() => break,
            () = drain.signaled() => break,
            () = &mut idle => break,
        };
        // A client that stops reading holds this send up, not the stream's end.
        tokio::select! {
            sent = body.send(chunk) => if sent.is_err() { break },
            _ = ending.ended() => break,
            () = drain.signaled() => break,
            () = &mut idle => break,
        }
    }
    // Events the guest queued last still go out, as far as the body has room.
    while let Ok(Outgoing::Event(wire)) = outbox.try_recv() {
        if body.try_send(Bytes::from(wire)).is_err() {
            break;
        }
    }
    drop(open);
    if !failed {
        let _ = calls.close().await;
    }
}
