//! One request: load the live snapshot once, route, dispatch to the guest,
//! rescue failures.
//!
//! Invariant: the snapshot is loaded exactly once per request and that
//! generation serves the whole request; every failure leaves through
//! [`crate::http::error::rescue`].

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use http::{HeaderValue, Request, Response, header};
use hyper::body::Incoming;
use tracing::Instrument as _;

use crate::app::App;
use crate::config::{ListenerLimits, RouteAction};
use crate::control::live::Snapshot;
use crate::control::metrics::VersionSeries;
use crate::guest::Chain;
use crate::guest::Scheme;
use crate::http::access::{Access, Pending};
use crate::http::body::{RequestBody, ResponseBody};
use crate::http::conn::ConnectionInfo;
use crate::http::error::{Blame, GatewayError, rescue};
use crate::http::front_door;

/// `-`, the route or handler of a request that has none, shared rather than
/// allocated per request.
fn none() -> Arc<str> {
    static NONE: std::sync::LazyLock<Arc<str>> = std::sync::LazyLock::new(|| Arc::from("-"));
    Arc::clone(&NONE)
}

/// Serves one request; never fails at the hyper level. Every request is
/// counted and access-logged when its response ends.
pub async fn handle(
    app: Arc<App>,
    connection: Arc<ConnectionInfo>,
    mut request: Request<Incoming>,
) -> Result<Response<ResponseBody>, Infallible> {
    let started = Instant::now();
    // In progress on its connection (the drain's first-request wait, the
    // idle timer) from its first moment until its response ends.
    let active = connection.begin();
    let method = request.method().clone();
    let snapshot = app.live.load_full();
    let listener = snapshot.config.listeners.get(connection.listener);
    let from_proxy = listener.is_some_and(|listener| {
        front_door::from_trusted_proxy(&listener.trusted_proxies, connection.peer.ip())
    });
    let id_header = &app.settings.request_id_header;
    let request_id = front_door::request_id(request.headers_mut(), id_header, from_proxy);
    front_door::hide_secrets(request.headers_mut());
    let span = tracing::info_span!(
        "request",
        id = %request_id.to_str().unwrap_or("-"),
        route = tracing::field::Empty,
        handler = tracing::field::Empty,
        version = tracing::field::Empty,
    );
    let pending = Pending::start(
        Access {
            started,
            client: connection.peer,
            method: method.clone(),
            host: request_host(&request),
            uri: request.uri().clone(),
            status: 0,
            route: none(),
            handler: none(),
            generation: snapshot.generation,
            request_id: request_id.clone(),
        },
        app.settings.access_log,
        Arc::clone(&app.metrics),
        active,
    );
    let host = pending.host();
    let challenge = match connection.scheme {
        Scheme::Http => front_door::acme_http01(&app.acme, request.uri().path()),
        _ => None,
    };
    let redirect = listener.and_then(|listener| listener.redirect);
    let (mut response, route, handler, series) = match (challenge, redirect) {
        (Some(answer), _) => (answer, none(), none(), None),
        (None, Some(redirect)) => {
            let response =
                front_door::https_redirect(redirect, host, connection.local, request.uri());
            (response, none(), none(), None)
        }
        (None, None) => {
            let mut request = request;
            let hop = front_door::Hop {
                client: connection.peer,
                proto: match connection.scheme {
                    Scheme::Https => "https",
                    _ => "http",
                },
                host,
                from_proxy,
            };
            front_door::forwarding_headers(request.headers_mut(), &hop);
            dispatch(&app, &snapshot, &connection, host, request)
                .instrument(span)
                .await
        }
    };
    if let Some(hsts) = listener.and_then(|listener| listener.hsts.as_ref()) {
        front_door::add_hsts(&mut response, hsts);
    }
    response.headers_mut().insert(id_header.clone(), request_id);
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    app.metrics
        .request(&route, &handler, &method, status, elapsed);
    if let Some(series) = series {
        series.observe(status, elapsed);
    }
    Ok(response.map(|body| pending.respond(status, route, handler, body)))
}

/// Routes and serves `request` from `snapshot`; returns the response with
/// the route and handler that served it (`-` when none), and the series of
/// the version that did.
async fn dispatch(
    app: &Arc<App>,
    snapshot: &Snapshot,
    connection: &Arc<ConnectionInfo>,
    host: Option<&str>,
    request: Request<Incoming>,
) -> (
    Response<ResponseBody>,
    Arc<str>,
    Arc<str>,
    Option<VersionSeries>,
) {
    let Some(route) = snapshot.router.route(host, request.uri().path()) else {
        tracing::debug!(path = request.uri().path(), host, "no route");
        return (rescue(&GatewayError::NoRoute), none(), none(), None);
    };
    let route_id = Arc::clone(&route.id);
    let handler_name = route.handler.label();
    tracing::Span::current()
        .record("route", tracing::field::display(&route_id))
        .record("handler", tracing::field::display(&handler_name));
    let (response, series) = match &route.edge {
        None => {
            let request = request.map(RequestBody::Client);
            serve_route(app, snapshot, connection, host, route, request).await
        }
        Some(edge) => {
            // The version that served it, seen from inside the layers.
            let series = std::sync::OnceLock::new();
            let response = edge
                .serve(request, |request| async {
                    let (response, found) =
                        serve_route(app, snapshot, connection, host, route, request).await;
                    if let Some(found) = found {
                        let _ = series.set(found);
                    }
                    response
                })
                .await;
            (response, series.into_inner())
        }
    };
    (response, route_id, handler_name, series)
}

