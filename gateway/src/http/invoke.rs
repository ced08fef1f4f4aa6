//! Routes that do not serve a handler: `publish = "CHANNEL"` (the request
//! body becomes a channel message, answered 202 with its id) and
//! `invoke = "COMPONENT.FUNCTION"` (the path's `{name}` segments are the
//! function's arguments, its result the response body).
//!
//! Invariant: a message is at most [`MAX_MESSAGE`] bytes, read within the
//! listener's body timeout, and published whole or not at all; an
//! invocation runs under its component's own limits.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Limited};

use crate::control::metrics::Metrics;
use crate::guest::bindings::types::Message;
use crate::guest::channel::MAX_MESSAGE;
use crate::guest::pubsub::Hub;
use crate::guest::{Arguments, Handler};
use crate::http::body::{RequestBody, ResponseBody, full};
use crate::http::error::GatewayError;
use crate::http::router::arguments;

/// Publishes the body of `request` to `channel` (counted as published);
/// 202 with the message's id.
pub async fn publish(
    hub: &Hub,
    metrics: &Metrics,
    channel: &str,
    request: Request<RequestBody>,
    body_timeout: Duration,
) -> Result<Response<ResponseBody>, GatewayError> {
    let read = Limited::new(request.into_body(), MAX_MESSAGE).collect();
    let body = match tokio::time::timeout(body_timeout, read).await {
        Err(_elapsed) => return Err(GatewayError::BodyTimeout(body_timeout)),
        Ok(Err(error)) if error.is::<http_body_util::LengthLimitError>() => {
            return Err(GatewayError::PayloadTooLarge(MAX_MESSAGE as u64));
        }
        Ok(Err(error)) => return Err(GatewayError::BadRequest(error.to_string())),
        Ok(Ok(collected)) => collected.to_bytes(),
    };
    let message = match String::from_utf8(body.to_vec()) {
        Ok(text) => Message::Text(text),
        Err(binary) => Message::Binary(binary.into_bytes()),
    };
    hub.publish_channel(channel, message);
    metrics
        .channel_messages
        .with_label_values(&[channel, "published"])
        .inc();
    let id = message_id();
    let mut response = Response::new(full(format!("{{\"id\":\"{id}\"}}\n")));
    *response.status_mut() = StatusCode::ACCEPTED;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

/// Calls `function` of `component` with the arguments `pattern` names in `path`.
pub async fn invoke(
    component: &Arc<Handler>,
    function: &str,
    pattern: &str,
    path: &str,
) -> Result<Response<ResponseBody>, GatewayError> {
    let result = component
        .invoke(function, Arguments::Named(arguments(pattern, path)))
        .await?;
    let mut response = Response::new(full(result));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Ok(response)
}

/// A message id unique within this process and across its restarts: the
/// start time and a counter.
fn message_id() -> String {
    static STARTED: std::sync::LazyLock<u128> = std::sync::LazyLock::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_millis())
    });
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!("{:x}-{}", *STARTED, NEXT.fetch_add(1, Ordering::Relaxed))
}
