//! One client connection: HTTP/1.1 or HTTP/2 (h2 by ALPN or h2c by prior
//! knowledge), served until the client leaves or the gateway drains.
//!
//! Invariant: once draining starts, the connection takes no new request
//! (HTTP/1 closes after the current response, HTTP/2 sends GOAWAY) but every
//! request already in flight completes, and so does the first request of a
//! connection accepted just before: its client has not had the chance to see
//! the gateway go (during a handover it may be the new process's socket
//! queue that took it), so it is not closed unanswered.

use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::app::App;
use crate::http::service::{self, ConnectionInfo};

/// How long a draining gateway waits for the first request of a connection
/// that has not sent one.
const FIRST_REQUEST_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Serves requests on `io` until it closes.
pub async fn serve<IO>(app: Arc<App>, http: &Builder<TokioExecutor>, info: ConnectionInfo, io: IO)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let info = Arc::new(info);
    let peer = info.peer;
    let service = {
        let app = Arc::clone(&app);
        let info = Arc::clone(&info);
        service_fn(move |request| service::handle(Arc::clone(&app), Arc::clone(&info), request))
    };
    let connection = http.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = app.drain.signaled() => {
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
