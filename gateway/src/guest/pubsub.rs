//! Pub/sub between stream connections (the `pubsub` interface), and what ties
//! a guest instance to its connection: its queues, its limits and how it is
//! ended from outside the connection's own task.
//!
//! Invariant: nothing here waits. A publication goes into each subscriber's
//! bounded inbox, a guest's message into its connection's bounded send queue;
//! when either is full the connection's slow-consumer policy decides (end the
//! stream, or skip that message for that connection) and nobody else is held
//! up.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::bindings::pubsub;
use super::bindings::types::{self, Message, SendError};
use crate::config::{SlowConsumer, StreamLimits};

/// How many published messages may wait for a busy guest, per connection.
const INBOX: usize = 256;

/// Topic subscriptions of every open connection, across handlers and
/// generations.
#[derive(Default)]
pub struct Hub {
    topics: Mutex<HashMap<String, HashMap<u64, Subscriber>>>,
    next_id: AtomicU64,
}

struct Subscriber {
    inbox: mpsc::Sender<Published>,
    /// Set when the connection's policy is to be closed rather than skip.
    ending: Option<Arc<Ending>>,
}

/// A publication on its way to one subscriber's guest.
pub struct Published {
    pub(super) topic: String,
    pub(super) message: Message,
}

impl Hub {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, HashMap<u64, Subscriber>>> {
        // Only map inserts, removals and non-blocking sends happen under the lock.
        self.topics.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn publish(&self, topic: &str, message: &Message) {
        let topics = self.lock();
        for subscriber in topics.get(topic).into_iter().flat_map(HashMap::values) {
            let published = Published {
                topic: topic.to_string(),
                message: message.clone(),
            };
            if let Err(mpsc::error::TrySendError::Full(_)) = subscriber.inbox.try_send(published)
                && let Some(ending) = &subscriber.ending
            {
                ending.end(1008, "slow consumer");
            }
        }
    }

    fn subscribe(&self, topic: String, link: &Link) {
        let subscriber = Subscriber {
            inbox: link.inbox.clone(),
            ending: (link.slow_consumer == SlowConsumer::Close).then(|| Arc::clone(&link.ending)),
        };
        self.lock()
            .entry(topic)
            .or_default()
            .insert(link.id, subscriber);
    }

    fn unsubscribe(&self, topic: &str, connection: u64) {
        let mut topics = self.lock();
        if let Some(subscribers) = topics.get_mut(topic) {
            subscribers.remove(&connection);
            if subscribers.is_empty() {
                topics.remove(topic);
            }
        }
    }

    /// Ends every subscription of `connection`.
    pub fn leave(&self, connection: u64) {
        self.lock().retain(|_, subscribers| {
            subscribers.remove(&connection);
            !subscribers.is_empty()
        });
    }
}

/// A request to end a stream from outside its task (the guest's `close`, a
/// slow consumer), with the close code and reason; the first one wins.
#[derive(Default)]
pub struct Ending {
    token: CancellationToken,
    why: Mutex<Option<(u16, String)>>,
}

impl Ending {
    /// Ends the stream with `code` and `reason`, unless it is already ending.
    pub fn end(&self, code: u16, reason: &str) {
        let mut why = self.why.lock().unwrap_or_else(PoisonError::into_inner);
        if why.is_none() {
            *why = Some((code, reason.to_string()));
            self.token.cancel();
        }
    }

    /// Waits for [`Self::end`] and returns its code and reason.
    pub async fn ended(&self) -> (u16, String) {
        self.token.cancelled().await;
        self.why
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .unwrap_or((1000, String::new()))
    }
}

/// What goes out to a stream's client.
pub enum Outgoing {
    /// A WebSocket message.
    Message(Message),
    /// An SSE event, already in wire format.
    Event(String),
}

/// What ties a guest instance to its connection.
pub(super) struct Link {
    id: u64,
    inbox: mpsc::Sender<Published>,
    outbox: mpsc::Sender<Outgoing>,
    pub(super) ending: Arc<Ending>,
    max_message: usize,
    slow_consumer: SlowConsumer,
}

/// The connection's side of a [`Link`].
pub(super) struct LinkEnds {
    pub(super) id: u64,
    pub(super) outbox: mpsc::Receiver<Outgoing>,
    pub(super) inbox: mpsc::Receiver<Published>,
    pub(super) ending: Arc<Ending>,
}

impl Link {
    /// A link for a new connection under `limits`, and the connection's ends.
    pub(super) fn new(hub: &Hub, limits: &StreamLimits) -> (Self, LinkEnds) {
        let id = hub.next_id.fetch_add(1, Ordering::Relaxed);
        let (outbox, outgoing) = mpsc::channel(limits.send_queue);
        let (inbox, published) = mpsc::channel(INBOX);
        let ending = Arc::new(Ending::default());
        let link = Self {
            id,
            inbox,
            outbox,
            ending: Arc::clone(&ending),
            max_message: limits.max_message,
            slow_consumer: limits.slow_consumer,
        };
        let ends = LinkEnds {
            id,
            outbox: outgoing,
            inbox: published,
            ending,
        };
        (link, ends)
    }

