//! The access log and the per-request metrics that need the whole response:
//! a response body wrapper that counts the bytes sent and, when the body
//! ends (or the client goes away), writes one log line and ends the request's
//! time in flight.
//!
//! Invariant: exactly one line per request that reached the service, written
//! when its response is over, whatever way it ended, and saying which:
//! `complete`, `aborted` (the body ended in an error: the guest failed after
//! the head went out) or `cancelled` (the client went away first, before or
//! during the response; status 499 if before). Lines go to the tracing
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
use crate::http::conn::Active;

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
    /// The request's URI, logged by its path only (the query may carry
    /// secrets); kept whole because cloning it shares its bytes.
    pub uri: http::Uri,
    /// The response status.
    pub status: u16,
    /// Route id and handler name, `-` when none matched.
    pub route: Arc<str>,
    /// The handler serving it.
    pub handler: Arc<str>,
    /// The snapshot generation that served it.
    pub generation: u64,
    /// Its request id (also on the response and in its tracing span).
    pub request_id: http::HeaderValue,
}

/// The status logged for a request whose client left before its response
/// head (nginx's "client closed request").
const CLIENT_CLOSED: u16 = 499;

/// How a response ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    Complete,
    Aborted,
    Cancelled,
}

impl Ending {
    fn as_str(self) -> &'static str {
        match self {
            Self::Complete => "complete",
            Self::Aborted => "aborted",
            Self::Cancelled => "cancelled",
        }
    }
}

/// A request in flight whose response head is not out yet. Dropped before
/// [`Pending::respond`] (the client went away and hyper dropped the
/// request), it still leaves the in-flight count and writes its line.
pub struct Pending {
    entry: Option<(Access, AccessLog, Arc<Metrics>)>,
    active: Option<Active>,
}

impl Pending {
    /// Counts `access`'s request as in flight, and as `active` on its
    /// connection, until its response ends.
    pub fn start(access: Access, format: AccessLog, metrics: Arc<Metrics>, active: Active) -> Self {
        metrics.in_flight.inc();
        Self {
            entry: Some((access, format, metrics)),
            active: Some(active),
        }
    }

    /// The request's host, as it will be logged.
    pub fn host(&self) -> Option<&str> {
        self.entry
            .as_ref()
            .and_then(|(access, ..)| access.host.as_deref())
    }

    /// The request's response is ready: `body` is wrapped so the request is
    /// logged and counted when it ends.
    pub fn respond(
        mut self,
        status: u16,
        route: Arc<str>,
        handler: Arc<str>,
        body: ResponseBody,
    ) -> ResponseBody {
        let Some((mut access, format, metrics)) = self.entry.take() else {
            return body;
        };
        access.status = status;
        access.route = route;
        access.handler = handler;
        Logged {
            inner: body,
            bytes: 0,
            ended: None,
            entry: Some((access, format, metrics)),
            _active: self.active.take(),
        }
        .boxed_unsync()
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some((mut access, format, metrics)) = self.entry.take() {
            access.status = CLIENT_CLOSED;
            finish(&access, 0, Ending::Cancelled, format, &metrics);
        }
    }
}

struct Logged {
    inner: ResponseBody,
    bytes: u64,
    /// How the body ended, once it has.
    ended: Option<Ending>,
    entry: Option<(Access, AccessLog, Arc<Metrics>)>,
    /// The request counts as in progress on its connection until this drops.
    _active: Option<Active>,
}

impl Body for Logged {
    type Data = Bytes;
    type Error = <ResponseBody as Body>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.bytes += data.len() as u64;
                }
            }
            Poll::Ready(Some(Err(_))) => self.ended = Some(Ending::Aborted),
            Poll::Ready(None) => self.ended = Some(Ending::Complete),
            Poll::Pending => {}
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
        // hyper stops polling a body that says it is at its end (a full
        // body after its data) and never polls one a HEAD, 204 or 304 has
        // no room for.
        let bodiless = access.method == http::Method::HEAD || matches!(access.status, 204 | 304);
        let ending = self
            .ended
            .unwrap_or(if bodiless || self.inner.is_end_stream() {
                Ending::Complete
            } else {
                Ending::Cancelled
            });
        finish(&access, self.bytes, ending, format, &metrics);
    }
}

/// Ends a request's time in flight, counts how it ended and logs it.
fn finish(access: &Access, bytes: u64, ending: Ending, format: AccessLog, metrics: &Metrics) {
    metrics.in_flight.dec();
    // Complete ones are counted by status in requests_total already; a
    // label lookup per request costs what a counter of them would tell.
    if ending != Ending::Complete {
        metrics
            .responses_cut_short
            .with_label_values(&[&*access.handler, ending.as_str()])
            .inc();
    }
    write(access, bytes, ending, format);
}

fn write(access: &Access, bytes: u64, ending: Ending, format: AccessLog) {
    let duration_ms = access.started.elapsed().as_secs_f64() * 1000.0;
    let host = access.host.as_deref().unwrap_or("-");
    match format {
        AccessLog::Off => {}
        AccessLog::Text => tracing::info!(
            target: "wasmgate::access",
            "{} \"{} {}\" host={} status={} bytes={} ms={:.3} route={} handler={} generation={} outcome={} id={}",
            access.client,
            access.method,
            access.uri.path(),
            host,
            access.status,
            bytes,
            duration_ms,
            access.route,
            access.handler,
            access.generation,
            ending.as_str(),
            access.request_id.to_str().unwrap_or("-"),
        ),
        AccessLog::Json => {
            let time = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
            let line = serde_json::json!({
                "time": time,
                "client": access.client.to_string(),
                "method": access.method.as_str(),
                "host": host,
                "path": access.uri.path(),
                "status": access.status,
                "bytes": bytes,
                "duration_ms": duration_ms,
                "route": &*access.route,
                "handler": &*access.handler,
                "generation": access.generation,
                "outcome": ending.as_str(),
                "request_id": access.request_id.to_str().unwrap_or("-"),
            });
            tracing::info!(target: "wasmgate::access", "{line}");
        }
    }
}
