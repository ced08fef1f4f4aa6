//! Fixture: spins forever without a host call, so only an epoch deadline
//! can stop it.

use guest::wasip2;
use wasip2::http::types::{IncomingRequest, ResponseOutparam};

struct Spin;

impl wasip2::exports::http::incoming_handler::Guest for Spin {
    fn handle(_request: IncomingRequest, _out: ResponseOutparam) {
        let mut counter = 0u64;
        loop {
            counter = std::hint::black_box(counter.wrapping_add(1));
        }
    }
}

wasip2::http::proxy::export!(Spin);
