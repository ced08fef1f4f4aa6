//! How a publication travels between nodes: one NATS message on
//! `NAME.pubsub`. Headers name the node that sent it, the topic's scope and
//! whether the message is text or binary; the payload is the topic (its
//! length in two bytes, then its UTF-8) followed by the message's bytes.
//! The topic rides in the payload because a guest chooses it: any UTF-8,
//! which a header value could not carry.
//!
//! Invariant: whatever arrives, [`decode`] accepts only what a local
//! publication could have been (a scope name, a topic of at most
//! [`MAX_TOPIC`] bytes, text that is UTF-8) and says why otherwise.

use async_nats::HeaderMap;
use bytes::{BufMut as _, Bytes, BytesMut};

use crate::config::HandlerName;
use crate::guest::bindings::types::Message;
use crate::guest::pubsub::{MAX_TOPIC, Published, Relayed};

/// The node that published it.
const NODE: &str = "Wasmgate-Node";
/// The scope of its topic (a handler's `topic_scope`, or `channels`).
const SCOPE: &str = "Wasmgate-Scope";
/// `text` or `binary`.
const KIND: &str = "Wasmgate-Kind";

/// The subject a cluster's publications travel on.
pub(super) fn subject(cluster: &str) -> String {
    format!("{cluster}.pubsub")
}

/// A publication that arrived from another node.
#[derive(Debug)]
pub(super) struct Arrived {
    /// The node it came from.
    pub(super) node: String,
    /// Its scoped topic (`SCOPE:topic`), as the hub keys it.
    pub(super) key: String,
    /// What was published.
    pub(super) published: Published,
}

/// `relayed` as `node` sends it: headers and payload.
pub(super) fn encode(node: &str, relayed: &Relayed) -> Option<(HeaderMap, Bytes)> {
    // The hub's keys are always `SCOPE:topic`, with a scope that has no `:`.
    let (scope, topic) = relayed.key.split_once(':')?;
    let topic_len = u16::try_from(topic.len()).ok()?;
    let (kind, bytes) = match relayed.published.message() {
        Message::Text(text) => ("text", text.as_bytes()),
        Message::Binary(bytes) => ("binary", bytes.as_slice()),
    };
    let mut headers = HeaderMap::new();
    headers.insert(NODE, node);
    headers.insert(SCOPE, scope);
    headers.insert(KIND, kind);
    let mut payload = BytesMut::with_capacity(2 + topic.len() + bytes.len());
    payload.put_u16(topic_len);
    payload.put_slice(topic.as_bytes());
    payload.put_slice(bytes);
    Some((headers, payload.freeze()))
}

/// The publication in `headers` and `payload`, or why it is refused.
pub(super) fn decode(headers: Option<&HeaderMap>, payload: &[u8]) -> Result<Arrived, String> {
    let header = |name: &str| {
        headers
            .and_then(|headers| headers.get(name))
            .map(|value| value.as_str().to_string())
            .ok_or_else(|| format!("no {name} header"))
    };
    let node = header(NODE)?;
    let scope = header(SCOPE)?;
    // A scope is a handler's name, its `topic_scope` or `channels`: all
    // names the config accepts.
    if HandlerName::parse(&scope).is_none() {
        return Err(format!("`{scope}` is not a scope"));
    }
    let kind = header(KIND)?;
    let (length, rest) = payload
        .split_first_chunk::<2>()
        .ok_or("the payload has no topic length")?;
    let length = usize::from(u16::from_be_bytes(*length));
    if length > MAX_TOPIC || length > rest.len() {
        return Err(format!("a topic of {length} bytes"));
    }
    let (topic, message) = rest.split_at(length);
    let topic = std::str::from_utf8(topic).map_err(|_| "the topic is not UTF-8")?;
    let message = match kind.as_str() {
        "text" => Message::Text(
            String::from_utf8(message.to_vec()).map_err(|_| "a text message is not UTF-8")?,
        ),
        "binary" => Message::Binary(message.to_vec()),
        other => return Err(format!("`{other}` is not a message kind")),
    };
    Ok(Arrived {
        node,
        key: format!("{scope}:{topic}"),
        published: Published::new(topic, message),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relayed(key: &str, message: Message) -> Relayed {
        let topic = key.split_once(':').map_or("", |(_, topic)| topic);
        Relayed {
            key: key.to_string(),
            published: Published::new(topic, message),
        }
    }

    #[test]
    fn a_publication_round_trips() {
        for message in [
            Message::Text("héllo: world".into()),
            Message::Binary(vec![0, 1, 255]),
        ] {
            let (headers, payload) =
                encode("node-a", &relayed("chat:room:1 ünï", message.clone())).expect("encodes");
            let arrived = decode(Some(&headers), &payload).expect("decodes");
            assert_eq!(arrived.node, "node-a");
            assert_eq!(arrived.key, "chat:room:1 ünï");
            assert_eq!(arrived.published.topic(), "room:1 ünï");
            assert_eq!(
                format!("{:?}", arrived.published.message()),
                format!("{message:?}")
            );
        }
    }

    #[test]
    fn malformed_messages_are_refused_with_a_reason() {
        let (headers, payload) =
            encode("a", &relayed("chat:t", Message::Text("x".into()))).expect("encodes");
        assert!(decode(None, &payload).is_err());
        assert!(decode(Some(&headers), &[]).is_err());
        // A topic longer than the payload, or than any topic may be.
        assert!(decode(Some(&headers), &[0, 9, b'a']).is_err());
        let mut long = vec![1, 1];
        long.extend(vec![b'a'; 257]);
        assert!(decode(Some(&headers), &long).is_err());
        // Text that is not UTF-8; a scope no config could name.
        assert!(decode(Some(&headers), &[0, 1, b't', 0xff]).is_err());
        let mut bad = headers.clone();
        bad.insert(SCOPE, "Chat:x");
        assert!(decode(Some(&bad), &payload).is_err());
        let mut bad = headers;
        bad.insert(KIND, "video");
        assert!(decode(Some(&bad), &payload).is_err());
    }
}
