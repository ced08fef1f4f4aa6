//! What a route gets from the gateway around whatever serves it: CORS
//! (tower-http's `Cors`, answering preflights itself), response compression
//! (tower-http's `Compression`: gzip, br or zstd as `Accept-Encoding`
//! prefers), request decompression (tower-http's `RequestDecompression`:
//! gzip, deflate, br or zstd, any other encoding refused with 415) and
//! response header rules. Built once per generation from the route's
//! `cors`, `compress`, `decompress` and `headers`; a route with none has no
//! layers and pays nothing.
//!
//! Invariant: a preflight (`OPTIONS` with `Access-Control-Request-Method`)
//! is answered here and never reaches a guest; the header rules apply to
//! every response of the route, the gateway's own included; an event
//! stream, a response that already has a `Content-Encoding`, one below the
//! minimum size or of an unlisted type is never compressed, and one
//! compressed here keeps only a weak `ETag`. A decoded request body is
//! capped where every body is (its handler's `body` limit, a channel's
//! message size), counting decoded bytes: a bomb is cut off at the cap.

use std::convert::Infallible;
use std::future::Future;
use std::task::{Context, Poll};

use http::{Request, Response};
use hyper::body::Incoming;
use tower_http::compression::CompressionLayer;
use tower_http::compression::predicate::{Predicate, SizeAbove};
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer, ExposeHeaders};
use tower_http::decompression::RequestDecompression;
use tower_layer::Layer as _;
use tower_service::Service;

use crate::config::{Compress, HeaderRule, RouteEdge};
use crate::http::body::{RequestBody, ResponseBody};

/// A route's layers.
#[derive(Debug, Clone)]
pub struct RouteLayers {
    cors: Option<CorsLayer>,
    compression: Option<(CompressionLayer<CompressWhen>, CompressWhen)>,
    /// What they were built from (two routes' layers are equal when it is).
    edge: RouteEdge,
}

impl PartialEq for RouteLayers {
    fn eq(&self, other: &Self) -> bool {
        self.edge == other.edge
    }
}

impl Eq for RouteLayers {}

impl RouteLayers {
    /// The layers `edge` asks for; `None` when it asks for none.
    pub fn build(edge: &RouteEdge) -> Option<Self> {
        if edge.cors.is_none()
            && edge.headers.is_empty()
            && edge.compress.is_none()
            && !edge.decompress
        {
            return None;
        }
        let compression = edge.compress.as_ref().map(|compress| {
            let when = CompressWhen(std::sync::Arc::new(compress.clone()));
            (CompressionLayer::new().compress_when(when.clone()), when)
        });
        let cors = edge.cors.as_ref().map(|policy| {
            let mut layer = CorsLayer::new()
                .allow_methods(policy.methods.clone())
                .allow_credentials(policy.credentials)
                .expose_headers(ExposeHeaders::list(policy.expose.clone()));
            layer = match &policy.origins {
                Some(origins) => layer.allow_origin(AllowOrigin::list(origins.clone())),
                None => layer.allow_origin(AllowOrigin::any()),
            };
            layer = match &policy.headers {
                Some(headers) => layer.allow_headers(AllowHeaders::list(headers.clone())),
                None => layer.allow_headers(AllowHeaders::any()),
            };
            if let Some(max_age) = policy.max_age {
                layer = layer.max_age(max_age);
            }
            layer
        });
        Some(Self {
            cors,
            compression,
            edge: edge.clone(),
        })
    }

