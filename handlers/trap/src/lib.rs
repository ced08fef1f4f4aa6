//! Fixture: panics before answering, which traps the guest.

use guest::wasip2;
use wasip2::http::types::{IncomingRequest, ResponseOutparam};

struct Trap;

impl wasip2::exports::http::incoming_handler::Guest for Trap {
    fn handle(_request: IncomingRequest, _out: ResponseOutparam) {
        panic!("the trap fixture always panics");
    }
}

wasip2::http::proxy::export!(Trap);
