//! One client connection: HTTP/1.1 or HTTP/2 (h2 by ALPN or h2c by prior
//! knowledge), served until the client leaves or the gateway drains.
//!
//! Invariant: once draining starts, the connection takes no new request
//! (HTTP/1 closes after the current response, HTTP/2 sends GOAWAY) but every
//! request already in flight completes, and so does the first request of a
//! connection accepted just before: its client has not had the chance to see
//! the gateway go (during a handover it may be the new process's socket
//! queue that took it), so it is not closed unanswered.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::{self, Builder};
use tokio::io::{AsyncRead, AsyncWrite};

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
    /// Set when the first request arrives (see [`serve`]).
    pub first_request: FirstRequest,
}

impl ConnectionInfo {
    /// A connection that has not brought a request yet.
    pub fn new(scheme: Scheme, local: SocketAddr, listener: usize, peer: SocketAddr) -> Self {
        Self {
            scheme,
            local,
            listener,
            peer,
            first_request: FirstRequest::default(),
        }
    }
}

/// Whether a connection has brought its first request yet.
#[derive(Default)]
pub struct FirstRequest {
    arrived: std::sync::atomic::AtomicBool,
    signal: tokio::sync::Notify,
}

impl FirstRequest {
    fn arrive(&self) {
        use std::sync::atomic::Ordering;
        if !self.arrived.load(Ordering::Relaxed) {
            self.arrived.store(true, Ordering::Release);
            self.signal.notify_waiters();
        }
    }

    /// Resolves once a request has arrived on the connection.
    pub async fn wait(&self) {
        let notified = self.signal.notified();
        if self.arrived.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        notified.await;
    }
}

/// Serves requests on `io` with `service` until the connection closes or
/// the drain ends it (see the module's invariant).
pub async fn serve<IO, S, F>(
    http: &Builder<TokioExecutor>,
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
    let service = {
        let info = Arc::clone(&info);
        service_fn(move |request| {
            info.first_request.arrive();
            service(request)
        })
    };
    let connection = http.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = drain.signaled() => {
            // hyper closes an HTTP/1 connection with no request in progress
            // at once, even if the request's bytes are already on their way.
            let first = tokio::select! {
                result = connection.as_mut() => Some(result),
                () = info.first_request.wait() => None,
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
        .max_header_list_size(u32::try_from(limits.max_header_size).unwrap_or(u32::MAX));
    http
}
