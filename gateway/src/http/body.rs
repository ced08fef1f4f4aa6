//! Bodies. The one response body type: guests stream theirs through
//! wasi:http, the gateway's own answers (errors, 404s) are small in-memory
//! bodies of the same type, so every response path hands hyper the same
//! thing. The request body as the gateway passes it on: the client's, or
//! what tower-http decoded from it on a route that decompresses. And the
//! request body as guests read it: capped at the handler's body limit,
//! counted as it streams (after decoding, so a decompression bomb meets the
//! same cap as any other body).

use std::future::Future as _;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tower_http::decompression::DecompressionBody;

/// The body of every response the gateway sends.
pub type ResponseBody = wasmtime_wasi_http::p2::body::HyperOutgoingBody;

/// A complete in-memory body.
pub fn full(bytes: impl Into<Bytes>) -> ResponseBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// `body` (a tower-http service's: a file, a compressed or decoded body)
/// as the one response body type; its errors end the response like a
/// guest's internal error.
pub fn boxed<B>(body: B) -> ResponseBody
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: std::fmt::Display,
{
    body.map_err(|error| wasmtime_wasi_http::Error::InternalError(Some(error.to_string())))
        .boxed_unsync()
}

/// A request body as the gateway passes it on.
pub enum RequestBody {
    /// The client's bytes as they arrive.
    Client(hyper::body::Incoming),
    /// What tower-http's `RequestDecompression` decodes from them (boxed: a
    /// decoder's state is large, and most requests have none).
    Decoded(Pin<Box<DecompressionBody<hyper::body::Incoming>>>),
}

impl From<hyper::body::Incoming> for RequestBody {
    fn from(body: hyper::body::Incoming) -> Self {
        Self::Client(body)
    }
}

impl From<DecompressionBody<hyper::body::Incoming>> for RequestBody {
    fn from(body: DecompressionBody<hyper::body::Incoming>) -> Self {
        Self::Decoded(Box::pin(body))
    }
}

/// Why a request body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The connection failed (the client left, or broke HTTP framing).
    #[error(transparent)]
    Client(hyper::Error),
    /// The bytes do not decode as their `Content-Encoding` says.
    #[error("the body does not decode as its Content-Encoding: {0}")]
    Undecodable(tower_http::BoxError),
}

impl From<ReadError> for wasmtime_wasi_http::Error {
    fn from(error: ReadError) -> Self {
        match error {
            ReadError::Client(error) => error.into(),
            ReadError::Undecodable(_) => Self::HttpProtocolError,
        }
    }
}

/// What a body's read error says about the request.
pub trait ReadFailure: Into<wasmtime_wasi_http::Error> {
    /// Whether the client sent bytes that do not decode: its fault (400).
    fn undecodable(&self) -> bool {
        false
    }
}

impl ReadFailure for ReadError {
    fn undecodable(&self) -> bool {
        matches!(self, Self::Undecodable(_))
    }
}

/// A body one guest passes to the next (a middleware's): its errors are
/// already wasi:http's.
impl ReadFailure for wasmtime_wasi_http::Error {}

impl http_body::Body for RequestBody {
    type Data = Bytes;
    type Error = ReadError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, ReadError>>> {
        match self.get_mut() {
            Self::Client(body) => Pin::new(body).poll_frame(cx).map_err(ReadError::Client),
            Self::Decoded(body) => {
                body.as_mut().poll_frame(cx).map_err(|error| {
                    // The client's own failure comes through the decoder
                    // unchanged; anything else is the decoding's.
                    match error.downcast::<hyper::Error>() {
                        Ok(error) => ReadError::Client(*error),
                        Err(error) => ReadError::Undecodable(error),
                    }
                })
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Client(body) => body.is_end_stream(),
            // Only the decoder knows when it has produced the last byte.
            Self::Decoded(_) => false,
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            Self::Client(body) => body.size_hint(),
            Self::Decoded(_) => http_body::SizeHint::default(),
        }
    }
}

/// A request body capped at `limit` bytes, counted as it streams (a
/// `Content-Length` can be absent or lie), and at `idle` between chunks (a
/// slow upload). Past either, the guest's next read fails
/// (`HTTP-request-body-size`, `connection-read-timeout`) and `tripped` fires
/// with the reason, so the request can be answered 413 or 408 if the guest
/// has not answered yet; likewise 400 for bytes that do not decode.
pub struct CappedBody<B = RequestBody> {
    inner: B,
    remaining: u64,
    limit: u64,
    idle: Duration,
    stalled: Pin<Box<tokio::time::Sleep>>,
    /// Whether the guest is waiting for a chunk (the stall clock runs only
    /// then: a guest busy between reads is not the client's fault).
    waiting: bool,
    tripped: Option<tokio::sync::oneshot::Sender<Tripped>>,
    /// Why the body ended in an error, once it has.
    failed: Option<Tripped>,
}

/// Why a request body was cut off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tripped {
    /// More bytes than the limit.
    TooLarge,
    /// No bytes for the idle time.
    Stalled,
    /// Bytes that do not decode as their `Content-Encoding` says.
    Undecodable,
}

impl<B> CappedBody<B> {
    /// Caps `inner` at `limit` bytes and `idle` between chunks; `tripped`
    /// fires when either is passed.
    pub fn new(
        inner: B,
        limit: u64,
        idle: Duration,
        tripped: tokio::sync::oneshot::Sender<Tripped>,
    ) -> Self {
        Self {
            inner,
            remaining: limit,
            limit,
            idle,
            stalled: Box::pin(tokio::time::sleep(idle)),
            waiting: false,
            tripped: Some(tripped),
            failed: None,
        }
    }

    fn trip(&mut self, why: Tripped) -> wasmtime_wasi_http::Error {
        if let Some(tripped) = self.tripped.take() {
            let _ = tripped.send(why);
        }
        self.failed = Some(why);
        self.error()
    }

    fn error(&self) -> wasmtime_wasi_http::Error {
        match self.failed {
            Some(Tripped::Stalled) => wasmtime_wasi_http::Error::ConnectionReadTimeout,
            Some(Tripped::Undecodable) => wasmtime_wasi_http::Error::HttpProtocolError,
            _ => wasmtime_wasi_http::Error::HttpRequestBodySize(Some(self.limit)),
        }
    }
}

impl<B> http_body::Body for CappedBody<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: ReadFailure,
{
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        use std::task::Poll;
        if self.failed.is_some() {
            return Poll::Ready(Some(Err(self.error())));
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let size = frame.data_ref().map_or(0, |data| data.len() as u64);
                if size > self.remaining {
                    return Poll::Ready(Some(Err(self.trip(Tripped::TooLarge))));
                }
                self.remaining -= size;
                self.waiting = false;
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) if error.undecodable() => {
                Poll::Ready(Some(Err(self.trip(Tripped::Undecodable))))
            }
            Poll::Ready(Some(Err(error))) => Poll::Ready(Some(Err(error.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                if !self.waiting {
                    self.waiting = true;
                    let deadline = tokio::time::Instant::now() + self.idle;
                    self.stalled.as_mut().reset(deadline);
                }
                match self.stalled.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(self.trip(Tripped::Stalled)))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
