//! Example: Server-Sent Events from a plain `wasi:http` handler. It streams
//! one `tick` event per interval (`?interval_ms=`, default 1000) and stops
//! after `?count=` events (default: never), flushing each event as it is
//! written; the gateway passes every chunk on as it comes.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use guest::wasip2;
use wasip2::http::types::{IncomingRequest, ResponseOutparam};

struct Clock;

impl wasip2::exports::http::incoming_handler::Guest for Clock {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let query = request.path_with_query().unwrap_or_default();
        let interval =
            Duration::from_millis(guest::query_number(&query, "interval_ms").unwrap_or(1000));
        let count = guest::query_number(&query, "count");
        let mut response = guest::Streaming::start(
            out,
            200,
            &[
                ("content-type", "text/event-stream"),
                ("cache-control", "no-cache"),
            ],
        );
        let mut tick = 0u64;
        while count.is_none_or(|count| tick < count) {
            let unix_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |since| since.as_millis());
            // The first event also tells clients how soon to reconnect.
            let retry = if tick == 0 {
                format!("retry: {}\n", interval.as_millis())
            } else {
                String::new()
            };
            let event = format!(
                "{retry}id: {tick}\nevent: tick\ndata: {{\"tick\":{tick},\"unix_ms\":{unix_ms}}}\n\n"
            );
            if !response.write(event.as_bytes()) {
                // The client left.
                break;
            }
            tick += 1;
            std::thread::sleep(interval);
        }
        response.finish();
    }
}

wasip2::http::proxy::export!(Clock);