    /// Serves `request` through the layers, `rest` inside them. `rest`'s
    /// future (whatever serves the route: large) runs here, inline in this
    /// one, as on a route without layers: the layers' services hand the
    /// request over in `call` and take the answer back when polled, so their
    /// futures hold only a reference to the [`Handover`] between them, and
    /// nothing is boxed or moved per request.
    pub async fn serve<F>(
        &self,
        request: Request<Incoming>,
        rest: impl FnOnce(Request<RequestBody>) -> F + Send,
    ) -> Response<ResponseBody>
    where
        F: Future<Output = Response<ResponseBody>> + Send,
    {
        // What compression negotiates on, kept before the request goes in.
        let accepted: Vec<http::HeaderValue> = match &self.compression {
            Some(_) => request
                .headers()
                .get_all(http::header::ACCEPT_ENCODING)
                .iter()
                .cloned()
                .collect(),
            None => Vec::new(),
        };
        // A body without a `Content-Encoding` is decoded as itself: it skips
        // the decoder, whose body would hide its length and its end.
        let decompress = self.edge.decompress
            && request
                .headers()
                .contains_key(http::header::CONTENT_ENCODING);
        let handover = Handover::default();
        let inner = Inner(&handover);
        // Decompression innermost, so a preflight never meets it and its 415
        // gets the route's CORS and header rules like any answer.
        let mut response = match (&self.cors, decompress) {
            (None, false) => rest(request.map(RequestBody::Client)).await,
            (None, true) => {
                unbox(through(RequestDecompression::new(inner), request, &handover, rest).await)
            }
            (Some(cors), false) => through(cors.layer(inner), request, &handover, rest).await,
            (Some(cors), true) => unbox(
                through(
                    cors.layer(RequestDecompression::new(inner)),
                    request,
                    &handover,
                    rest,
                )
                .await,
            ),
        };
        // Compression is asked only about a response it would compress (by
        // the route's predicate, for a client that accepts an encoding, not
        // already encoded): the others, most of them small, go on as they
        // are, without tower-http's body wrapper (5.8 KB) around them.
        if let Some((compression, when)) = &self.compression
            && !accepted.is_empty()
            && when.should_compress(&response)
            && !response
                .headers()
                .contains_key(http::header::CONTENT_ENCODING)
        {
            let mut asking = Request::new(());
            for value in accepted {
                asking
                    .headers_mut()
                    .append(http::header::ACCEPT_ENCODING, value);
            }
            response = unbox(call(compression.layer(Ready(Some(response))), asking).await);
            // An ETag names one representation: a body encoded here keeps
            // only a weak one (tower-http compares If-None-Match weakly, so
            // 304s still work).
            if response
                .headers()
                .contains_key(http::header::CONTENT_ENCODING)
            {
                weaken_etag(response.headers_mut());
            }
        }
        let headers = response.headers_mut();
        for rule in &self.edge.headers {
            match rule {
                HeaderRule::Set(name, value) => {
                    headers.insert(name.clone(), value.clone());
                }
                HeaderRule::Append(name, value) => {
                    headers.append(name.clone(), value.clone());
                }
                HeaderRule::Remove(name) => {
                    headers.remove(name);
                }
            }
        }
        response
    }
}

/// Makes a strong `ETag` weak (`"x"` → `W/"x"`).
fn weaken_etag(headers: &mut http::HeaderMap) {
    let Some(etag) = headers.get(http::header::ETAG) else {
        return;
    };
    if etag.as_bytes().starts_with(b"\"") {
        let mut weak = b"W/".to_vec();
        weak.extend_from_slice(etag.as_bytes());
        if let Ok(weak) = http::HeaderValue::from_bytes(&weak) {
            headers.insert(http::header::ETAG, weak);
        }
    }
}

/// A response from a tower-http layer (compressed, or the 415 of an
/// encoding it cannot decode) with the one body type every response has.
fn unbox<B>(response: Response<B>) -> Response<ResponseBody>
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: std::fmt::Display,
{
    response.map(crate::http::body::boxed)
}

/// `compress`: big enough, a listed type, never an event stream (tower-http
/// itself never compresses what already has a `Content-Encoding`).
#[derive(Debug, Clone)]
struct CompressWhen(std::sync::Arc<Compress>);

impl Predicate for CompressWhen {
    fn should_compress<B>(&self, response: &http::Response<B>) -> bool
    where
        B: http_body::Body,
    {
        if !SizeAbove::new(self.0.min_size).should_compress(response) {
            return false;
        }
        let content_type = response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("");
        let essence = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if essence == "text/event-stream" {
            return false;
        }
        let kind = essence.split('/').next().unwrap_or("");
        self.0.types.iter().any(|ty| match ty.strip_suffix("/*") {
            Some(listed) => listed == kind,
            None => *ty == essence,
        })
    }
}

