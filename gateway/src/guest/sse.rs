//! Server-Sent Event streams served by `wasmgate:streaming/sse-service`
//! guests: the host side of the `sse` interface and the guest calls of one
//! session. The event stream itself (keep-alives, the response body) is
//! [`crate::http::sse`]'s.
//!
//! Invariant: a session owns its guest instance for the stream's whole life
//! and feeds it one event at a time (subscribe, each published message,
//! close), each under the handler's time limit; the host writes the SSE wire
//! format, so no guest data can break the framing.

use super::bindings::sse;
use super::bindings::types::SendError;
use super::bindings::{SseService, SseServicePre};
use super::host::Host;
use super::pubsub::{Attachment, Outgoing, Published};
use super::stream::{Calls, Stream, stream_guest, within};

impl sse::Host for Attachment {
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

/// An SSE event in wire format: one line per field. `data` is split into
/// one `data:` line per line of the guest's text, at CRLF, CR or LF alike
/// (an SSE parser ends a line at each), and `id` and `event` have every line
/// break turned into a space, so no guest text can end the event or forge a
/// field.
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
    for line in event
        .data
        .split("\r\n")
        .flat_map(|part| part.split(['\r', '\n']))
    {
        wire.push_str(&format!("data: {line}\n"));
    }
    wire.push('\n');
    wire
}

/// One accepted SSE subscription and the guest instance that serves it.
pub type Session = Stream<SseService>;

stream_guest!(
    SseService,
    SseServicePre<Host>,
    wasmgate_streaming_sse_handler,
    call_on_subscribe
);

impl Calls<SseService> {
    /// Gives the guest a message published on a topic it subscribed to.
    pub async fn publish(&mut self, published: Published) -> wasmtime::Result<()> {
        self.arm_deadline();
        let call = self.guest.wasmgate_streaming_sse_handler().call_on_publish(
            &mut self.store,
            &published.topic,
            &published.message,
        );
        within(self.timeout, call).await
    }

    /// Tells the guest its stream has ended; a failure only gets logged by
    /// the caller, the stream is gone either way.
    pub async fn close(&mut self) -> wasmtime::Result<()> {
        self.arm_deadline();
        let call = self
            .guest
            .wasmgate_streaming_sse_handler()
            .call_on_close(&mut self.store);
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

    #[test]
    fn cr_lf_and_crlf_all_break_data_lines() {
        let event = sse::Event {
            id: Some("1\r2".into()),
            event: Some("a\r\nb".into()),
            data: "a\rid: 666\r\nevent: forged\rb\n\nc\r".into(),
            retry_ms: None,
        };
        assert_eq!(
            wire_format(&event).as_bytes(),
            b"id: 1 2\nevent: a  b\ndata: a\ndata: id: 666\ndata: event: forged\ndata: b\ndata: \ndata: c\ndata: \n\n"
        );
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        proptest! {
            /// Any guest text makes exactly one event: lines of known fields
            /// only, no CR, and the data comes back with its line breaks as LF.
            #[test]
            fn any_guest_text_is_one_well_formed_event(
                data in "[a-z \r\n:]{0,40}",
                id in proptest::option::of("[a-z0-9\r\n:]{0,10}"),
                name in proptest::option::of("[a-z\r\n:]{0,10}"),
            ) {
                let wire = wire_format(&sse::Event { id, event: name, data: data.clone(), retry_ms: None });
                prop_assert!(!wire.contains('\r'));
                prop_assert!(wire.ends_with("\n\n"));
                let body = &wire[..wire.len() - 1];
                let mut data_lines = Vec::new();
                for line in body.lines() {
                    let (field, value) = line.split_once(": ").expect("field: value");
                    prop_assert!(["id", "event", "data"].contains(&field), "{}", line);
                    if field == "data" {
                        data_lines.push(value);
                    }
                }
                let normalized = data.replace("\r\n", "\n").replace('\r', "\n");
                prop_assert_eq!(data_lines.join("\n"), normalized);
            }
        }
    }
}
