//! The one response body type: guests stream theirs through wasi:http, the
//! gateway's own answers (errors, 404s) are small in-memory bodies of the same
//! type, so every response path hands hyper the same thing.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

/// The body of every response the gateway sends.
pub type ResponseBody = wasmtime_wasi_http::p2::body::HyperOutgoingBody;

/// A complete in-memory body.
pub fn full(bytes: impl Into<Bytes>) -> ResponseBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}
