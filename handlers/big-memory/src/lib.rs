//! Fixture: a handler whose 48 MiB zeroed static (in `.bss`, so not in the
//! file) makes its initial linear memory 48 MiB: it cannot be instantiated
//! under a smaller memory limit.

use std::sync::atomic::{AtomicU8, Ordering};

use guest::wasip2;
use wasip2::http::types::{IncomingRequest, ResponseOutparam};

static BUFFER: [AtomicU8; 48 << 20] = [const { AtomicU8::new(0) }; 48 << 20];

struct BigMemory;

impl wasip2::exports::http::incoming_handler::Guest for BigMemory {
    fn handle(_request: IncomingRequest, out: ResponseOutparam) {
        // A write, so the optimiser cannot fold the buffer away.
        let sample = BUFFER[BUFFER.len() - 1].fetch_add(1, Ordering::Relaxed);
        guest::respond(out, 200, "text/plain", format!("big {sample}\n").as_bytes());
    }
}

wasip2::http::proxy::export!(BigMemory);
