//! The admin listener: operator endpoints, apart from the public listeners.
//!
//! Invariant: it listens only where `[admin] addr` says (loopback in the
//! shipped configs; config validation refuses an address shared with a
//! public listener) and answers only its own endpoints:
//! `POST /reload` rebuilds the configuration like SIGHUP does and reports the
//! outcome as JSON (200 with the new generation, 422 with every problem).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::drain::Drain;
use crate::reload::{Outcome, Reloader};

/// Serves admin requests on `socket` until the drain starts.
pub async fn serve(socket: TcpListener, reloader: Arc<Reloader>, drain: Drain) {
    loop {
        let (stream, peer) = tokio::select! {
            () = drain.signaled() => break,
            accepted = socket.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!("admin accept failed: {error}");
                    continue;
                }
            },
        };
        let reloader = Arc::clone(&reloader);
        tokio::spawn(async move {
            let service = service_fn(move |request| respond(Arc::clone(&reloader), request));
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            if let Err(error) = connection.await {
                tracing::debug!(%peer, "admin connection: {error}");
            }
        });
    }
}

async fn respond(
    reloader: Arc<Reloader>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, body) = match (request.method(), request.uri().path()) {
        (&Method::POST, "/reload") => match reloader.reload("admin API").await {
            Outcome::Published(generation) => (
                StatusCode::OK,
                serde_json::json!({ "generation": generation }),
            ),
            Outcome::Rejected(problems) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                serde_json::json!({ "problems": problems }),
            ),
        },
        (_, "/reload") => (
            StatusCode::METHOD_NOT_ALLOWED,
            serde_json::json!({ "error": "use POST" }),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            serde_json::json!({ "error": "not found" }),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(format!("{body}\n"))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

/// Asks the gateway whose admin listener is at `addr` to reload; returns the
/// status and the JSON body it answered.
pub async fn request_reload(
    addr: std::net::SocketAddr,
) -> anyhow::Result<(StatusCode, serde_json::Value)> {
    use anyhow::Context as _;
    use http_body_util::{BodyExt as _, Empty};
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to the admin listener on {addr}"))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let request = Request::post("/reload")
        .header(header::HOST, addr.to_string())
        .body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    let json = serde_json::from_slice(&body)
        .context("the admin API answered something other than JSON")?;
    Ok((status, json))
}
