//! What a route gets from the gateway around whatever serves it: CORS
//! (tower-http's `Cors`, answering preflights itself) and response header
//! rules. Built once per generation from the route's `cors` and `headers`;
//! a route with neither has no layers and pays nothing.
//!
//! Invariant: a preflight (`OPTIONS` with `Access-Control-Request-Method`)
//! is answered here and never reaches a guest; the header rules apply to
//! every response of the route, the gateway's own included.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{Request, Response};
use hyper::body::Incoming;
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer, ExposeHeaders};
use tower_layer::Layer as _;
use tower_service::Service;

use crate::config::{HeaderRule, RouteEdge};
use crate::http::body::ResponseBody;

/// A route's layers.
#[derive(Debug, Clone)]
pub struct RouteLayers {
    cors: Option<CorsLayer>,
    /// What they were built from (two routes' layers are equal when it is).
    edge: RouteEdge,
}

impl PartialEq for RouteLayers {
    fn eq(&self, other: &Self) -> bool {
        self.edge == other.edge
    }
}

impl Eq for RouteLayers {}

/// The rest of a request's way, once the layers let it through.
pub type Rest<'a> = Box<
    dyn FnOnce(
            Request<Incoming>,
        ) -> Pin<Box<dyn Future<Output = Response<ResponseBody>> + Send + 'a>>
        + Send
        + 'a,
>;

impl RouteLayers {
    /// The layers `edge` asks for; `None` when it asks for none.
    pub fn build(edge: &RouteEdge) -> Option<Self> {
        if edge.cors.is_none() && edge.headers.is_empty() {
            return None;
        }
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
            edge: edge.clone(),
        })
    }

    /// Serves `request` through the layers, `rest` inside them.
    pub async fn serve<'a>(
        &self,
        request: Request<Incoming>,
        rest: impl FnOnce(
            Request<Incoming>,
        ) -> Pin<Box<dyn Future<Output = Response<ResponseBody>> + Send + 'a>>
        + Send
        + 'a,
    ) -> Response<ResponseBody> {
        let inner = Once(Some(Box::new(rest)));
        let mut response = match &self.cors {
            Some(cors) => call(cors.layer(inner), request).await,
            None => call(inner, request).await,
        };
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

/// Drives a service that is always ready and never fails.
async fn call<S>(mut service: S, request: Request<Incoming>) -> Response<ResponseBody>
where
    S: Service<Request<Incoming>, Response = Response<ResponseBody>, Error = Infallible>,
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

/// The rest of the request's way as the innermost service: called once.
struct Once<'a>(Option<Rest<'a>>);

impl<'a> Service<Request<Incoming>> for Once<'a> {
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send + 'a>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Incoming>) -> Self::Future {
        let rest = self.0.take();
        Box::pin(async move {
            Ok(match rest {
                Some(rest) => rest(request).await,
                // `call` sends one request; a second has nowhere to go.
                None => crate::http::error::rescue(&crate::http::error::GatewayError::Internal(
                    "a route's layers served a request twice".into(),
                )),
            })
        })
    }
}
