//! Stream routes: WebSocket upgrades (RFC 6455 over HTTP/1.1) for handlers of
//! `wasmgate:streaming/websocket-service`, and event streams for handlers of
//! `sse-service`.
//!
//! Invariant: the guest decides (`on-open`, `on-subscribe`) before anything
//! is upgraded or streamed; an accepted stream is served by its own task,
//! which holds a drain slot, so shutdown closes WebSockets with 1001 and ends
//! event streams within the grace period.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, StreamBody};
use hyper::body::Frame;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

use crate::app::App;
use crate::body::{ResponseBody, full};
use crate::error::{GatewayError, rescue};
use crate::guest::Handler;
use crate::guest::stream::{Opening, Refused};

/// Answers `request` on a WebSocket route: 101 and a bridged connection, the
/// guest's refusal, or 426 when the request is not a WebSocket upgrade.
pub async fn websocket(
    app: &Arc<App>,
    handler: &Handler,
    route: &str,
    mut request: Request<Incoming>,
) -> Response<ResponseBody> {
    let Some(key) = websocket_key(&request) else {
        return rescue(&GatewayError::UpgradeRequired);
    };
    let opening = opening(&request);
    let session = match handler.open_websocket(&app.hub, opening).await {
        Ok(session) => session,
        Err(refused) => return refusal(route, refused),
    };
    let upgrade = hyper::upgrade::on(&mut request);
    let drain = app.drain.clone();
    app.drain.spawn(async move {
        match upgrade.await {
            Ok(upgraded) => {
                let socket =
                    WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None)
                        .await;
                session.run(socket, drain).await;
            }
            Err(error) => tracing::debug!("WebSocket upgrade failed: {error}"),
        }
    });
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

/// Answers `request` on an SSE route: a `text/event-stream` fed by the
/// guest's session, or the guest's refusal.
pub async fn sse(
    app: &Arc<App>,
    handler: &Handler,
    route: &str,
    request: Request<Incoming>,
) -> Response<ResponseBody> {
    let session = match handler.open_sse(&app.hub, opening(&request)).await {
        Ok(session) => session,
        Err(refused) => return refusal(route, refused),
    };
    // A small buffer: a client that stops reading soon holds up its own
    // guest's emits (which then answer queue-full), never the gateway.
    let (events, body) = mpsc::channel::<Bytes>(16);
    app.drain
        .spawn(session.run(events, app.drain.clone(), app.settings.stream_keep_alive));
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
        Refused::Failed(error) => {
            tracing::warn!(route, "stream guest failed to open: {error}");
            rescue(&GatewayError::GuestTrap(error))
        }
    }
}

/// The `Sec-WebSocket-Key` of a well-formed version-13 upgrade request.
fn websocket_key<B>(request: &Request<B>) -> Option<HeaderValue> {
    let headers = request.headers();
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
        && headers
            .get(header::SEC_WEBSOCKET_VERSION)
            .is_some_and(|version| version == "13");
    upgrade
        .then(|| headers.get(header::SEC_WEBSOCKET_KEY).cloned())
        .flatten()
}
