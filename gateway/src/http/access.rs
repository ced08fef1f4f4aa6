//! The access log and the per-request metrics that need the whole response:
//! a response body wrapper that counts the bytes sent and, when the body
//! ends (or the client goes away), writes one log line and ends the request's
//! time in flight.
//!
//! Invariant: exactly one line per request that reached the service, written
//! when its response is over, whatever way it ended; lines go to the tracing
//! target `wasmgate::access`, as text or JSON by `[gateway] access_log`.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt as _;

use crate::config::AccessLog;
use crate::control::metrics::Metrics;
use crate::http::body::ResponseBody;

/// What the access line says about one request, gathered on its way.
pub struct Access {
    /// When the request arrived.
    pub started: Instant,
    /// The client's address.
    pub client: SocketAddr,
    /// The request method.
    pub method: http::Method,
    /// The `Host` or `:authority`, if any.
    pub host: Option<String>,
    /// The path, without the query (which may carry secrets).
    pub path: String,
    /// The response status.
    pub status: u16,
    /// Route id and handler name, `-` when none matched.
    pub route: Arc<str>,
    /// The handler serving it.
    pub handler: Arc<str>,
    /// The snapshot generation that served it.
    pub generation: u64,
}

/// Wraps `body` so the request is logged and counted when it ends.
pub fn log_on_end(
    body: ResponseBody,
    access: Access,
    format: AccessLog,
    metrics: Arc<Metrics>,
) -> ResponseBody {
    Logged {
        inner: body,
        bytes: 0,
        entry: Some((access, format, metrics)),
    }
    .boxed_unsync()
}

struct Logged {
    inner: ResponseBody,
    bytes: u64,
    entry: Option<(Access, AccessLog, Arc<Metrics>)>,
}

impl Body for Logged {
    type Data = Bytes;
    type Error = <ResponseBody as Body>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.bytes += data.len() as u64;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        let Some((access, format, metrics)) = self.entry.take() else {
            return;
        };
        metrics.in_flight.dec();
        write(&access, self.bytes, format);
    }
}

fn write(access: &Access, bytes: u64, format: AccessLog) {
    let duration_ms = access.started.elapsed().as_secs_f64() * 1000.0;
    let host = access.host.as_deref().unwrap_or("-");
    match format {
        AccessLog::Off => {}
        AccessLog::Text => tracing::info!(
            target: "wasmgate::access",
            "{} \"{} {}\" host={} status={} bytes={} ms={:.3} route={} handler={} generation={}",
            access.client,
            access.method,
            access.path,
            host,
            access.status,
            bytes,
            duration_ms,
            access.route,
            access.handler,
            access.generation,
        ),
        AccessLog::Json => {
            let time = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
            let line = serde_json::json!({
                "time": time,
                "client": access.client.to_string(),
                "method": access.method.as_str(),
                "host": host,
                "path": access.path,
                "status": access.status,
                "bytes": bytes,
                "duration_ms": duration_ms,
                "route": &*access.route,
                "handler": &*access.handler,
                "generation": access.generation,
            });
            tracing::info!(target: "wasmgate::access", "{line}");
        }
    }
}
