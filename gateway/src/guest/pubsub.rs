//! Pub/sub between stream connections (the `pubsub` interface), and what ties
//! a guest instance to its connection: its queues, its limits and how it is
//! ended from outside the connection's own task.
//!
//! Invariant: nothing here waits. A publication goes into each subscriber's
//! bounded inbox, a guest's message into its connection's bounded send queue;
//! when either is full the connection's slow-consumer policy decides (end the
//! stream, or skip that message for that connection) and nobody else is held
//! up. In cluster mode a publication is also offered to the [`Relay`] (a
//! bounded queue: full, the other nodes miss it, counted) after it was
//! delivered here; one that came from another node is delivered here only.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::bindings::pubsub;
use super::bindings::types::{self, Message, SendError};
use crate::config::{SlowConsumer, StreamLimits};

/// How many published messages may wait for a busy guest, per connection.
const INBOX: usize = 256;
/// The longest topic name, in bytes.
pub const MAX_TOPIC: usize = 256;
/// Topics one connection may be subscribed to at once.
pub(super) const MAX_SUBSCRIPTIONS: usize = 64;

/// The scope channels live in: a stream handler with `topic_scope =
/// "channels"` sees channel `names` as its topic `names`.
pub const CHANNEL_SCOPE: &str = "channels";

/// Topic subscriptions of every open connection, across handlers and
/// generations.
#[derive(Default)]
pub struct Hub {
    topics: Mutex<HashMap<String, HashMap<u64, Subscriber>>>,
    next_id: AtomicU64,
    /// Where this node's publications leave for the other nodes.
    relay: OnceLock<Relay>,
}

/// The way out to the other nodes of a cluster: a bounded queue, drained by
/// [`crate::cluster`], and the counter of publications it had no room for.
pub struct Relay {
    /// Publications for the other nodes.
    pub queue: mpsc::Sender<Relayed>,
    /// Counts publications the queue was too full to take.
    pub dropped: prometheus::IntCounter,
}

/// A publication on its way to the other nodes.
pub struct Relayed {
    /// The scoped topic (`SCOPE:topic`) it was published to.
    pub key: String,
    /// What was published.
    pub published: Published,
}

struct Subscriber {
    inbox: mpsc::Sender<Published>,
    /// Set when the connection's policy is to be closed rather than skip.
    ending: Option<Arc<Ending>>,
    /// The largest message its guest takes (its stream limit); a larger
    /// publication skips it, counted in `refused`.
    max_message: usize,
    refused: prometheus::IntCounter,
}

/// A publication on its way to the subscribers' guests: one copy, shared by
/// every subscriber.
#[derive(Clone, Debug)]
pub struct Published {
    pub(super) topic: Arc<str>,
    pub(super) message: Arc<Message>,
}

impl Published {
    /// `message` on `topic` (unscoped: as its subscribers see it).
    pub fn new(topic: &str, message: Message) -> Self {
        Self {
            topic: Arc::from(topic),
            message: Arc::new(message),
        }
    }

    /// The topic, as its subscribers see it.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The message.
    pub fn message(&self) -> &Message {
        &self.message
    }
}

impl Hub {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, HashMap<u64, Subscriber>>> {
        // Only map inserts, removals and non-blocking sends happen under the lock.
        self.topics.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Delivers `published` to the subscribers of `key` (a scoped topic)
    /// here, then offers it to the other nodes.
    fn publish(&self, key: &str, published: &Published) {
        self.deliver(key, published);
        if let Some(relay) = self.relay.get() {
            let relayed = Relayed {
                key: key.to_string(),
                published: published.clone(),
            };
            if relay.queue.try_send(relayed).is_err() {
                relay.dropped.inc();
            }
        }
    }

    /// Sends this node's publications to `relay` as well, from now on; the
    /// first relay stays.
    pub fn relay_to(&self, relay: Relay) {
        let _ = self.relay.set(relay);
    }

    /// Delivers `published`, which another node published to `key`, to the
    /// subscribers here, with the same per-subscriber limits as a local
    /// publication; it is not relayed again.
    pub fn deliver(&self, key: &str, published: &Published) {
        let size = message_size(&published.message);
        let topics = self.lock();
        for subscriber in topics.get(key).into_iter().flat_map(HashMap::values) {
            if size > subscriber.max_message {
                subscriber.refused.inc();
                continue;
            }
            if let Err(mpsc::error::TrySendError::Full(_)) =
                subscriber.inbox.try_send(published.clone())
                && let Some(ending) = &subscriber.ending
            {
                ending.end(1008, "slow consumer");
            }
        }
    }

    fn subscribe(&self, topic: String, link: &Link, refused: &prometheus::IntCounter) {
        let subscriber = Subscriber {
            inbox: link.inbox.clone(),
            ending: (link.slow_consumer == SlowConsumer::Close).then(|| Arc::clone(&link.ending)),
            max_message: link.max_message,
            refused: refused.clone(),
        };
        self.lock()
            .entry(topic)
            .or_default()
            .insert(link.id, subscriber);
    }

