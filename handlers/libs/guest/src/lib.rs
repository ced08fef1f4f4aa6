//! Helpers shared by wasmgate's example and fixture guests: answering a
//! `wasi:http` request with a status, headers and a body without repeating the
//! resource choreography (response → body → stream → finish) in every handler.

use std::io::Write as _;

pub mod client;
pub mod middleware;

pub use wasip2;
use wasip2::http::types::{Fields, OutgoingBody, OutgoingResponse, ResponseOutparam};
use wasip2::io::streams::OutputStream;

/// A response whose headers are sent; the body is written through [`Self::stream`].
pub struct Streaming {
    body: OutgoingBody,
    stream: Option<OutputStream>,
}

impl Streaming {
    /// Sends `status` and `headers` to the client and opens the body.
    pub fn start(out: ResponseOutparam, status: u16, headers: &[(&str, &str)]) -> Self {
        let fields = Fields::new();
        for (name, value) in headers {
            fields
                .append(name, &value.as_bytes().to_vec())
                .expect("fixture header names are valid");
        }
        let response = OutgoingResponse::new(fields);
        response.set_status_code(status).expect("valid status");
        let body = response.body().expect("body is taken once");
        ResponseOutparam::set(out, Ok(response));
        let stream = body.write().expect("stream is taken once");
        Self {
            body,
            stream: Some(stream),
        }
    }

    /// The body stream; it implements `std::io::Write`, which chunks and waits
    /// for the host's write budget.
    pub fn stream(&mut self) -> &mut OutputStream {
        self.stream.as_mut().expect("stream lives until finish")
    }

    /// Writes `bytes` and flushes them to the client; `false` once the body
    /// is closed (the client left, or already has every byte a
    /// `content-length` announced and the host finished the response).
    pub fn write(&mut self, bytes: &[u8]) -> bool {
        let stream = self.stream();
        stream.write_all(bytes).is_ok() && stream.flush().is_ok()
    }

    /// Ends the body; the stream must be dropped before `finish`. A body the
    /// host already closed needs no ending.
    pub fn finish(mut self) {
        drop(self.stream.take());
        let _ = OutgoingBody::finish(self.body, None);
    }
}

/// Answers with a complete body in one go.
pub fn respond(out: ResponseOutparam, status: u16, content_type: &str, body: &[u8]) {
    let length = body.len().to_string();
    let mut response = Streaming::start(
        out,
        status,
        &[("content-type", content_type), ("content-length", &length)],
    );
    response.write(body);
    response.finish();
}

/// The number in `key=N` of a request's `path?query`, if any.
pub fn query_number(path_with_query: &str, key: &str) -> Option<u64> {
    let (_, query) = path_with_query.split_once('?')?;
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(name, _)| *name == key)
        .and_then(|(_, value)| value.parse().ok())
}

/// Defines and exports a handler that answers `VERSION\n` to every request.
/// The hot-swap fixtures `version-v1` and `version-v2` differ only in it.
#[macro_export]
macro_rules! versioned_handler {
    ($version:literal) => {
        struct Versioned;

        impl $crate::wasip2::exports::http::incoming_handler::Guest for Versioned {
            fn handle(
                _request: $crate::wasip2::http::types::IncomingRequest,
                out: $crate::wasip2::http::types::ResponseOutparam,
            ) {
                $crate::respond(out, 200, "text/plain", concat!($version, "\n").as_bytes());
            }
        }

        $crate::wasip2::http::proxy::export!(Versioned);
    };
}
