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
use std::marker::PhantomData;
use std::task::{Context, Poll};

use futures::FutureExt as _;
use futures::future::Either;
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

    /// Serves `request` through the layers, `rest` inside them. Generic
    /// over what `rest` returns, so the future of whatever serves the route
    /// lives inline in the layers' futures: nothing is boxed per request.
    pub async fn serve<F>(
        &self,
        request: Request<Incoming>,
        rest: impl FnOnce(Request<RequestBody>) -> F + Send,
    ) -> Response<ResponseBody>
    where
        F: Future<Output = Response<ResponseBody>> + Send,
    {
        // Innermost, so a preflight never meets it and its 415 gets the
        // route's CORS and header rules like any answer.
        let decompress = self.edge.decompress;
        let rest = move |request: Request<Incoming>| {
            if decompress {
                let decoding = RequestDecompression::new(Once::new(rest));
                Either::Left(async move { unbox(call(decoding, request).await) })
            } else {
                Either::Right(rest(request.map(RequestBody::Client)))
            }
        };
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
        let inner = Once::new(rest);
        let mut response = match &self.cors {
            None => call(inner, request).await,
            Some(cors) => call(cors.layer(inner), request).await,
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
    match std::future::poll_fn(|cx| service.poll_ready(cx)).await {
        Ok(()) => {}
        Err(never) => match never {},
    }
    match service.call(request).await {
        Ok(response) => response,
        Err(never) => match never {},
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

/// The rest of the request's way as the innermost service: called once,
/// with any body that converts to the `B` it takes.
struct Once<R, B> {
    rest: Option<R>,
    body: PhantomData<fn(B)>,
}

impl<R, B> Once<R, B> {
    fn new(rest: R) -> Self {
        Self {
            rest: Some(rest),
            body: PhantomData,
        }
    }
}

/// What [`Once`] answers with: the rest's answer, or (called twice) an error.
type OnceFuture<F> = Either<
    futures::future::Map<
        F,
        fn(Response<ResponseBody>) -> Result<Response<ResponseBody>, Infallible>,
    >,
    std::future::Ready<Result<Response<ResponseBody>, Infallible>>,
>;

impl<R, B, C, F> Service<Request<C>> for Once<R, B>
where
    R: FnOnce(Request<B>) -> F,
    C: Into<B>,
    F: Future<Output = Response<ResponseBody>>,
{
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = OnceFuture<F>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<C>) -> Self::Future {
        match self.rest.take() {
            Some(rest) => Either::Left(rest(request.map(Into::into)).map(Ok as fn(_) -> _)),
            // `call` sends one request; a second has nowhere to go.
            None => Either::Right(std::future::ready(Ok(crate::http::error::rescue(
                &crate::http::error::GatewayError::Internal(
                    "a route's layers served a request twice".into(),
                ),
            )))),
        }
    }
}
