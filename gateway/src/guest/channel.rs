//! Components subscribed to channels (`subscription = "names"`): each
//! message published to the channel invokes the component once, in order,
//! with the message as the argument; the result is logged.
//!
//! Invariant: one subscription per component, to the version serving in the
//! published generation, set up only once that generation is live; a new
//! version takes over the subscription and the old one finishes the
//! messages it already holds. Each queue is bounded ([`QUEUE`]): past it a
//! message is dropped for that component and counted, never waited on.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::mpsc;

use super::bindings::types::Message;
use super::handler::Handler;
use super::pubsub::{Hub, Published};
use super::wire::Arguments;
use crate::config::HandlerName;
use crate::control::metrics::Metrics;

/// Messages that may wait for one subscribed component.
pub const QUEUE: usize = 256;
/// The largest message a channel carries.
pub const MAX_MESSAGE: usize = 1024 * 1024;

/// The running subscriptions, by component.
#[derive(Default)]
pub struct Channels {
    running: Mutex<HashMap<HandlerName, Running>>,
}

struct Running {
    handler: Arc<Handler>,
    channel: Arc<str>,
    id: u64,
}

impl Channels {
    /// Makes the subscriptions those of `components` (the components of a
    /// generation just published, by name): new or changed ones subscribe,
    /// the versions they replace and removed ones unsubscribe.
    pub fn sync<'a>(
        &self,
        hub: &Arc<Hub>,
        metrics: &Metrics,
        components: impl Iterator<Item = (&'a HandlerName, &'a Arc<Handler>)>,
    ) {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        let mut wanted: HashMap<HandlerName, Arc<Handler>> = HashMap::new();
        for (name, handler) in components {
            if handler.config().subscription.is_some() && handler.library().is_some() {
                wanted.insert(name.clone(), Arc::clone(handler));
            }
        }
        running.retain(|name, current| {
            let keep = wanted
                .get(name)
                .is_some_and(|handler| Arc::ptr_eq(handler, &current.handler));
            if !keep {
                hub.unsubscribe_channel(&current.channel, current.id);
            }
            keep
        });
        for (name, handler) in wanted {
            if running.contains_key(&name) {
                continue;
            }
            if let Some(started) = subscribe(hub, metrics, &name, handler) {
                running.insert(name, started);
            }
        }
    }
}

/// Subscribes `handler` to its channel and starts the task that invokes it.
fn subscribe(
    hub: &Arc<Hub>,
    metrics: &Metrics,
    name: &HandlerName,
    handler: Arc<Handler>,
) -> Option<Running> {
    let subscription = handler.config().subscription.clone()?;
    let library = handler.library()?;
    let function: Arc<str> = match &subscription.function {
        Some(function) => Arc::clone(function),
        None => Arc::from(library.single_string_function()?),
    };
    let channel = Arc::clone(&subscription.channel);
    let count = |outcome: &str| {
        metrics
            .channel_messages
            .with_label_values(&[&*channel, outcome])
    };
    let (invoked, failed) = (count("invoked"), count("failed"));
    let (inbox, mut queue) = mpsc::channel::<Published>(QUEUE);
    let id = hub.subscribe_channel(&channel, inbox, MAX_MESSAGE, count("dropped"));
    let component = name.label();
    let task_handler = Arc::clone(&handler);
    // Ends when its subscription does (the hub drops the sender) and the
    // queue is empty.
    tokio::spawn(async move {
        while let Some(published) = queue.recv().await {
            let text = match &*published.message {
                Message::Text(text) => text.clone(),
                Message::Binary(bytes) => String::from_utf8_lossy(bytes).into_owned(),
            };
            match task_handler
                .invoke(&function, Arguments::Single(text))
                .await
            {
                Ok(result) => {
                    invoked.inc();
                    tracing::info!(
                        component = %component,
                        function = %function,
                        result = %result,
                        "invocation complete"
                    );
                }
                Err(error) => {
                    failed.inc();
                    tracing::warn!(
                        component = %component,
                        function = %function,
                        channel = %published.topic,
                        "invocation failed: {error}"
                    );
                }
            }
        }
    });
    Some(Running {
        handler,
        channel,
        id,
    })
}