    /// Publishes `message` to `channel` (a route's `publish`): delivered to
    /// the components subscribed to it and to stream connections subscribed
    /// to its topic in the [`CHANNEL_SCOPE`] scope.
    pub fn publish_channel(&self, channel: &str, message: Message) {
        let published = Published {
            topic: Arc::from(channel),
            message: Arc::new(message),
        };
        self.publish(&format!("{CHANNEL_SCOPE}:{channel}"), &published);
    }

    /// Subscribes a queue (a component's) to `channel`; returns its id.
    /// When `inbox` is full, a message is skipped for it and counted in
    /// `refused`; larger than `max_message`, too.
    pub(super) fn subscribe_channel(
        &self,
        channel: &str,
        inbox: mpsc::Sender<Published>,
        max_message: usize,
        refused: prometheus::IntCounter,
    ) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let subscriber = Subscriber {
            inbox,
            ending: None,
            max_message,
            refused,
        };
        self.lock()
            .entry(format!("{CHANNEL_SCOPE}:{channel}"))
            .or_default()
            .insert(id, subscriber);
        id
    }

    /// Ends the subscription `id` to `channel`.
    pub(super) fn unsubscribe_channel(&self, channel: &str, id: u64) {
        self.unsubscribe(&format!("{CHANNEL_SCOPE}:{channel}"), id);
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
    pub(super) fn leave(&self, connection: u64) {
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
/// handlers may publish too), for a stream guest its connection, and the
/// bounds on what it may publish and subscribe to. The streaming interfaces
/// are implemented on this, not on the whole store.
///
/// Topics are scoped: a guest's topic `lobby` is `SCOPE:lobby` in the hub,
/// where SCOPE is its handler's `topic_scope` (its own name unless the
/// config makes handlers share one), so no handler reaches another's topics
/// unless both are configured to.
pub struct Attachment {
    /// Where `pubsub` publishes.
    pub(super) hub: Option<Arc<Hub>>,
    /// The connection a stream guest serves; `None` for HTTP handlers.
    pub(super) link: Option<Link>,
    scope: Arc<str>,
    /// The largest message it may publish (its handler's stream limit).
    max_message: usize,
    subscriptions: std::collections::HashSet<String>,
    /// Publications and subscriptions refused by these bounds.
    refused: prometheus::IntCounter,
}

impl Attachment {
    /// Pub/sub for a guest of the handler whose topics live in `scope`.
    pub(super) fn new(
        scope: Arc<str>,
        max_message: usize,
        refused: prometheus::IntCounter,
    ) -> Self {
        Self {
            hub: None,
            link: None,
            scope,
            max_message,
            subscriptions: std::collections::HashSet::new(),
            refused,
        }
    }

    fn key(&self, topic: &str) -> String {
        format!("{}:{topic}", self.scope)
    }

    /// Whether `topic` may be used at all; counts and logs it when not.
    fn topic_ok(&self, topic: &str) -> bool {
        let ok = topic.len() <= MAX_TOPIC;
        if !ok {
            self.refused.inc();
            tracing::debug!(
                scope = &*self.scope,
                "pub/sub topic over {MAX_TOPIC} bytes refused"
            );
        }
        ok
    }
}

/// Gives the linker the [`Attachment`] of a store (wasmtime's `HasData`).
pub(super) struct HasAttachment;

impl wasmtime::component::HasData for HasAttachment {
    type Data<'a> = &'a mut Attachment;
}

impl types::Host for Attachment {}

impl pubsub::Host for Attachment {
    fn publish(&mut self, topic: String, message: Message) {
        let Some(hub) = &self.hub else {
            return;
        };
        if !self.topic_ok(&topic) {
            return;
        }
        if message_size(&message) > self.max_message {
            self.refused.inc();
            tracing::debug!(
                scope = &*self.scope,
                "published message over {} bytes refused",
                self.max_message
            );
            return;
        }
        let key = self.key(&topic);
        let published = Published {
            topic: Arc::from(topic),
            message: Arc::new(message),
        };
        hub.publish(&key, &published);
    }

    fn subscribe(&mut self, topic: String) {
        let (Some(hub), Some(link)) = (&self.hub, &self.link) else {
            return;
        };
        if !self.topic_ok(&topic) {
            return;
        }
        if !self.subscriptions.contains(&topic) && self.subscriptions.len() >= MAX_SUBSCRIPTIONS {
            self.refused.inc();
            tracing::debug!(
                scope = &*self.scope,
                "more than {MAX_SUBSCRIPTIONS} topics refused"
            );
            return;
        }
        hub.subscribe(self.key(&topic), link, &self.refused);
        self.subscriptions.insert(topic);
    }

    fn unsubscribe(&mut self, topic: String) {
        if let (Some(hub), Some(link)) = (&self.hub, &self.link) {
            hub.unsubscribe(&self.key(&topic), link.id);
            self.subscriptions.remove(&topic);
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
        let refused = prometheus::IntCounter::new("refused", "test").expect("counter");
        hub.subscribe("room".into(), &closing, &refused);
        hub.subscribe("room".into(), &dropping, &refused);
        let published = Published {
            topic: Arc::from("room"),
            message: Arc::new(Message::Text("hi".into())),
        };
        for _ in 0..=INBOX {
            hub.publish("room", &published);
        }
        assert!(closing_ends.ending.token.is_cancelled());
        assert!(!dropping_ends.ending.token.is_cancelled());
        hub.leave(closing_ends.id);
        hub.leave(dropping_ends.id);
        assert!(hub.lock().is_empty());
    }

    /// A stream guest's attachment in `scope`, with its connection's ends.
    fn attached(hub: &Arc<Hub>, scope: &str, max_message: usize) -> (Attachment, LinkEnds) {
        let limits = StreamLimits {
            max_message,
            ..StreamLimits::default()
        };
        let (link, ends) = Link::new(hub, &limits);
        let counter = prometheus::IntCounter::new("refused", "test").expect("counter");
        let mut attachment = Attachment::new(Arc::from(scope), max_message, counter);
        attachment.hub = Some(Arc::clone(hub));
        attachment.link = Some(link);
        (attachment, ends)
    }

    #[test]
    fn one_publication_is_shared_by_its_subscribers_in_its_scope_only() {
        use pubsub::Host as _;
        let hub = Arc::new(Hub::default());
        let (mut first, mut first_ends) = attached(&hub, "chat", 16);
        let (mut second, mut second_ends) = attached(&hub, "chat", 16);
        let (mut other, mut other_ends) = attached(&hub, "games", 16);
        for attachment in [&mut first, &mut second, &mut other] {
            attachment.subscribe("lobby".into());
        }
        first.publish("lobby".into(), Message::Text("hello".into()));
        let one = first_ends.inbox.try_recv().expect("delivered");
        let two = second_ends.inbox.try_recv().expect("delivered");
        assert!(Arc::ptr_eq(&one.message, &two.message), "one copy, shared");
        assert_eq!(&*one.topic, "lobby");
        assert!(
            other_ends.inbox.try_recv().is_err(),
            "another scope's lobby"
        );
    }

    #[test]
    fn publications_are_delivered_here_then_relayed_and_arrivals_are_not_relayed() {
        use pubsub::Host as _;
        let hub = Arc::new(Hub::default());
        let (queue, mut leaving) = mpsc::channel(1);
        let dropped = prometheus::IntCounter::new("dropped", "test").expect("counter");
        hub.relay_to(Relay {
            queue,
            dropped: dropped.clone(),
        });
        let (mut publisher, _) = attached(&hub, "chat", 16);
        let (mut subscriber, mut ends) = attached(&hub, "chat", 16);
        subscriber.subscribe("lobby".into());
        publisher.publish("lobby".into(), Message::Text("one".into()));
        assert!(ends.inbox.try_recv().is_ok(), "delivered here");
        let relayed = leaving.try_recv().expect("relayed");
        assert_eq!(relayed.key, "chat:lobby");
        // The relay's queue is full: the other nodes miss it, counted; here
        // it is delivered all the same.
        publisher.publish("lobby".into(), Message::Text("two".into()));
        publisher.publish("lobby".into(), Message::Text("three".into()));
        assert_eq!(dropped.get(), 1);
        assert_eq!(
            ends.inbox.try_recv().map(|p| p.topic).ok().as_deref(),
            Some("lobby")
        );
        assert!(ends.inbox.try_recv().is_ok());
        // What another node published is delivered, never relayed again.
        let _ = leaving.try_recv();
        hub.deliver(
            "chat:lobby",
            &Published::new("lobby", Message::Text("remote".into())),
        );
        assert!(ends.inbox.try_recv().is_ok());
        assert!(leaving.try_recv().is_err());
    }

    #[test]
    fn oversized_messages_long_topics_and_too_many_topics_are_refused() {
        use pubsub::Host as _;
        let hub = Arc::new(Hub::default());
        let (mut publisher, _) = attached(&hub, "s", 4);
        let (mut subscriber, mut ends) = attached(&hub, "s", 4);
        subscriber.subscribe("t".into());
        publisher.publish("t".into(), Message::Text("12345".into()));
        publisher.publish("t".repeat(MAX_TOPIC + 1), Message::Text("1".into()));
        assert!(ends.inbox.try_recv().is_err());
        assert_eq!(publisher.refused.get(), 2);
        for topic in 0..MAX_SUBSCRIPTIONS + 5 {
            subscriber.subscribe(format!("topic-{topic}"));
        }
        // "t" and 63 more fit; the other 6 are refused.
        assert_eq!(subscriber.subscriptions.len(), MAX_SUBSCRIPTIONS);
        assert_eq!(subscriber.refused.get(), 6);
        subscriber.subscribe("t".into());
        assert_eq!(
            subscriber.refused.get(),
            6,
            "an existing topic is no new one"
        );
    }
}
