//! Example: a chat room that WebSocket and SSE clients share through pub/sub.
//! One component serves all of it, each part on its own route (see
//! config/wasmgate.toml):
//!
//! - as a `wasi:http` handler: `GET /chat` is the demo page, `POST
//!   /chat/send?room=R` publishes the body to room R (how SSE clients talk);
//! - as a WebSocket handler (`/chat/ws?room=R`): every text message is
//!   published to R, and everything published to R is sent back;
//! - as an SSE handler (`/chat/events?room=R`): everything published to R
//!   arrives as a `message` event with an increasing `id`.
//!
//! Messages are opaque text (the page sends JSON); the room defaults to `lobby`.

use std::cell::{Cell, RefCell};
use std::io::Read as _;

use guest::wasip2;
use wasip2::http::types::{IncomingBody, IncomingRequest, Method, ResponseOutparam};

/// The page a person opens in a browser.
const PAGE: &str = include_str!("page.html");
/// The largest message accepted over `POST /chat/send`.
const MAX_POST: u64 = 16 * 1024;

thread_local! {
    /// The room this instance's connection joined (an instance serves one
    /// connection, so this is per-connection state).
    static ROOM: RefCell<String> = RefCell::new(String::new());
    /// The id of the next SSE event.
    static NEXT_ID: Cell<u64> = const { Cell::new(1) };
}

/// The `room` query parameter of `path?query`, or `lobby`. Rooms are short
/// names of letters, digits, `-` and `_`.
fn room_of(path_with_query: &str) -> Option<String> {
    let query = path_with_query
        .split_once('?')
        .map_or("", |(_, query)| query);
    let room = query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(name, _)| *name == "room")
        .map_or("lobby", |(_, value)| value);
    let valid = !room.is_empty()
        && room.len() <= 64
        && room
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    valid.then(|| room.to_string())
}

struct Chat;

impl wasip2::exports::http::incoming_handler::Guest for Chat {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path_with_query = request.path_with_query().unwrap_or_default();
        let path = path_with_query.split('?').next().unwrap_or_default();
        match (request.method(), path) {
            (Method::Get, "/chat" | "/chat/") => {
                guest::respond(out, 200, "text/html; charset=utf-8", PAGE.as_bytes());
            }
            (Method::Post, "/chat/send") => {
                let Some(room) = room_of(&path_with_query) else {
                    return guest::respond(out, 400, "text/plain", b"bad room name\n");
                };
                match read_body(request) {
                    Some(text) if !text.is_empty() => {
                        websocket_bindings::pubsub::publish(
                            &room,
                            &websocket_bindings::Message::Text(text),
                        );
                        guest::respond(out, 204, "text/plain", b"");
                    }
                    _ => {
                        guest::respond(out, 400, "text/plain", b"send 1 to 16384 bytes of UTF-8\n")
                    }
                }
            }
            _ => guest::respond(out, 404, "text/plain", b"not found\n"),
        }
    }
}

/// The request body as text, if it is UTF-8 and at most [`MAX_POST`] bytes.
fn read_body(request: IncomingRequest) -> Option<String> {
    let incoming = request.consume().ok()?;
    let mut bytes = Vec::new();
    {
        let stream = incoming.stream().ok()?;
        stream.take(MAX_POST + 1).read_to_end(&mut bytes).ok()?;
    }
    IncomingBody::finish(incoming);
    if bytes.len() as u64 > MAX_POST {
        return None;
    }
    String::from_utf8(bytes).ok()
}

wasip2::http::proxy::export!(Chat);

/// The names the WebSocket world's bindings give the shared interfaces.
mod websocket_bindings {
    pub use streaming::websocket::wasmgate::streaming::pubsub;
    pub use streaming::websocket::wasmgate::streaming::types::Message;
}

mod websocket {
    use streaming::websocket::exports::wasmgate::streaming::websocket_handler::{
        Guest, Message, Refusal, Request,
    };
    use streaming::websocket::wasmgate::streaming::{pubsub, websocket};

    use super::{ROOM, room_of};

    pub struct ChatSocket;

    impl Guest for ChatSocket {
        fn on_open(request: Request) -> Result<(), Refusal> {
            let room = room_of(&request.path_with_query).ok_or_else(|| Refusal {
                status: 400,
                reason: "bad room name".into(),
            })?;
            pubsub::subscribe(&room);
            ROOM.with_borrow_mut(|current| *current = room);
            Ok(())
        }

        fn on_message(message: Message) {
            // Text only: the page speaks JSON; binary frames are ignored.
            if let Message::Text(text) = message {
                ROOM.with_borrow(|room| pubsub::publish(room, &Message::Text(text)));
            }
        }

        fn on_publish(_topic: String, message: Message) {
            // A client too slow to keep up is the gateway's to handle
            // (its slow-consumer policy); nothing to do here.
            let _ = websocket::send(&message);
        }

        fn on_close(_code: u16, _reason: String) {}
    }
}

use websocket::ChatSocket;
streaming::websocket::export_websocket!(ChatSocket);

mod events {
    use streaming::sse::exports::wasmgate::streaming::sse_handler::{
        Guest, Message, Refusal, Request,
    };
    use streaming::sse::wasmgate::streaming::pubsub;
    use streaming::sse::wasmgate::streaming::sse::{self, Event};

    use super::{NEXT_ID, room_of};

    pub struct ChatEvents;

    impl Guest for ChatEvents {
        fn on_subscribe(request: Request) -> Result<(), Refusal> {
            let room = room_of(&request.path_with_query).ok_or_else(|| Refusal {
                status: 400,
                reason: "bad room name".into(),
            })?;
            pubsub::subscribe(&room);
            // Tells the client it is in the room: messages from now on reach it.
            let _ = sse::emit(&Event {
                id: None,
                event: Some("joined".into()),
                data: room,
                retry_ms: Some(1000),
            });
            Ok(())
        }

        fn on_publish(_topic: String, message: Message) {
            let Message::Text(data) = message else { return };
            let id = NEXT_ID.get();
            NEXT_ID.set(id + 1);
            let _ = sse::emit(&Event {
                id: Some(id.to_string()),
                event: Some("message".into()),
                data,
                retry_ms: None,
            });
        }

        fn on_close() {}
    }
}

use events::ChatEvents;
streaming::sse::export_sse!(ChatEvents);
