//! WebSocket connections served by `wasmgate:streaming/websocket-service`
//! guests: the host side of the world, the pub/sub hub, and one session per
//! connection.
//!
//! Invariant: a session owns its guest instance for the connection's whole
//! life and feeds it one event at a time (open, each message, each published
//! message, close), each under the handler's time limit; a guest trap closes
//! that connection with 1011 and nothing else.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use futures::{SinkExt as _, StreamExt as _};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as WireMessage;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::host::Host;
use super::stream::{Stream, stream_guest, within};
use crate::drain::Drain;

pub(super) mod bindings {
    wasmtime::component::bindgen!({
        path: "wit",
        world: "websocket-service",
        exports: { default: async },
        require_store_data_send: true,
    });
}

use bindings::wasmgate::streaming::types::{Message, Refusal, Request, SendError};
use bindings::wasmgate::streaming::{pubsub, types, websocket};
pub use bindings::{WebsocketService, WebsocketServicePre};

/// How many outgoing messages may wait for a slow client before `send`
/// answers `queue-full`.
const SEND_QUEUE: usize = 64;
/// How many published messages may wait for a busy connection; past that a
/// slow subscriber misses messages rather than holding up the publisher.
const INBOX: usize = 256;

/// Topic subscriptions of every open connection, across handlers and
/// generations.
#[derive(Default)]
pub struct Hub {
    topics: Mutex<HashMap<String, HashMap<u64, mpsc::Sender<Published>>>>,
    next_id: AtomicU64,
}

pub(super) struct Published {
    pub(super) topic: String,
    pub(super) message: Message,
}

impl Hub {
    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, HashMap<u64, mpsc::Sender<Published>>>> {
        // Only map inserts and removals happen under the lock.
        self.topics.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn publish(&self, topic: &str, message: &Message) {
        let topics = self.lock();
        for inbox in topics.get(topic).into_iter().flat_map(HashMap::values) {
            let _ = inbox.try_send(Published {
                topic: topic.to_string(),
                message: message.clone(),
            });
        }
    }

    pub(super) fn leave(&self, connection: u64) {
        let mut topics = self.lock();
        topics.retain(|_, subscribers| {
            subscribers.remove(&connection);
            !subscribers.is_empty()
        });
    }
}

/// What ties a guest instance to its connection.
pub(super) struct Link {
    pub(super) id: u64,
    pub(super) hub: Arc<Hub>,
    pub(super) outbox: mpsc::Sender<Outgoing>,
    pub(super) inbox: mpsc::Sender<Published>,
}

impl Link {
    /// A link for a new connection, with the receiving ends of its queues.
    pub(super) fn new(
        hub: &Arc<Hub>,
    ) -> (Self, mpsc::Receiver<Outgoing>, mpsc::Receiver<Published>) {
        let id = hub.next_id.fetch_add(1, Ordering::Relaxed);
        let (outbox, outgoing) = mpsc::channel(SEND_QUEUE);
        let (inbox, published) = mpsc::channel(INBOX);
        let link = Self {
            id,
            hub: Arc::clone(hub),
            outbox,
            inbox,
        };
        (link, outgoing, published)
    }
}

pub(super) enum Outgoing {
    Message(Message),
    /// An SSE event, already in wire format.
    Event(String),
    Close(u16, String),
}

impl types::Host for Host {}

impl websocket::Host for Host {
    fn send(&mut self, message: Message) -> Result<(), SendError> {
        let Some(link) = &self.link else {
            return Err(SendError::Closed);
        };
        link.outbox
            .try_send(Outgoing::Message(message))
            .map_err(|error| match error {
                mpsc::error::TrySendError::Full(_) => SendError::QueueFull,
                mpsc::error::TrySendError::Closed(_) => SendError::Closed,
            })
    }

    fn close(&mut self, code: u16, reason: String) {
        if let Some(link) = &self.link {
            let _ = link.outbox.try_send(Outgoing::Close(code, reason));
        }
    }
}

impl pubsub::Host for Host {
    fn publish(&mut self, topic: String, message: Message) {
        if let Some(link) = &self.link {
            link.hub.publish(&topic, &message);
        }
    }

