//! Example: `GET /sse/ROOM` subscribes to the pub/sub topic ROOM and streams
//! every message published to it (by WebSocket or SSE clients alike) as an
//! SSE event named after the room.

use streaming::sse::exports::wasmgate::streaming::sse_handler::{Guest, Message, Refusal, Request};
use streaming::sse::wasmgate::streaming::pubsub;
use streaming::sse::wasmgate::streaming::sse::{self, Event};

struct Room;

impl Guest for Room {
    fn on_subscribe(request: Request) -> Result<(), Refusal> {
        let path = request
            .path_with_query
            .split('?')
            .next()
            .unwrap_or_default();
        let room = path.rsplit('/').next().unwrap_or_default();
        if room.is_empty() {
            return Err(Refusal {
                status: 404,
                reason: "no room in the path".into(),
            });
        }
        pubsub::subscribe(room);
        let _ = sse::emit(&Event {
            id: None,
            event: Some("joined".into()),
            data: room.to_string(),
            retry_ms: None,
        });
        Ok(())
    }

    fn on_publish(topic: String, message: Message) {
        let data = match message {
            Message::Text(text) => text,
            Message::Binary(bytes) => format!("{} bytes", bytes.len()),
        };
        let _ = sse::emit(&Event {
            id: None,
            event: Some(topic),
            data,
            retry_ms: None,
        });
    }

    fn on_close() {
        eprintln!("sse-room: client gone");
    }
}

streaming::sse::export_sse!(Room);
