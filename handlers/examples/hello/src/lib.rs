//! Example handler: answers every request with a plain-text greeting.

use guest::wasip2;
use wasip2::http::types::{IncomingRequest, ResponseOutparam};

struct Hello;

impl wasip2::exports::http::incoming_handler::Guest for Hello {
    fn handle(_request: IncomingRequest, out: ResponseOutparam) {
        guest::respond(
            out,
            200,
            "text/plain; charset=utf-8",
            b"Hello from wasmgate!\n",
        );
    }
}

wasip2::http::proxy::export!(Hello);