/// Drives a service that is always ready and never fails.
async fn call<S, R, B>(mut service: S, request: Request<R>) -> Response<B>
where
    S: Service<Request<R>, Response = Response<B>, Error = Infallible>,
{
    ready(&mut service).await;
    infallible(service.call(request).await)
}

/// Waits until `service` (one that never fails) is ready.
async fn ready<S, R>(service: &mut S)
where
    S: Service<R, Error = Infallible>,
{
    infallible(std::future::poll_fn(|cx| service.poll_ready(cx)).await);
}

/// What a service that never fails gave.
fn infallible<T>(result: Result<T, Infallible>) -> T {
    match result {
        Ok(value) => value,
        Err(never) => match never {},
    }
}

/// Sends `request` into `layers`, whose innermost service is an [`Inner`]
/// on `handover`; serves what comes out of them with `rest`, here, and
/// hands its answer back for the layers to finish. A request the layers
/// answer themselves (a preflight, an encoding refused) never comes out.
async fn through<S, B, F>(
    mut layers: S,
    request: Request<Incoming>,
    handover: &Handover,
    rest: impl FnOnce(Request<RequestBody>) -> F,
) -> Response<B>
where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>,
    F: Future<Output = Response<ResponseBody>>,
{
    ready(&mut layers).await;
    let answering = layers.call(request);
    if let Some(request) = handover.request.take() {
        handover.response.put(rest(request).await);
    }
    infallible(answering.await)
}

/// Where the request leaves the layers and its answer comes back in.
/// tower-http's `Cors` and `RequestDecompression` call their inner service
/// within their own `call`, so the request is here as soon as the layers'
/// `call` returns; they poll the inner future only when polled themselves,
/// which [`through`] does once the answer is here.
#[derive(Default)]
struct Handover {
    request: Slot<Request<RequestBody>>,
    response: Slot<Response<ResponseBody>>,
}

/// One value passed between [`through`] and the layers' innermost service
/// (a lock, never contended, because the request's future must be `Send`).
struct Slot<T>(std::sync::Mutex<Option<T>>);

impl<T> Default for Slot<T> {
    fn default() -> Self {
        Self(std::sync::Mutex::new(None))
    }
}

impl<T> Slot<T> {
    fn put(&self, value: T) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(value);
    }

    fn take(&self) -> Option<T> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }
}

/// The layers' innermost service: passes the request (with any body that
/// converts to a [`RequestBody`]) to the [`Handover`], and answers with what
/// comes back there.
struct Inner<'a>(&'a Handover);

impl<'a, C> Service<Request<C>> for Inner<'a>
where
    C: Into<RequestBody>,
{
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = Answer<'a>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<C>) -> Answer<'a> {
        self.0.request.put(request.map(Into::into));
        Answer(self.0)
    }
}

/// The answer [`through`] put in the [`Handover`].
struct Answer<'a>(&'a Handover);

impl Future for Answer<'_> {
    type Output = Result<Response<ResponseBody>, Infallible>;

    fn poll(self: std::pin::Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Only a layer that polled its inner future before its own was
        // polled could find nothing here; none of tower-http's does.
        Poll::Ready(Ok(self.0.response.take().unwrap_or_else(|| {
            let error = crate::http::error::GatewayError::Internal(
                "a route's layers asked for its answer before passing its request on".into(),
            );
            tracing::error!("{error}");
            crate::http::error::rescue(&error)
        })))
    }
}

/// A response already made, as the service compression wraps.
struct Ready(Option<Response<ResponseBody>>);

impl Service<Request<()>> for Ready {
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Response<ResponseBody>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _request: Request<()>) -> Self::Future {
        std::future::ready(Ok(self.0.take().unwrap_or_else(|| {
            crate::http::error::rescue(&crate::http::error::GatewayError::Internal(
                "a response was compressed twice".into(),
            ))
        })))
    }
}
