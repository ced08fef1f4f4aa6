//! The admin listener: operator endpoints, apart from the public listeners.
//!
//! Invariant: it listens only where `[admin] addr` says (127.0.0.1:9090 by
//! default; config validation refuses an address shared with a public
//! listener) and answers only its own endpoints:
//!
//! - `GET /metrics`: every collector, Prometheus text format;
//! - `GET /healthz`: 200 while the process runs;
//! - `GET /readyz`: 200 when the public listeners are bound, every configured
//!   handler has a loaded component and the gateway is not draining, else 503
//!   with the reasons;
//! - `GET /status`: JSON, per handler: generation, content hash, loaded at,
//!   last load error;
//! - `POST /reload`: rebuilds the configuration like SIGHUP does and reports
//!   the outcome as JSON (200 with the new generation, 422 with every problem).
//!
//! It comes up before the components load (as soon as the configuration
//! itself is valid), so probes see a 503 "starting" instead of a refused
//! connection while a large component compiles; [`AdminState::started`]
//! hands it the running gateway once the public listeners are bound.

use std::convert::Infallible;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::app::App;
use crate::config::HandlerName;
use crate::control::metrics::Metrics;
use crate::control::reload::{Outcome, Reloader};

/// What the admin endpoints answer from: the metrics from the first moment,
/// the running gateway once it is up.
pub struct AdminState {
    metrics: Arc<Metrics>,
    running: OnceLock<Running>,
}

struct Running {
    app: Arc<App>,
    reloader: Arc<Reloader>,
}

impl AdminState {
    /// A gateway that is still starting.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            metrics,
            running: OnceLock::new(),
        }
    }

    /// The gateway is loaded and its public listeners are bound.
    pub fn started(&self, app: Arc<App>, reloader: Arc<Reloader>) {
        // Only the start-up path calls this, once.
        let _ = self.running.set(Running { app, reloader });
    }
}

/// Serves admin requests on `socket` for the life of the process, from
/// before the components load through the drain: `/readyz` answers 503 in
/// both, so a load balancer sends traffic only in between.
pub async fn serve(socket: TcpListener, state: Arc<AdminState>) {
    loop {
        let (stream, peer) = match socket.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!("admin accept failed: {error}");
                // EMFILE and the like: give the process a moment.
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let service = service_fn(move |request| respond(Arc::clone(&state), request));
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            if let Err(error) = connection.await {
                tracing::debug!(%peer, "admin connection: {error}");
            }
        });
    }
}

const STARTING: &str = "starting: loading components";

async fn respond(
    state: Arc<AdminState>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let running = state.running.get();
    let starting = || {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({ "status": "not ready", "reasons": [STARTING] }),
        )
    };
    let (status, body) = match (request.method(), request.uri().path()) {
        (&Method::GET, "/metrics") => {
            let mut response = Response::new(Full::new(Bytes::from(state.metrics.render())));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            return Ok(response);
        }
        (&Method::GET, "/healthz") => (StatusCode::OK, serde_json::json!({ "status": "alive" })),
        (&Method::GET, "/readyz") => running.map_or_else(starting, |up| readiness(&up.app)),
        (&Method::GET, "/status") => {
            running.map_or_else(starting, |up| (StatusCode::OK, status(&up.app)))
        }
        (&Method::POST, "/reload") => match running {
            None => starting(),
            Some(up) => match up.reloader.reload("admin API").await {
                Outcome::Published(generation) => (
                    StatusCode::OK,
                    serde_json::json!({ "generation": generation }),
                ),
                Outcome::Rejected(problems) => (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    serde_json::json!({ "problems": problems }),
                ),
            },
        },
        (_, "/reload") => (
            StatusCode::METHOD_NOT_ALLOWED,
            serde_json::json!({ "error": "use POST" }),
        ),
        (_, "/metrics" | "/healthz" | "/readyz" | "/status") => (
            StatusCode::METHOD_NOT_ALLOWED,
            serde_json::json!({ "error": "use GET" }),
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

/// Ready (once started, so the public listeners are bound): not draining,
/// and every configured handler served by a loaded component.
fn readiness(app: &App) -> (StatusCode, serde_json::Value) {
    let snapshot = app.live.load();
    let mut reasons: Vec<String> = snapshot
        .config
        .handlers
        .keys()
        .filter(|name| snapshot.handler(name).is_none())
        .map(|name| format!("handler {name} has no loaded component"))
        .collect();
    if app.drain.is_draining() {
        reasons.push("draining".into());
    }
    if reasons.is_empty() {
        (StatusCode::OK, serde_json::json!({ "status": "ready" }))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({ "status": "not ready", "reasons": reasons }),
        )
    }
}

/// Every handler of the live generation, configured or found by auto routes.
fn status(app: &App) -> serde_json::Value {
    let snapshot = app.live.load();
    let mut names: Vec<&HandlerName> = snapshot
        .config
        .handlers
        .keys()
        .chain(snapshot.handlers.keys())
        .collect();
    names.sort();
    names.dedup();
    let handlers: Vec<serde_json::Value> = names
        .into_iter()
        .map(|name| {
            let handler = snapshot.handler(name);
            serde_json::json!({
                "name": name.as_str(),
                "loaded": handler.is_some(),
                "sha256": handler.map(|handler| handler.hash().as_str().to_string()),
                "loaded_at": handler.map(|handler| {
                    humantime::format_rfc3339_millis(handler.loaded_at()).to_string()
                }),
                "last_error": snapshot.load_errors.get(name),
            })
        })
        .collect();
    serde_json::json!({
        "generation": snapshot.generation,
        "version": env!("CARGO_PKG_VERSION"),
        "handlers": handlers,
    })
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
