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
//! The first four are read-only and open to scrapers and probes (`/status`
//! only when asked by address or `localhost`, so a page whose name a
//! rebinding DNS points here cannot read it). `/reload` changes the gateway,
//! so it also refuses anything shaped like a browser's cross-site request (a
//! foreign `Origin`, a form content type) and, when `[admin] token_file` is
//! set (required off loopback), a request without its bearer token.
//! Connections are capped at [`MAX_CONNECTIONS`] and must send their
//! headers within [`HEADER_TIMEOUT`], which also bounds keep-alive idling.
//!
//! It comes up before the components load (as soon as the configuration
//! itself is valid), so probes see a 503 "starting" instead of a refused
//! connection while a large component compiles; [`AdminState::started`]
//! hands it the running gateway once the public listeners are bound.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::app::App;
use crate::config::HandlerName;
use crate::control::metrics::Metrics;
use crate::control::operations;
use crate::control::reload::{Outcome, Reloader};
use crate::control::rollout::Controller;
use crate::control::token;

/// What the admin endpoints answer from: the metrics from the first moment,
/// the running gateway once it is up.
pub struct AdminState {
    metrics: Arc<Metrics>,
    /// `[admin] token_file`, read at each mutating request (so a rotated
    /// token takes effect at once).
    token_file: Option<PathBuf>,
    running: OnceLock<Running>,
}

/// Admin connections open at once; more wait in the kernel's backlog.
pub const MAX_CONNECTIONS: usize = 64;

/// Time to send a request's headers, and to stay idle between requests.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

struct Running {
    app: Arc<App>,
    reloader: Arc<Reloader>,
    controller: Arc<Controller>,
}

impl AdminState {
    /// A gateway that is still starting; mutating requests need the token
    /// in `token_file`, if there is one.
    pub fn new(metrics: Arc<Metrics>, token_file: Option<PathBuf>) -> Self {
        Self {
            metrics,
            token_file,
            running: OnceLock::new(),
        }
    }

    /// The gateway is loaded and its public listeners are bound.
    pub fn started(&self, app: Arc<App>, reloader: Arc<Reloader>, controller: Arc<Controller>) {
        // Only the start-up path calls this, once.
        let _ = self.running.set(Running {
            app,
            reloader,
            controller,
        });
    }
}

/// Serves admin requests on `socket` for the life of the process, from
/// before the components load through the drain: `/readyz` answers 503 in
/// both, so a load balancer sends traffic only in between.
pub async fn serve(socket: TcpListener, state: Arc<AdminState>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
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
            let local = stream.local_addr().ok();
            let service =
                service_fn(move |request| respond(Arc::clone(&state), local, peer, request));
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(error) = connection.await {
                tracing::debug!(%peer, "admin connection: {error}");
            }
            drop(slot);
        });
    }
}

const STARTING: &str = "starting: loading components";

async fn respond(
    state: Arc<AdminState>,
    local: Option<std::net::SocketAddr>,
    peer: std::net::SocketAddr,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let operation = operations::is_operation(request.uri().path());
    let guarded = operation || matches!(request.uri().path(), "/status" | "/reload");
    if guarded && let Err((status, reason)) = operator_only(&state, local, &request) {
        return Ok(json(status, &serde_json::json!({ "error": reason })));
    }
    let running = state.running.get();
    let starting = || {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({ "status": "not ready", "reasons": [STARTING] }),
        )
    };
    if operation {
        let (status, body) = match running {
            None => starting(),
            Some(up) => operations::answer(&up.app, &up.controller, peer, request).await,
        };
        return Ok(json(status, &body));
    }
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
            Some(up) => match up.reloader.reload(&format!("admin API from {peer}")).await {
                Outcome::Published(generation) => (
                    StatusCode::OK,
                    serde_json::json!({ "generation": generation }),
                ),
                Outcome::Rejected(problems) => (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    serde_json::json!({ "problems": problems }),
                ),
                Outcome::Draining => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    serde_json::json!({ "error": "draining: the gateway is shutting down" }),
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
    Ok(json(status, &body))
}

fn json(status: StatusCode, body: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(format!("{body}\n"))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

/// Content types a browser sends cross-site without asking first (CORS
/// "simple requests"): a form or a `fetch` with no preflight.
const FORM_TYPES: [&str; 3] = [
    "application/x-www-form-urlencoded",
    "multipart/form-data",
    "text/plain",
];

/// Whether `request` comes from an operator's tool rather than a web page:
/// asked by address (or `localhost`), and for `POST`, with no foreign
/// `Origin`, no form content type, and the token when one is configured.
fn operator_only(
    state: &AdminState,
    local: Option<std::net::SocketAddr>,
    request: &Request<Incoming>,
) -> Result<(), (StatusCode, &'static str)> {
    let forbidden = |reason| Err((StatusCode::FORBIDDEN, reason));
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<http::uri::Authority>().ok());
    let by_address = |authority: &http::uri::Authority| {
        let name = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok()
    };
    let Some(host) = host.filter(by_address) else {
        return forbidden("ask by address or localhost");
    };
    if request.method() != Method::POST {
        return Ok(());
    }
    // A browser names the page's origin; the admin's own page would be
    // this very host and port, and there is no such page.
    if let Some(origin) = request.headers().get(header::ORIGIN) {
        let own = format!("http://{host}");
        let same = origin.as_bytes().eq_ignore_ascii_case(own.as_bytes())
            && host.port_u16() == local.map(|local| local.port());
        if !same {
            return forbidden("cross-origin requests are refused");
        }
    }
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if FORM_TYPES
        .iter()
        .any(|form| essence.eq_ignore_ascii_case(form))
    {
        return forbidden("form content types are refused");
    }
    let Some(path) = &state.token_file else {
        return Ok(());
    };
    let expected = token::read(path).map_err(|reason| {
        tracing::error!("admin API: {reason}; refusing {}", request.uri().path());
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "the admin token cannot be read",
        )
    })?;
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .unwrap_or("");
    if token::matches(&expected, presented.trim()) {
        Ok(())
    } else {
        Err((StatusCode::UNAUTHORIZED, "a valid bearer token is required"))
    }
}