    /// Queues `outgoing`, `size` bytes long, for the client.
    pub(super) fn send(&self, outgoing: Outgoing, size: usize) -> Result<(), SendError> {
        if size > self.max_message {
            return Err(SendError::TooLarge);
        }
        self.outbox.try_send(outgoing).map_err(|error| match error {
            mpsc::error::TrySendError::Full(_) => {
                if self.slow_consumer == SlowConsumer::Close {
                    self.ending.end(1008, "slow consumer");
                }
                SendError::QueueFull
            }
            mpsc::error::TrySendError::Closed(_) => SendError::Closed,
        })
    }
}

/// The size a message takes on the wire, for the message size limit.
pub(super) fn message_size(message: &Message) -> usize {
    match message {
        Message::Text(text) => text.len(),
        Message::Binary(bytes) => bytes.len(),
    }
}

/// What a guest's store holds of pub/sub: the hub it publishes to (HTTP
/// handlers may publish too) and, for a stream guest, its connection. The
/// streaming interfaces are implemented on this, not on the whole store.
#[derive(Default)]
pub struct Attachment {
    /// Where `pubsub` publishes.
    pub(super) hub: Option<Arc<Hub>>,
    /// The connection a stream guest serves; `None` for HTTP handlers.
    pub(super) link: Option<Link>,
}

/// Gives the linker the [`Attachment`] of a store (wasmtime's `HasData`).
pub(super) struct HasAttachment;

impl wasmtime::component::HasData for HasAttachment {
    type Data<'a> = &'a mut Attachment;
}

impl types::Host for Attachment {}

impl pubsub::Host for Attachment {
    fn publish(&mut self, topic: String, message: Message) {
        if let Some(hub) = &self.hub {
            hub.publish(&topic, &message);
        }
    }

    fn subscribe(&mut self, topic: String) {
        if let (Some(hub), Some(link)) = (&self.hub, &self.link) {
            hub.subscribe(topic, link);
        }
    }

    fn unsubscribe(&mut self, topic: String) {
        if let (Some(hub), Some(link)) = (&self.hub, &self.link) {
            hub.unsubscribe(&topic, link.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(slow_consumer: SlowConsumer) -> (Link, LinkEnds) {
        let limits = StreamLimits {
            max_message: 8,
            send_queue: 1,
            slow_consumer,
            ..StreamLimits::default()
        };
        Link::new(&Hub::default(), &limits)
    }

    fn text(text: &str) -> Outgoing {
        Outgoing::Message(Message::Text(text.into()))
    }

    #[test]
    fn a_full_queue_drops_or_ends_by_policy() {
        let (dropping, ends) = link(SlowConsumer::Drop);
        assert!(dropping.send(text("a"), 1).is_ok());
        assert!(matches!(
            dropping.send(text("b"), 1),
            Err(SendError::QueueFull)
        ));
        assert!(!ends.ending.token.is_cancelled());

        let (closing, ends) = link(SlowConsumer::Close);
        assert!(closing.send(text("a"), 1).is_ok());
        assert!(matches!(
            closing.send(text("b"), 1),
            Err(SendError::QueueFull)
        ));
        assert!(ends.ending.token.is_cancelled());
        assert!(matches!(
            closing.send(text("too long"), 9),
            Err(SendError::TooLarge)
        ));
    }

    #[test]
    fn a_full_inbox_ends_only_subscribers_that_close() {
        let hub = Hub::default();
        let limits = |slow_consumer| StreamLimits {
            slow_consumer,
            ..StreamLimits::default()
        };
        let (closing, closing_ends) = Link::new(&hub, &limits(SlowConsumer::Close));
        let (dropping, dropping_ends) = Link::new(&hub, &limits(SlowConsumer::Drop));
        hub.subscribe("room".into(), &closing);
        hub.subscribe("room".into(), &dropping);
        for _ in 0..=INBOX {
            hub.publish("room", &Message::Text("hi".into()));
        }
        assert!(closing_ends.ending.token.is_cancelled());
        assert!(!dropping_ends.ending.token.is_cancelled());
        hub.leave(closing_ends.id);
        hub.leave(dropping_ends.id);
        assert!(hub.lock().is_empty());
    }
}