    fn subscribe(&mut self, topic: String) {
        if let Some(link) = &self.link {
            link.hub
                .lock()
                .entry(topic)
                .or_default()
                .insert(link.id, link.inbox.clone());
        }
    }

    fn unsubscribe(&mut self, topic: String) {
        if let Some(link) = &self.link
            && let Some(subscribers) = link.hub.lock().get_mut(&topic)
        {
            subscribers.remove(&link.id);
        }
    }
}

/// Adds the world's imports to the shared linker.
pub(super) fn add_to_linker(
    linker: &mut wasmtime::component::Linker<Host>,
) -> wasmtime::Result<()> {
    bindings::WebsocketService::add_to_linker::<Host, wasmtime::component::HasSelf<Host>>(
        linker,
        |host| host,
    )
}

/// One accepted connection and the guest instance that serves it.
pub type Session = Stream<bindings::WebsocketService>;

stream_guest!(
    bindings::WebsocketService,
    WebsocketServicePre<Host>,
    wasmgate_streaming_websocket_handler,
    call_on_open
);

impl Stream<bindings::WebsocketService> {
    /// Bridges `socket` and the guest until either side closes or the
    /// gateway drains (close 1001).
    pub async fn run<S>(mut self, socket: WebSocketStream<S>, drain: Drain)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let (mut sink, mut incoming) = socket.split();
        let (code, reason) = loop {
            tokio::select! {
                frame = incoming.next() => {
                    let message = match frame {
                        Some(Ok(WireMessage::Text(text))) => Message::Text(text.to_string()),
                        Some(Ok(WireMessage::Binary(bytes))) => Message::Binary(bytes.to_vec()),
                        Some(Ok(WireMessage::Close(frame))) => {
                            break frame.map_or((1005, String::new()), |f| (u16::from(f.code), f.reason.to_string()));
                        }
                        Some(Ok(_control)) => continue,
                        Some(Err(_)) | None => break (1006, String::new()),
                    };
                    if let Err(error) = self.deliver(Event::Message(message)).await {
                        let _ = sink.send(close(1011, "guest failure")).await;
                        break self.failed(error);
                    }
                }
                Some(published) = self.inbox.recv() => {
                    if let Err(error) = self.deliver(Event::Published(published)).await {
                        let _ = sink.send(close(1011, "guest failure")).await;
                        break self.failed(error);
                    }
                }
                Some(outgoing) = self.outbox.recv() => match outgoing {
                    Outgoing::Message(Message::Text(text)) => { let _ = sink.send(WireMessage::text(text)).await; }
                    Outgoing::Message(Message::Binary(bytes)) => { let _ = sink.send(WireMessage::binary(bytes)).await; }
                    // SSE events have no place on a WebSocket.
                    Outgoing::Event(_) => {}
                    Outgoing::Close(code, reason) => {
                        let _ = sink.send(close(code, &reason)).await;
                        break (code, reason);
                    }
                },
                () = drain.signaled() => {
                    let _ = sink.send(close(1001, "gateway shutting down")).await;
                    break (1001, "gateway shutting down".to_string());
                }
            }
        };
        // Whatever the guest queued last still goes out before the socket ends.
        while let Ok(Outgoing::Message(message)) = self.outbox.try_recv() {
            let wire = match message {
                Message::Text(text) => WireMessage::text(text),
                Message::Binary(bytes) => WireMessage::binary(bytes),
            };
            let _ = sink.send(wire).await;
        }
        let _ = sink.close().await;
        if code != 1011 {
            let _ = self.deliver(Event::Closed(code, reason)).await;
        }
        self.hub.leave(self.id);
    }

    async fn deliver(&mut self, event: Event) -> wasmtime::Result<()> {
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
    fn failed(&self, error: wasmtime::Error) -> (u16, String) {
        tracing::warn!(
            handler = &*self.handler,
            "WebSocket guest failed; closing with 1011: {error:#}"
        );
        (1011, "guest failure".to_string())
    }
}

enum Event {
    Message(Message),
    Published(Published),
    Closed(u16, String),
}

fn close(code: u16, reason: &str) -> WireMessage {
    WireMessage::Close(Some(CloseFrame {
        code: CloseCode::from(code),
        reason: reason.to_string().into(),
    }))
}
