//! Example: a WebSocket handler that echoes every message back. Two text
//! commands use pub/sub: `subscribe:TOPIC`, and `publish:TOPIC:TEXT` (every
//! subscriber then receives `TOPIC: TEXT`). A path containing `refuse` is
//! refused with 403, and the text `trap` panics (both for the tests).

use streaming::websocket::exports::wasmgate::streaming::websocket_handler::{
    Guest, Message, Refusal, Request,
};
use streaming::websocket::wasmgate::streaming::{pubsub, websocket};

struct Echo;

impl Guest for Echo {
    fn on_open(request: Request) -> Result<(), Refusal> {
        if request.path_with_query.contains("refuse") {
            return Err(Refusal {
                status: 403,
                reason: "refused by ws-echo".into(),
            });
        }
        Ok(())
    }

    fn on_message(message: Message) {
        if let Message::Text(text) = &message {
            if text == "trap" {
                panic!("ws-echo was asked to trap");
            }
            if let Some(topic) = text.strip_prefix("subscribe:") {
                pubsub::subscribe(topic);
                let _ = websocket::send(&Message::Text(format!("subscribed to {topic}")));
                return;
            }
            if let Some((topic, text)) = text
                .strip_prefix("publish:")
                .and_then(|rest| rest.split_once(':'))
            {
                pubsub::publish(topic, &Message::Text(text.to_string()));
                return;
            }
        }
        let _ = websocket::send(&message);
    }

    fn on_publish(topic: String, message: Message) {
        if let Message::Text(text) = message {
            let _ = websocket::send(&Message::Text(format!("{topic}: {text}")));
        }
    }

    fn on_close(code: u16, reason: String) {
        eprintln!("ws-echo: closed with {code} {reason}");
    }
}

streaming::websocket::export_websocket!(Echo);