/// Ready (once started, so the public listeners are bound): not draining,
/// every configured handler served by a loaded component, and every
/// required resident ready.
fn readiness(app: &App) -> (StatusCode, serde_json::Value) {
    let snapshot = app.live.load();
    let mut reasons: Vec<String> = snapshot
        .config
        .handlers
        .keys()
        .filter(|name| snapshot.handler(name).is_none())
        .map(|name| format!("handler {name} has no loaded component"))
        .collect();
    for resident in app.residents.seen() {
        if resident.report.required && !resident.ready {
            reasons.push(format!(
                "resident {} is {}",
                resident.name,
                resident.report.state.label()
            ));
        }
    }
    if app
        .cluster
        .as_ref()
        .is_some_and(|cluster| !cluster.is_synced())
    {
        reasons.push("cluster: catching up with the shared deployment state".into());
    }
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
            let versions: Vec<serde_json::Value> = snapshot
                .handlers
                .get(name)
                .map(|deployed| {
                    deployed
                        .versions
                        .iter()
                        .map(|version| {
                            serde_json::json!({
                                "name": &*version.name,
                                "sha256": version.handler.hash().as_str(),
                                "weight_percent": f64::from(version.weight) / 100.0,
                            })
                        })
                        .collect()
                })
                .unwrap_or_default();
            let rollout = app.deployments.candidate(name).map(|candidate| {
                serde_json::json!({
                    "strategy": candidate.strategy.label(),
                    "version": candidate.sha256,
                    "name": &*candidate.name,
                    "step": candidate.step + 1,
                    "weight_percent": f64::from(candidate.weight) / 100.0,
                    "failed_checks": candidate.failures,
                    "started_by": candidate.actor,
                })
            });
            serde_json::json!({
                "name": name.as_str(),
                "loaded": handler.is_some(),
                "sha256": handler.map(|handler| handler.hash().as_str().to_string()),
                "loaded_at": handler.map(|handler| {
                    humantime::format_rfc3339_millis(handler.loaded_at()).to_string()
                }),
                "last_error": snapshot.load_errors.get(name),
                "versions": versions,
                "rollout": rollout,
            })
        })
        .collect();
    let residents: Vec<serde_json::Value> = app
        .residents
        .seen()
        .into_iter()
        .map(|resident| {
            let report = resident.report;
            serde_json::json!({
                "name": resident.name.as_str(),
                "state": report.state.label(),
                "ready": resident.ready,
                "required": report.required,
                "restarts": report.restarts,
                "last_exit": report.last_exit.as_ref().map(|(_, exit)| exit),
                "last_exit_at": report.last_exit.as_ref().map(|(at, _)| {
                    humantime::format_rfc3339_millis(*at).to_string()
                }),
            })
        })
        .collect();
    serde_json::json!({
        "generation": snapshot.generation,
        "version": env!("CARGO_PKG_VERSION"),
        "handlers": handlers,
        "residents": residents,
        "cluster": app.cluster.as_ref().map(crate::cluster::Cluster::status),
    })
}

/// Asks the gateway whose admin listener is at `addr` to reload, with the
/// bearer `token` when there is one; returns the status and the JSON body it
/// answered.
pub async fn request_reload(
    addr: std::net::SocketAddr,
    token: Option<&str>,
) -> anyhow::Result<(StatusCode, serde_json::Value)> {
    request(addr, token, Method::POST, "/reload", Bytes::new()).await
}

/// Sends `method path` with `body` to the admin listener at `addr`, with
/// the bearer `token` when there is one; returns the status and the JSON
/// body it answered.
pub async fn request(
    addr: std::net::SocketAddr,
    token: Option<&str>,
    method: Method,
    path: &str,
    body: Bytes,
) -> anyhow::Result<(StatusCode, serde_json::Value)> {
    use anyhow::Context as _;
    use http_body_util::BodyExt as _;
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to the admin listener on {addr}"))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, addr.to_string())
        .header(header::CONTENT_TYPE, "application/wasm");
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let request = request.body(Full::new(body))?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    let json = serde_json::from_slice(&body)
        .context("the admin API answered something other than JSON")?;
    Ok((status, json))
}
