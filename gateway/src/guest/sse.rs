//! Server-Sent Event streams served by `wasmgate:streaming/sse-service`
//! guests: the host side of the `sse` interface and one session per stream.
//!
//! Invariant: a session owns its guest instance for the stream's whole life
//! and feeds it one event at a time (subscribe, each published message,
//! close), each under the handler's time limit; the host writes the SSE wire
//! format, so no guest data can break the framing.

use std::pin::pin;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::host::Host;
use super::pubsub::{Outgoing, Published};
use super::stream::{Calls, Stream, stream_guest, within};
use crate::control::drain::Drain;

mod bindings {
    wasmtime::component::bindgen!({
        path: "wit",
        world: "sse-service",
        exports: { default: async },
        require_store_data_send: true,
        // The shared interfaces are the WebSocket world's, linked once.
        with: {
            "wasmgate:streaming/types": crate::guest::websocket::bindings::wasmgate::streaming::types,
            "wasmgate:streaming/pubsub": crate::guest::websocket::bindings::wasmgate::streaming::pubsub,
        },
    });
}

use bindings::wasmgate::streaming::sse;
use bindings::wasmgate::streaming::types::{Refusal, Request, SendError};
pub use bindings::{SseService, SseServicePre};

impl sse::Host for Host {
    fn emit(&mut self, event: sse::Event) -> Result<(), SendError> {
        let Some(link) = &self.link else {
            return Err(SendError::Closed);
        };
        let wire = wire_format(&event);
        let size = wire.len();
        link.send(Outgoing::Event(wire), size)
    }

    fn close(&mut self) {
        if let Some(link) = &self.link {
            link.ending.end(1000, "closed by the guest");
        }
    }
}

/// Adds the `sse` interface to the shared linker (the WebSocket world adds
/// `types` and `pubsub`).
pub(super) fn add_to_linker(
    linker: &mut wasmtime::component::Linker<Host>,
) -> wasmtime::Result<()> {
    sse::add_to_linker::<Host, wasmtime::component::HasSelf<Host>>(linker, |host| host)
}

/// An SSE event in wire format: one line per field, `data` split on newlines
/// so it cannot end the event or forge a field.
fn wire_format(event: &sse::Event) -> String {
    let mut wire = String::new();
    let single_line = |value: &str| value.replace(['\r', '\n'], " ");
    if let Some(retry) = event.retry_ms {
        wire.push_str(&format!("retry: {retry}\n"));
    }
    if let Some(id) = &event.id {
        wire.push_str(&format!("id: {}\n", single_line(id)));
    }
    if let Some(name) = &event.event {
        wire.push_str(&format!("event: {}\n", single_line(name)));
    }
    for line in event.data.split('\n') {
        wire.push_str(&format!("data: {}\n", line.trim_end_matches('\r')));
    }
    wire.push('\n');
    wire
}

/// One accepted SSE subscription and the guest instance that serves it.
pub type Session = Stream<bindings::SseService>;

stream_guest!(
    bindings::SseService,
    SseServicePre<Host>,
    wasmgate_streaming_sse_handler,
    call_on_subscribe
);

impl Stream<bindings::SseService> {
    /// Streams the guest's events into `body` until the client goes away,
    /// the guest closes the stream or fails, a limit ends it, or the gateway
    /// drains. A comment line goes out every `keep_alive` so proxies keep the
    /// stream open and a departed client is noticed (only a write can tell).
    pub async fn run(self, body: mpsc::Sender<Bytes>, drain: Drain, keep_alive: Duration) {
        let Stream {
            mut calls,
            mut outbox,
            mut inbox,
            hub,
            id,
            ending,
            limits,
            metrics,
        } = self;
        let mut ticks =
            tokio::time::interval_at(tokio::time::Instant::now() + keep_alive, keep_alive);
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
                        tracing::warn!(handler = &*calls.handler, "SSE guest failed; ending the stream: {error:#}");
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
        hub.leave(id);
        metrics.streams_open.dec();
        if !failed {
            calls.arm_deadline();
            let close = calls
                .guest
                .wasmgate_streaming_sse_handler()
                .call_on_close(&mut calls.store);
            let _ = within(calls.timeout, close).await;
        }
    }
}

impl Calls<bindings::SseService> {
    async fn publish(&mut self, published: Published) -> wasmtime::Result<()> {
        self.arm_deadline();
        let call = self.guest.wasmgate_streaming_sse_handler().call_on_publish(
            &mut self.store,
            &published.topic,
            &published.message,
        );
        within(self.timeout, call).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_fields_cannot_break_the_framing() {
        let event = sse::Event {
            id: Some("7\nevent: forged".into()),
            event: Some("tick".into()),
            data: "line one\nline two".into(),
            retry_ms: Some(1500),
        };
        assert_eq!(
            wire_format(&event),
            "retry: 1500\nid: 7 event: forged\nevent: tick\ndata: line one\ndata: line two\n\n"
        );
    }
}