/// Serves `request` on `route`: its handler (through its middleware), or
/// its channel, function or directory; returns the response with the series
/// of the version that served it.
async fn serve_route(
    app: &Arc<App>,
    snapshot: &Snapshot,
    connection: &Arc<ConnectionInfo>,
    host: Option<&str>,
    route: &crate::http::router::Route,
    request: Request<RequestBody>,
) -> (Response<ResponseBody>, Option<VersionSeries>) {
    let body_timeout = snapshot
        .config
        .listeners
        .get(connection.listener)
        .map_or(ListenerLimits::default().body_timeout, |listener| {
            listener.limits.body_timeout
        });
    // Publish and invoke routes are answered here; the rest serve a handler.
    let mut request = match &route.action {
        RouteAction::Handler => request,
        RouteAction::Publish(channel) => {
            let published = crate::http::invoke::publish(
                &app.hub,
                &app.metrics,
                channel,
                request,
                body_timeout,
            )
            .await;
            return (answer(&route.id, published), None);
        }
        RouteAction::Invoke { function } => {
            let invoked = match snapshot.handler(&route.handler) {
                Some(component) => {
                    let path = request.uri().path();
                    crate::http::invoke::invoke(component, function, &route.pattern, path).await
                }
                None => Err(GatewayError::HandlerUnavailable(route.handler.to_string())),
            };
            return (answer(&route.id, invoked), None);
        }
        RouteAction::Static(root) => {
            let prefix = route.pattern.strip_suffix("/*").unwrap_or(&route.pattern);
            let served = crate::http::static_files::serve(root, prefix, request).await;
            return (answer(&route.id, served), None);
        }
    };
    let Some(deployed) = snapshot.handlers.get(&route.handler) else {
        // Its component has never loaded (the reason was logged at load time).
        let error = GatewayError::HandlerUnavailable(route.handler.to_string());
        tracing::debug!(route = &*route.id, "{error}");
        return (rescue(&error), None);
    };
    let (version, set_cookie) = deployed.place(request.headers(), connection.peer.ip());
    tracing::Span::current().record("version", tracing::field::display(&version.name));
    let handler = &version.handler;
    if host.is_none() {
        // wasi:http requires an authority; an HTTP/1.0 request may have none.
        if let Ok(value) = HeaderValue::from_str(&connection.local.to_string()) {
            request.headers_mut().insert(header::HOST, value);
        }
    }
    let mut response = if handler.is_websocket() {
        crate::http::upgrade::websocket(app, handler, &route.id, request, connection.begin()).await
    } else if handler.is_sse() {
        crate::http::upgrade::sse(app, handler, &route.id, request).await
    } else {
        let served = if route.middleware.is_empty() {
            handler
                .serve(
                    request,
                    connection.scheme.clone(),
                    &route.id,
                    &app.hub,
                    body_timeout,
                    None,
                )
                .await
        } else {
            match snapshot.chains.get(&route.id) {
                Some(middleware) => {
                    Chain::new(
                        &request,
                        Arc::clone(middleware),
                        Arc::clone(handler),
                        connection.scheme.clone(),
                        Arc::clone(&route.id),
                        Arc::clone(&app.hub),
                        body_timeout,
                    )
                    .serve(request)
                    .await
                }
                // A middleware has never loaded (logged at load time).
                None => Err(GatewayError::HandlerUnavailable(
                    route
                        .middleware
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", "),
                )),
            }
        };
        match served {
            Ok(response) => response,
            Err(error) => {
                match error.blame() {
                    // Guest failures were logged where they happened, with the trap.
                    Blame::Guest => {}
                    Blame::Client => {
                        tracing::debug!(route = &*route.id, peer = %connection.peer, "{error}")
                    }
                    Blame::Internal => tracing::error!(route = &*route.id, "{error}"),
                }
                rescue(&error)
            }
        }
    };
    if let Some(cookie) = set_cookie {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    (response, Some(version.series.clone()))
}

/// The response of a route answered without a handler, or the rescue of
/// its error (logged when it is the gateway's own).
fn answer(
    route: &str,
    result: Result<Response<ResponseBody>, GatewayError>,
) -> Response<ResponseBody> {
    result.unwrap_or_else(|error| {
        if error.blame() == Blame::Internal {
            tracing::error!(route, "{error}");
        }
        rescue(&error)
    })
}

/// The request's host, lowercase and without port: from the URI (HTTP/2's
/// `:authority`, absolute-form HTTP/1) or else the `Host` header.
fn request_host<B>(request: &Request<B>) -> Option<String> {
    let authority = match request.uri().authority() {
        Some(authority) => authority.host().to_string(),
        None => {
            let value = request.headers().get(header::HOST)?.to_str().ok()?;
            value
                .parse::<http::uri::Authority>()
                .ok()?
                .host()
                .to_string()
        }
    };
    Some(authority.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host_of(request: Request<()>) -> Option<String> {
        request_host(&request)
    }

    #[test]
    fn host_comes_from_uri_then_header_without_port() {
        let absolute = Request::get("https://Example.COM:8443/x")
            .body(())
            .expect("valid");
        assert_eq!(host_of(absolute).as_deref(), Some("example.com"));
        let origin = Request::get("/x")
            .header("host", "api.example.com:80")
            .body(())
            .expect("valid");
        assert_eq!(host_of(origin).as_deref(), Some("api.example.com"));
        let ipv6 = Request::get("/x")
            .header("host", "[::1]:8080")
            .body(())
            .expect("valid");
        assert_eq!(host_of(ipv6).as_deref(), Some("[::1]"));
        let none = Request::get("/x").body(()).expect("valid");
        assert_eq!(host_of(none), None);
    }
}
