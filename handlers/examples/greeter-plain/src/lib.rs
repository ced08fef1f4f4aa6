//! Greeter tutorial, step 1: one self-contained component that answers
//! every request with "Hello, World!".

use guest::wasip2;
use wasip2::http::types::{IncomingRequest, ResponseOutparam};

struct Greeter;

impl wasip2::exports::http::incoming_handler::Guest for Greeter {
    fn handle(_request: IncomingRequest, out: ResponseOutparam) {
        guest::respond(out, 200, "text/plain; charset=utf-8", b"Hello, World!");
    }
}

wasip2::http::proxy::export!(Greeter);
