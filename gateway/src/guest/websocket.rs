//! WebSocket connections served by `wasmgate:streaming/websocket-service`
//! guests: the host side of the `websocket` interface and the guest calls of
//! one session. The wire (frames, pings, close codes) is
//! [`crate::http::websocket`]'s.
//!
//! Invariant: a session owns its guest instance for the connection's whole
//! life and feeds it one event at a time (each message, each publication,
//! close), each under the handler's time limit.

pub use super::bindings::types::Message;
use super::bindings::types::SendError;
use super::bindings::{WebsocketService, WebsocketServicePre, websocket};
use super::host::Host;
use super::pubsub::{Attachment, Outgoing, Published, message_size};
use super::stream::{Calls, Stream, stream_guest, within};

impl websocket::Host for Attachment {
    fn send(&mut self, message: Message) -> Result<(), SendError> {
        let Some(link) = &self.link else {
            return Err(SendError::Closed);
        };
        let size = message_size(&message);
        link.send(Outgoing::Message(message), size)
    }

    fn close(&mut self, code: u16, reason: String) {
        if let Some(link) = &self.link {
            link.ending.end(code, &reason);
        }
    }
}

/// One accepted connection and the guest instance that serves it.
pub type Session = Stream<WebsocketService>;

stream_guest!(
    WebsocketService,
    WebsocketServicePre<Host>,
    wasmgate_streaming_websocket_handler,
    call_on_open
);

/// What happened on a connection, for its guest.
pub enum Event {
    /// The client sent a message.
    Message(Message),
    /// A topic the guest subscribed to got a message.
    Published(Published),
    /// The connection closed with this code and reason.
    Closed(u16, String),
}

impl Calls<WebsocketService> {
    /// Calls the guest's export for `event`, under the handler's time limit.
    pub async fn deliver(&mut self, event: Event) -> wasmtime::Result<()> {
        self.arm_deadline();
        let handler = self.guest.wasmgate_streaming_websocket_handler();
        let call = async {
            match event {
                Event::Message(message) => handler.call_on_message(&mut self.store, &message).await,
                Event::Published(published) => {
                    handler
                        .call_on_publish(&mut self.store, &published.topic, &published.message)
                        .await
                }
                Event::Closed(code, reason) => {
                    handler.call_on_close(&mut self.store, code, &reason).await
                }
            }
        };
        within(self.timeout, call).await
    }
}
