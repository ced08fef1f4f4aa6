//! One client connection: HTTP/1.1 or HTTP/2 (h2 by ALPN or h2c by prior
//! knowledge), served until the client leaves or the gateway drains.
//!
//! Invariant: a connection holds its listener's slot ([`Slot`]) for as
//! long as anything serves it, an upgraded WebSocket included, and never
//! for free: its first bytes must come within the header timeout (protocol
//! detection, the first request after a TLS handshake), a client that reads
//! nothing for the write timeout is dropped, and with no request in progress
//! it is closed after the idle timeout.
//!
//! Once draining starts, the connection takes no new request
//! (HTTP/1 closes after the current response, HTTP/2 sends GOAWAY) but every
//! request already in flight completes, and so does the first request of a
//! connection accepted just before: its client has not had the chance to see
//! the gateway go (during a handover it may be the new process's socket
//! queue that took it), so it is not closed unanswered.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::{self, Builder};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Sleep;

use crate::config::ListenerLimits;
use crate::control::drain::Drain;
use crate::guest::Scheme;
use crate::http::body::ResponseBody;

/// How long a draining gateway waits for the first request of a connection
/// that has not sent one.
const FIRST_REQUEST_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// What a request's connection tells about it.
pub struct ConnectionInfo {
    /// `http` or `https`, as the guest will see it.
    pub scheme: Scheme,
    /// The local address the client connected to.
    pub local: SocketAddr,
    /// The listener's position in the config.
    pub listener: usize,
    /// The client's address.
    pub peer: SocketAddr,
    /// Requests (and upgraded streams) in progress.
    active: AtomicUsize,
    /// Requests begun so far: unchanged over a look at the connection, with
    /// none in progress, means it was idle all that time; 0 means the
    /// connection has not brought its first request yet (see [`serve`]).
    begun: AtomicUsize,
    /// Woken when the first request begins.
    first_request: tokio::sync::Notify,
    /// The listener's slot, given back when the last holder of this goes.
    _slot: Slot,
}

impl ConnectionInfo {
    /// A connection that has not brought a request yet, holding `slot`.
    pub fn new(
        scheme: Scheme,
        local: SocketAddr,
        listener: usize,
        peer: SocketAddr,
        slot: Slot,
    ) -> Self {
        Self {
            scheme,
            local,
            listener,
            peer,
            active: AtomicUsize::new(0),
            begun: AtomicUsize::new(0),
            first_request: tokio::sync::Notify::new(),
            _slot: slot,
        }
    }

    /// Counts a request (or a stream that outlives its request) as in
    /// progress until the guard drops; the guard keeps the connection's
    /// slot taken.
    pub fn begin(self: &Arc<Self>) -> Active {
        self.active.fetch_add(1, Ordering::Relaxed);
        if self.begun.fetch_add(1, Ordering::AcqRel) == 0 {
            self.first_request.notify_waiters();
        }
        Active(Arc::clone(self))
    }

    /// Resolves once a request has begun on the connection.
    async fn first_request(&self) {
        let notified = self.first_request.notified();
        if self.begun.load(Ordering::Acquire) > 0 {
            return;
        }
        notified.await;
    }

    /// Resolves once the connection has had no request in progress and none
    /// begun for a whole `idle` (so between `idle` and twice that after its
    /// last one). It looks once per `idle`: nothing is done per request.
    async fn idle_for(&self, idle: Duration) {
        let mut seen = self.begun.load(Ordering::Relaxed);
        loop {
            tokio::time::sleep(idle).await;
            let begun = self.begun.load(Ordering::Relaxed);
            if begun == seen && self.active.load(Ordering::Relaxed) == 0 {
                return;
            }
            seen = begun;
        }
    }
}

/// A request or stream in progress on a connection (see [`ConnectionInfo::begin`]).
pub struct Active(Arc<ConnectionInfo>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A connection's place under its listener's `max_connections`, and its
/// count in `wasmgate_connections_open`.
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    open: prometheus::IntGauge,
}

