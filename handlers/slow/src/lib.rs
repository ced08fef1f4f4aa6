//! Fixture: writes its body as `chunks` lines (default 5), pausing `pause_ms`
//! (default 200) before each, so tests can act while a response is in flight.

use std::time::Duration;

use guest::wasip2;
use wasip2::http::types::{IncomingRequest, ResponseOutparam};

struct Slow;

impl wasip2::exports::http::incoming_handler::Guest for Slow {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let query = request.path_with_query().unwrap_or_default();
        let chunks = guest::query_number(&query, "chunks").unwrap_or(5);
        let pause = Duration::from_millis(guest::query_number(&query, "pause_ms").unwrap_or(200));
        let mut response = guest::Streaming::start(out, 200, &[("content-type", "text/plain")]);
        for index in 0..chunks {
            std::thread::sleep(pause);
            if !response.write(format!("chunk {index}\n").as_bytes()) {
                break;
            }
        }
        response.finish();
    }
}

wasip2::http::proxy::export!(Slow);
