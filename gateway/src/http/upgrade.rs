//! Stream routes: WebSocket upgrades (RFC 6455 over HTTP/1.1, RFC 8441
//! extended CONNECT over HTTP/2) for handlers of
//! `wasmgate:streaming/websocket-service`, and event streams for handlers of
//! `sse-service`.
//!
//! Invariant: a stream takes one of its route's connection slots before the
//! guest is even instantiated (none left: 503), and the guest decides
//! (`on-open`, `on-subscribe`) before anything is upgraded or streamed; an
//! accepted stream is served by its own task, which holds the route slot,
//! its connection (the listener slot stays taken) and a drain slot, so
//! shutdown closes WebSockets with 1001 and ends event streams within the
//! grace period.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

use crate::app::App;
use crate::guest::Handler;
use crate::guest::stream::{Opening, Refused};
use crate::http::body::{RequestBody, ResponseBody, full};
use crate::http::conn::Active;
use crate::http::error::{GatewayError, rescue};

/// tungstenite's read buffer per WebSocket connection.
const READ_BUFFER: usize = 8 * 1024;

/// Answers `request` on a WebSocket route: the upgrade (101 over HTTP/1.1,
/// 200 to an HTTP/2 extended CONNECT) and a bridged connection, the guest's
/// refusal, 503 when the route is full, or 426 when the request is not a
/// WebSocket upgrade.
pub async fn websocket(
    app: &Arc<App>,
    handler: &Handler,
    route: &Arc<str>,
    mut request: Request<RequestBody>,
    connection: Active,
) -> Response<ResponseBody> {
    let Some(kind) = websocket_request(&request) else {
        return rescue(&GatewayError::UpgradeRequired);
    };
    let limits = handler.stream_limits();
    let Some(slot) = app.stream_slots.take(route, limits.max_connections) else {
        return full_route(route, handler);
    };
    let session = match handler.open_websocket(&app.hub, opening(&request)).await {
        Ok(session) => session,
        Err(refused) => return refusal(route, refused),
    };
    let upgrade = hyper::upgrade::on(&mut request);
    let drain = app.drain.clone();
    let keep_alive = app.settings.stream_keep_alive;
    // tungstenite zero-fills its whole read buffer before every read
    // attempt, and the session polls the socket after every event it
    // handles: 128 KiB (the default) made that memset 16% of the fan-out
    // benchmark's CPU. Large messages just take a few more reads.
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .max_message_size(Some(limits.max_message))
        .max_frame_size(Some(limits.max_message));
    app.drain.spawn(async move {
        match upgrade.await {
            Ok(upgraded) => {
                let socket = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(config),
                )
                .await;
                super::websocket::run(session, socket, drain, keep_alive).await;
            }
            Err(error) => tracing::debug!("WebSocket upgrade failed: {error}"),
        }
        drop(slot);
        // Over HTTP/1.1 the upgraded socket is the connection: its listener
        // slot goes back only now.
        drop(connection);
    });
    match kind {
        Upgrade::Http1(key) => {
            let mut response = Response::new(full(""));
            *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            let headers = response.headers_mut();
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
                headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
            }
            response
        }
        // RFC 8441: a 2xx answer turns the stream into the WebSocket.
        Upgrade::ExtendedConnect => Response::new(full("")),
    }
}

/// 503 for a route whose streams are all taken, or when streams hold every
/// instance they may.
fn full_route(route: &str, handler: &Handler) -> Response<ResponseBody> {
    handler.count_refused();
    let error = GatewayError::Saturated(format!(
        "route {route}'s connection limit, or the instances streams may hold"
    ));
    tracing::debug!(route, "{error}");
    rescue(&error)
}

/// Answers `request` on an SSE route: a `text/event-stream` fed by the
/// guest's session, or the guest's refusal.
pub async fn sse(
    app: &Arc<App>,
    handler: &Handler,
    route: &Arc<str>,
    request: Request<RequestBody>,
) -> Response<ResponseBody> {
    let Some(slot) = app
        .stream_slots
        .take(route, handler.stream_limits().max_connections)
    else {
        return full_route(route, handler);
    };
    let session = match handler.open_sse(&app.hub, opening(&request)).await {
        Ok(session) => session,
        Err(refused) => return refusal(route, refused),
    };
    // A small buffer: a client that stops reading soon holds up its own
    // guest's emits (which then answer queue-full), never the gateway.
    let (events, body) = mpsc::channel::<Bytes>(16);
    let (drain, keep_alive) = (app.drain.clone(), app.settings.stream_keep_alive);
    app.drain.spawn(async move {
        super::sse::run(session, events, drain, keep_alive).await;
        drop(slot);
    });
    let frames = futures::stream::unfold(body, |mut body| async move {
        let chunk = body.recv().await?;
        Some((Ok(Frame::data(chunk)), body))
    });
    let mut response = Response::new(StreamBody::new(frames).boxed_unsync());
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// The opening request as a stream guest sees it.
fn opening<B>(request: &Request<B>) -> Opening {
    Opening {
        method: request.method().to_string(),
        path_with_query: request
            .uri()
            .path_and_query()
            .map_or_else(|| "/".to_string(), ToString::to_string),
        headers: request
            .headers()
            .iter()
            .map(|(name, value)| (name.as_str().to_string(), value.as_bytes().to_vec()))
            .collect(),
    }
}

/// The answer to a stream the guest did not open.
fn refusal(route: &str, refused: Refused) -> Response<ResponseBody> {
    match refused {
        Refused::ByGuest(status, reason) => {
            let mut response = Response::new(full(format!("{reason}\n")));
            *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN);
            response
        }
        Refused::Saturated(what) => {
            let error = GatewayError::Saturated(what);
            tracing::debug!(route, "{error}");
            rescue(&error)
        }
        Refused::Failed(error) => {
            tracing::warn!(route, "stream guest failed to open: {error}");
            rescue(&GatewayError::GuestTrap(error))
        }
    }
}

/// How a WebSocket is asked for.
enum Upgrade {
    /// HTTP/1.1 `Upgrade: websocket`, with its `Sec-WebSocket-Key`.
    Http1(HeaderValue),
    /// HTTP/2 `CONNECT` with `:protocol = websocket` (RFC 8441).
    ExtendedConnect,
}

/// The kind of a well-formed version-13 WebSocket request, if it is one.
fn websocket_request<B>(request: &Request<B>) -> Option<Upgrade> {
    let headers = request.headers();
    let version_13 = headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_some_and(|version| version == "13");
    if request.method() == http::Method::CONNECT {
        let websocket = request
            .extensions()
            .get::<hyper::ext::Protocol>()
            .is_some_and(|protocol| protocol.as_str().eq_ignore_ascii_case("websocket"));
        return (websocket && version_13).then_some(Upgrade::ExtendedConnect);
    }
    let has = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|value| {
            value.to_str().is_ok_and(|value| {
                value
                    .split(',')
                    .any(|part| part.trim().eq_ignore_ascii_case(token))
            })
        })
    };
    let upgrade = request.method() == http::Method::GET
        && has(header::CONNECTION, "upgrade")
        && has(header::UPGRADE, "websocket")
        && version_13;
    upgrade
        .then(|| headers.get(header::SEC_WEBSOCKET_KEY).cloned())
        .flatten()
        .map(Upgrade::Http1)
}