impl Slot {
    /// Takes `permit` and counts the connection in `open` until dropped.
    pub fn new(permit: OwnedSemaphorePermit, open: prometheus::IntGauge) -> Self {
        open.inc();
        Self {
            _permit: permit,
            open,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.open.dec();
    }
}

/// Serves requests on `io` with `service` until the connection closes or
/// the drain ends it (see the module's invariant).
pub async fn serve<IO, S, F>(
    http: &Builder<TokioExecutor>,
    limits: &ListenerLimits,
    drain: &Drain,
    info: Arc<ConnectionInfo>,
    io: IO,
    service: S,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = Result<Response<ResponseBody>, Infallible>> + Send + 'static,
{
    let peer = info.peer;
    let service = service_fn(service);
    let io = Deadlines::new(io, limits.header_timeout, limits.write_timeout);
    let connection = http.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = info.idle_for(limits.idle_timeout) => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
        () = drain.signaled() => {
            // hyper closes an HTTP/1 connection with no request in progress
            // at once, even if the request's bytes are already on their way.
            let first = tokio::select! {
                result = connection.as_mut() => Some(result),
                () = info.first_request() => None,
                () = tokio::time::sleep(FIRST_REQUEST_WAIT) => None,
            };
            match first {
                Some(result) => result,
                None => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            }
        }
    };
    if let Err(error) = result {
        // Resets, early closes and malformed requests are the client's business.
        tracing::debug!(%peer, "connection ended with an error: {error}");
    }
}

/// The HTTP/1.1 + HTTP/2 connection builder of a listener, under its limits.
pub fn http_builder(limits: &ListenerLimits) -> auto::Builder<TokioExecutor> {
    let mut http = auto::Builder::new(TokioExecutor::new());
    http.http1()
        .timer(TokioTimer::new())
        // Also how long an idle keep-alive connection waits for its next request.
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.max_header_size.max(8192))
        .max_headers(limits.max_headers)
        .keep_alive(true);
    // RFC 8441, so browsers can open WebSockets over an HTTP/2 connection.
    http.http2()
        .timer(TokioTimer::new())
        .enable_connect_protocol()
        .max_concurrent_streams(limits.h2_max_streams)
        .max_header_list_size(u32::try_from(limits.max_header_size).unwrap_or(u32::MAX))
        .keep_alive_interval(limits.h2_keep_alive)
        .keep_alive_timeout(limits.h2_keep_alive);
    http
}

/// A connection's IO with two deadlines: reads fail once `first_byte`
/// passes before the first byte arrived (protocol detection and a TLS
/// connection's first request get no more time than a request's headers
/// would), and writes fail once the client has taken nothing for
/// `write_stall` (a reader that stops reading gives its slot back).
struct Deadlines<IO> {
    io: IO,
    first_byte: Option<Pin<Box<Sleep>>>,
    write_stall: Duration,
    /// Running while a write waits for the client to read.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<IO> Deadlines<IO> {
    fn new(io: IO, first_byte: Duration, write_stall: Duration) -> Self {
        Self {
            io,
            first_byte: Some(Box::pin(tokio::time::sleep(first_byte))),
            write_stall,
            stalled: None,
        }
    }

    /// `polled` for a write: clears the stall clock when the write got
    /// anywhere, starts it when the write waits, fails when it ran out.
    fn watch<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if polled.is_ready() {
            self.stalled = None;
            return polled;
        }
        let write_stall = self.write_stall;
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(write_stall)));
        match stalled.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client read nothing within the write timeout",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Deadlines<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.io).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    self.first_byte = None;
                }
                Poll::Ready(result)
            }
            Poll::Pending => match self
                .first_byte
                .as_mut()
                .map(|sleep| sleep.as_mut().poll(cx))
            {
                Some(Poll::Ready(())) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no request within the header timeout",
                ))),
                _ => Poll::Pending,
            },
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Deadlines<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        self.watch(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.watch(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.io).poll_flush(cx);
        self.watch(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
