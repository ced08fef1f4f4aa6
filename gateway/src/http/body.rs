//! Bodies. The one response body type: guests stream theirs through
//! wasi:http, the gateway's own answers (errors, 404s) are small in-memory
//! bodies of the same type, so every response path hands hyper the same
//! thing. And the request body as guests read it: capped at the handler's
//! body limit, counted as it streams.

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
/// `Content-Length` can be absent or lie). Past the cap the guest's next
/// read fails with `HTTP-request-body-size` and `tripped` fires, so the
/// request can be answered 413 if the guest has not answered yet.
pub struct CappedBody {
    inner: hyper::body::Incoming,
    remaining: u64,
    limit: u64,
    tripped: Option<tokio::sync::oneshot::Sender<()>>,
}

impl CappedBody {
    /// Caps `inner` at `limit`; `tripped` fires when a byte past it arrives.
    pub fn new(
        inner: hyper::body::Incoming,
        limit: u64,
        tripped: tokio::sync::oneshot::Sender<()>,
    ) -> Self {
        Self {
            inner,
            remaining: limit,
            limit,
            tripped: Some(tripped),
        }
    }
}

impl http_body::Body for CappedBody {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        use std::task::Poll;
        let too_large = wasmtime_wasi_http::Error::HttpRequestBodySize(Some(self.limit));
        if self.tripped.is_none() {
            return Poll::Ready(Some(Err(too_large)));
        }
        match std::pin::Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let size = frame.data_ref().map_or(0, |data| data.len() as u64);
                if size > self.remaining {
                    if let Some(tripped) = self.tripped.take() {
                        let _ = tripped.send(());
                    }
                    return Poll::Ready(Some(Err(too_large)));
                }
                self.remaining -= size;
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => Poll::Ready(Some(Err(error.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
