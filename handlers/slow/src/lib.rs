//! Fixture: writes its body as `chunks` lines (default 5), pausing `pause_ms`
//! (default 200) before each, so tests can act while a response is in flight.

use std::time::Duration;

use guest::wasip2;
use wasip2::http::types::{IncomingRequest, ResponseOutparam};

struct Slow;

impl wasip2::exports::http::incoming_handler::Guest for Slow {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let query = request.path_with_query().unwrap_or_default();
        let chunks = query_number(&query, "chunks").unwrap_or(5);
        let pause = Duration::from_millis(query_number(&query, "pause_ms").unwrap_or(200));
        let mut response = guest::Streaming::start(out, 200, &[("content-type", "text/plain")]);
        for index in 0..chunks {
            std::thread::sleep(pause);
            response.write(format!("chunk {index}\n").as_bytes());
        }
        response.finish();
    }
}

fn query_number(path_with_query: &str, key: &str) -> Option<u64> {
    let (_, query) = path_with_query.split_once('?')?;
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(name, _)| *name == key)
        .and_then(|(_, value)| value.parse().ok())
}

wasip2::http::proxy::export!(Slow);
