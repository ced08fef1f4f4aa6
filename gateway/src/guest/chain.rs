//! A route's HTTP middleware chain: each middleware is a wasi:http handler
//! that answers the request or passes it on by sending it to
//! `http://next/…`, which arrives here, in-process, at the next middleware
//! or at the route's handler; the response goes back the same way.
//!
//! Invariant: a passed-on request keeps the client's scheme and host (the
//! middleware chooses method, path, headers and body, never the site); each
//! link runs under its own handler's limits, permits and metrics; nothing
//! leaves the host and nothing needs an `outbound` rule.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use http_body::Frame;
use http_body_util::BodyExt as _;
use wasmtime_wasi_http::WasiBody;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;

use super::handler::Handler;
use super::outbound::NextHop;
use super::pubsub::Hub;
use crate::http::body::{ReadFailure, ResponseBody};
use crate::http::error::{Blame, GatewayError, rescue};

/// One request's way through a route's middleware to its handler.
#[derive(Clone)]
pub struct Chain {
    /// The route's middleware, built once per generation.
    middleware: Arc<[Arc<Handler>]>,
    /// The version of the route's handler this request was placed on.
    handler: Arc<Handler>,
    /// Which link serves next (an index into `middleware`; past it, the handler).
    at: usize,
    scheme: Scheme,
    /// The client's scheme and host, which every link sees.
    origin: Option<(http::uri::Scheme, http::uri::Authority)>,
    route: Arc<str>,
    hub: Arc<Hub>,
    body_timeout: Duration,
}

impl Chain {
    /// The chain for `request` on `route`: through `middleware`, to `handler`.
    pub fn new<B>(
        request: &Request<B>,
        middleware: Arc<[Arc<Handler>]>,
        handler: Arc<Handler>,
        scheme: Scheme,
        route: Arc<str>,
        hub: Arc<Hub>,
        body_timeout: Duration,
    ) -> Self {
        let authority = request.uri().authority().cloned().or_else(|| {
            request
                .headers()
                .get(http::header::HOST)?
                .to_str()
                .ok()?
                .parse()
                .ok()
        });
        let uri_scheme = match scheme {
            Scheme::Https => http::uri::Scheme::HTTPS,
            _ => http::uri::Scheme::HTTP,
        };
        let origin = authority.map(|authority| (uri_scheme, authority));
        Self {
            middleware,
            handler,
            at: 0,
            scheme,
            origin,
            route,
            hub,
            body_timeout,
        }
    }

    /// Serves `request` on the link at `self.at`, the rest of the chain
    /// behind it.
    pub async fn serve<B>(self, request: Request<B>) -> Result<Response<ResponseBody>, GatewayError>
    where
        B: http_body::Body<Data = bytes::Bytes> + Send + Sync + Unpin + 'static,
        B::Error: ReadFailure,
    {
        let Some(link) = self.middleware.get(self.at).map(Arc::clone) else {
            return self
                .handler
                .serve(
                    request,
                    self.scheme.clone(),
                    &self.route,
                    &self.hub,
                    self.body_timeout,
                    None,
                )
                .await;
        };
        let rest = Self {
            at: self.at + 1,
            ..self.clone()
        };
        link.serve(
            request,
            self.scheme,
            &self.route,
            &self.hub,
            self.body_timeout,
            Some(Arc::new(rest)),
        )
        .await
    }
}

impl NextHop for Chain {
    fn call(
        &self,
        request: Request<WasiBody>,
    ) -> Pin<Box<dyn Future<Output = Response<WasiBody>> + Send>> {
        let rest = self.clone();
        let request = restore_origin(request, self.origin.as_ref());
        Box::pin(async move {
            let route = Arc::clone(&rest.route);
            let response = match rest.serve(request.map(Exclusive::new)).await {
                Ok(response) => response,
                Err(error) => {
                    if error.blame() == Blame::Internal {
                        tracing::error!(route = &*route, "{error}");
                    }
                    rescue(&error)
                }
            };
            response.map(|body| body.boxed_unsync())
        })
    }
}

/// The request with the client's scheme and host in place of `next`.
fn restore_origin(
    mut request: Request<WasiBody>,
    origin: Option<&(http::uri::Scheme, http::uri::Authority)>,
) -> Request<WasiBody> {
    let mut parts = request.uri().clone().into_parts();
    match origin {
        Some((scheme, authority)) => {
            parts.scheme = Some(scheme.clone());
            parts.authority = Some(authority.clone());
            if let Ok(host) = http::HeaderValue::from_str(authority.as_str()) {
                request.headers_mut().insert(http::header::HOST, host);
            }
        }
        None => {
            parts.scheme = None;
            parts.authority = None;
        }
    }
    if let Ok(uri) = http::Uri::from_parts(parts) {
        *request.uri_mut() = uri;
    }
    request
}

/// A body the handler can hold across threads (`Sync`): wasi:http's own is
/// not, and only one task ever polls it.
struct Exclusive(std::sync::Mutex<WasiBody>);

impl Exclusive {
    fn new(body: WasiBody) -> Self {
        Self(std::sync::Mutex::new(body))
    }

    fn inner(self: Pin<&mut Self>) -> Pin<&mut WasiBody> {
        let body = self
            .get_mut()
            .0
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Pin::new(body)
    }
}

impl http_body::Body for Exclusive {
    type Data = bytes::Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        self.inner().poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.0
            .lock()
            .map(|body| body.is_end_stream())
            .unwrap_or(false)
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.0
            .lock()
            .map(|body| body.size_hint())
            .unwrap_or_default()
    }
}
