//! Bodies. The one response body type: guests stream theirs through
//! wasi:http, the gateway's own answers (errors, 404s) are small in-memory
//! bodies of the same type, so every response path hands hyper the same
//! thing. And the request body as guests read it: capped at the handler's
//! body limit, counted as it streams.

use std::future::Future as _;
use std::pin::Pin;
use std::time::Duration;

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

/// A request body capped at `limit` bytes, counted as it streams (a
/// `Content-Length` can be absent or lie), and at `idle` between chunks (a
/// slow upload). Past either, the guest's next read fails
/// (`HTTP-request-body-size`, `connection-read-timeout`) and `tripped` fires
/// with the reason, so the request can be answered 413 or 408 if the guest
/// has not answered yet.
pub struct CappedBody<B = hyper::body::Incoming> {
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
            _ => wasmtime_wasi_http::Error::HttpRequestBodySize(Some(self.limit)),
        }
    }
}

impl<B> http_body::Body for CappedBody<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<wasmtime_wasi_http::Error>,
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
