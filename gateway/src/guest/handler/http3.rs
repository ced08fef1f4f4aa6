//! One request on a WASI 0.3 component (the `wasi:http/service` world): an
//! instance from the handler's pool, the request handed over as a
//! `wasi:http/types.request`,
//! the response head passed back as soon as the guest returns it, while the
//! store's event loop keeps running (it streams the body both ways, and
//! runs whatever the guest does after responding, as 0.3 allows) until the
//! guest has no task left.
//!
//! Invariant: the whole run (the handler, both bodies, work after the
//! response) is one `run_concurrent` under the request's deadline, on the
//! request's own task: whatever the guest does, the run ends by then, and
//! its permit and outcome are accounted exactly as for 0.2. With `reuse`,
//! only a run that ended well (no task left, no trap, in time) gives its
//! instance back, so no request's work is still running when the next one
//! starts.

use std::sync::Arc;
use std::time::Instant;
use tracing::Instrument as _;

use http::{Request, Response};
use tokio::sync::oneshot;
use tokio_util::task::AbortOnDropHandle;
use wasmtime::Store;
use wasmtime::component::Accessor;
use wasmtime_wasi_http::WasiHttpView as _;
use wasmtime_wasi_http::p3::bindings::Service;

use super::{Guest, HeadReceiver, Scheme, Started};
use crate::guest::host::{Host, refuel};
use crate::guest::pool::{Instance, Ready, Returner};
use crate::http::body::{CappedBody, ReadFailure, ResponseBody};

/// Starts `request` on `instance`, on a task of its own, with `timeout`
/// from now; returns where the response head arrives, and the task.
pub(super) fn start<B>(
    instance: (Store<Host>, Service),
    returner: Option<Returner>,
    request: Request<CappedBody<B>>,
    scheme: &Scheme,
    timeout: std::time::Duration,
    mut guest: Guest,
) -> Started
where
    B: http_body::Body<Data = bytes::Bytes> + Send + Sync + Unpin + 'static,
    B::Error: ReadFailure,
{
    let (mut store, service) = instance;
    let deadline = Instant::now() + timeout;
    store.data_mut().deadline = deadline;
    refuel(&mut store);
    store.data_mut().attachment.hub = Some(Arc::clone(&guest.hub));
    store.data_mut().set_next(guest.next.take());
    let request = absolute(request, scheme);
    let (sender, receiver) = oneshot::channel::<Result<Response<ResponseBody>, String>>();
    let task = AbortOnDropHandle::new(tokio::spawn(
        async move {
            let serve = store.run_concurrent(async |accessor| -> wasmtime::Result<()> {
                let answer = respond(accessor, &service, request).await?;
                let _ = sender.send(answer);
                // The body is written, and anything the guest does after
                // answering runs, from this event loop: keep it turning until
                // the guest has no task left (the deadline bounds it).
                std::future::poll_fn(|cx| accessor.poll_no_interesting_tasks(cx)).await;
                Ok(())
            });
            let result = tokio::time::timeout_at(deadline.into(), serve)
                .await
                .map(|ran| ran.and_then(|inner| inner));
            let ready = Ready {
                store,
                guest: Instance::P3(service),
            };
            guest.end(result, ready, returner)
        }
        .in_current_span(),
    ));
    (HeadReceiver::P3(receiver), task)
}

/// The transfer of a request's body into the guest, which the response's
/// conversion takes over.
type RequestIo = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
>;

/// The guest's answer to `request`, from inside its store's event loop:
/// the response (its body streams from the store as it is read) or the
/// guest's error code, as text. Fresh and shared 0.3 instances both ask
/// through here.
pub(super) async fn respond<B>(
    accessor: &Accessor<Host>,
    service: &Service,
    request: Request<B>,
) -> wasmtime::Result<Result<Response<ResponseBody>, String>>
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: ReadFailure,
{
    let (request, request_io) = accessor.with(|mut store| {
        let hooks = store.data_mut().http().hooks;
        let (request, io) = wasmtime_wasi_http::p3::Request::from_http(hooks, request);
        // Boxed: its type names the borrow of the store, its value does
        // not outlive it.
        let io: RequestIo = Box::pin(io);
        (request, io)
    });
    Ok(match service.handle(accessor, request).await? {
        Ok(response) => Ok(accessor.with(|mut store| response.into_http(&mut store, request_io))?),
        Err(code) => Err(format!("{code:?}")),
    })
}

/// 0.3 takes the scheme and authority from the request's URI, never from a
/// `Host` header (a forbidden header it strips): an HTTP/1.1 request's
/// origin-form URI gets both (the host header always exists by now).
pub(super) fn absolute<B>(request: Request<B>, scheme: &Scheme) -> Request<B> {
    if request.uri().scheme().is_some() {
        return request;
    }
    let (mut parts, body) = request.into_parts();
    let authority = parts
        .headers
        .get(http::header::HOST)
        .and_then(|value| value.to_str().ok())
        .and_then(|host| host.parse::<http::uri::Authority>().ok());
    let scheme = match scheme {
        Scheme::Https => http::uri::Scheme::HTTPS,
        _ => http::uri::Scheme::HTTP,
    };
    let mut uri = std::mem::take(&mut parts.uri).into_parts();
    uri.scheme = Some(scheme);
    uri.authority = authority;
    if uri.path_and_query.is_none() {
        uri.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    parts.uri = http::Uri::from_parts(uri).unwrap_or_default();
    Request::from_parts(parts, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_origin_form_uri_gets_the_scheme_and_the_host() {
        let request = Request::get("/a?b=1")
            .header("host", "example.com:8080")
            .body(())
            .expect("valid");
        let absolute = absolute(request, &Scheme::Https);
        assert_eq!(absolute.uri(), "https://example.com:8080/a?b=1");
        let h2 = Request::get("http://other.example/x")
            .body(())
            .expect("valid");
        assert_eq!(absolute_uri(h2), "http://other.example/x");
    }

    fn absolute_uri(request: Request<()>) -> String {
        absolute(request, &Scheme::Http).uri().to_string()
    }
}
