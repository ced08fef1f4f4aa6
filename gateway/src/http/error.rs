//! What can go wrong while serving a request, who is to blame, and the one
//! place ([`rescue`]) that turns a failure into a response.
//!
//! Invariant: a response body never carries internal error text. The client
//! gets the status and its canonical reason; the log gets the full chain.

use std::time::Duration;

use http::{Response, StatusCode, header};

use crate::http::body::{ResponseBody, full};

/// Whose fault a failed request is: it picks the status class and the log level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blame {
    /// The request itself is wrong (4xx).
    Client,
    /// The guest component misbehaved (5xx).
    Guest,
    /// The gateway could not do its part (5xx).
    Internal,
}

/// A request that could not be answered normally.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// No configured route matches the request's host and path.
    #[error("no route matches the request")]
    NoRoute,
    /// The request cannot be handed to a guest (e.g. no authority at all).
    #[error("malformed request: {0}")]
    BadRequest(String),
    /// The guest trapped (panic, unreachable, out of bounds, ...) before it answered.
    #[error("guest trapped: {0}")]
    GuestTrap(String),
    /// The guest trapped after its memory cap refused to grow its memory.
    #[error("guest ran out of memory: {0}")]
    GuestOutOfMemory(String),
    /// The guest ran past its time limit before it answered.
    #[error("guest exceeded its time limit of {}", humantime::format_duration(*.0))]
    GuestTimeout(Duration),
    /// The guest used up its CPU budget before it was done.
    #[error("guest used up its CPU budget of {0} fuel (limits.fuel)")]
    GuestOutOfFuel(u64),
    /// The guest returned without ever setting a response.
    #[error("guest returned without setting a response")]
    GuestNoResponse,
    /// The guest answered with an error code instead of a response.
    #[error("guest answered with an error: {0}")]
    GuestErrorCode(String),
    /// A WebSocket route asked for without a WebSocket upgrade.
    #[error("this route serves WebSocket connections only")]
    UpgradeRequired,
    /// The request body is larger than the handler's limit.
    #[error("request body over the limit of {0} bytes")]
    PayloadTooLarge(u64),
    /// The request body stalled between chunks for longer than the
    /// listener's `body_timeout`.
    #[error("request body stalled for {}", humantime::format_duration(*.0))]
    BodyTimeout(std::time::Duration),
    /// A limit on concurrent work is reached; the client may retry shortly.
    #[error("{0} is at its limit")]
    Saturated(String),
    /// The route's handler has no loaded component.
    #[error("handler {0} has no loaded component")]
    HandlerUnavailable(String),
    /// The gateway failed to set up the guest (instantiation, resources).
    #[error("gateway failure: {0}")]
    Internal(String),
}

impl GatewayError {
    /// Who is responsible for this failure.
    pub fn blame(&self) -> Blame {
        match self {
            Self::NoRoute
            | Self::BadRequest(_)
            | Self::UpgradeRequired
            | Self::Saturated(_)
            | Self::PayloadTooLarge(_)
            | Self::BodyTimeout(_) => Blame::Client,
            Self::GuestTrap(_)
            | Self::GuestOutOfMemory(_)
            | Self::GuestTimeout(_)
            | Self::GuestOutOfFuel(_)
            | Self::GuestNoResponse
            | Self::GuestErrorCode(_) => Blame::Guest,
            Self::HandlerUnavailable(_) | Self::Internal(_) => Blame::Internal,
        }
    }

    /// The status the client receives.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NoRoute => StatusCode::NOT_FOUND,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::UpgradeRequired => StatusCode::UPGRADE_REQUIRED,
            Self::GuestTimeout(_) | Self::GuestOutOfFuel(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::HandlerUnavailable(_) | Self::Saturated(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::GuestTrap(_)
            | Self::GuestOutOfMemory(_)
            | Self::GuestNoResponse
            | Self::GuestErrorCode(_)
            | Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// The response for a failed request: its status and the status's canonical
/// reason as a short text body, nothing more.
pub fn rescue(error: &GatewayError) -> Response<ResponseBody> {
    let status = error.status();
    let reason = status.canonical_reason().unwrap_or("Error");
    let mut response = Response::new(full(format!("{} {reason}\n", status.as_u16())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if let GatewayError::Saturated(_) = error {
        // Capacity frees up as streams and requests end; a second is a hint.
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[test]
    fn statuses_follow_blame() {
        assert_eq!(GatewayError::NoRoute.status(), StatusCode::NOT_FOUND);
        assert_eq!(GatewayError::NoRoute.blame(), Blame::Client);
        let timeout = GatewayError::GuestTimeout(Duration::from_secs(1));
        assert_eq!(timeout.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(timeout.blame(), Blame::Guest);
        let trap = GatewayError::GuestTrap("wasm trap: unreachable".into());
        assert_eq!(trap.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[tokio::test]
    async fn rescue_never_leaks_the_error_text() {
        let secret = "wasm backtrace: secret_function at /home/build/src/lib.rs:42";
        let response = rescue(&GatewayError::GuestTrap(secret.into()));
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = response
            .into_body()
            .collect()
            .await
            .expect("in-memory body");
        assert_eq!(body.to_bytes(), "500 Internal Server Error\n");
    }
}
