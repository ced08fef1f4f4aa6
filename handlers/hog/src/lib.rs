//! Fixture: allocates (and touches) memory a mebibyte at a time until the
//! allocation fails, which aborts the guest.

use guest::wasip2;
use wasip2::http::types::{IncomingRequest, ResponseOutparam};

struct Hog;

impl wasip2::exports::http::incoming_handler::Guest for Hog {
    fn handle(_request: IncomingRequest, out: ResponseOutparam) {
        let mut held: Vec<Vec<u8>> = Vec::new();
        loop {
            held.push(vec![0xA5; 1 << 20]);
            if held.len() == usize::MAX {
                break;
            }
        }
        guest::respond(
            out,
            200,
            "text/plain",
            b"unreachable: memory is unbounded\n",
        );
    }
}

wasip2::http::proxy::export!(Hog);
