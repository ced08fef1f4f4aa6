//! Listening sockets and their accept loops.
//!
//! Invariant: an accept loop ends only when the gateway drains; errors from
//! `accept` (a connection reset before it was accepted, EMFILE when out of
//! file descriptors) are logged and retried with a back-off, never fatal.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd as _;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto::Builder;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::app::App;
use crate::config::{IpNet, ListenerConfig, ListenerLimits};
use crate::edge::handover::{Inherited, SocketKey};
use crate::guest::Scheme;
use crate::http::conn::{self, ConnectionInfo, Slot};
use crate::http::service;

/// A bound listener, not yet accepting.
pub struct Bound {
    /// Position in the config, which indexes the snapshot's TLS configs.
    pub index: usize,
    /// The address actually bound (with the real port when 0 was asked).
    pub addr: SocketAddr,
    /// Whether connections are TLS.
    pub tls: bool,
    /// Whether connections start with a PROXY protocol header.
    proxy_protocol: bool,
    /// The peers whose PROXY header is believed.
    proxy_from: Arc<[IpNet]>,
    limits: ListenerLimits,
    /// The address as configured (port 0 stays 0), the handover key.
    configured: SocketAddr,
    socket: TcpListener,
}

impl Bound {
    /// What a successor process needs to take this socket over.
    pub fn offer(&self) -> std::io::Result<(SocketKey, std::os::fd::OwnedFd)> {
        Ok((
            SocketKey::listener(self.configured),
            self.socket.as_fd().try_clone_to_owned()?,
        ))
    }

    /// The URL scheme clients use.
    pub fn scheme(&self) -> &'static str {
        if self.tls { "https" } else { "http" }
    }
}

/// Binds every configured listener, or none; a socket `inherited` from a
/// predecessor is used instead of binding anew.
pub async fn bind(
    listeners: &[ListenerConfig],
    inherited: &mut Inherited,
) -> anyhow::Result<Vec<Bound>> {
    let mut bound = Vec::with_capacity(listeners.len());
    for (index, listener) in listeners.iter().enumerate() {
        let socket = match inherited.take(&SocketKey::listener(listener.addr)) {
            Some(socket) => socket,
            None => TcpListener::bind(listener.addr)
                .await
                .with_context(|| format!("binding listener[{index}] on {}", listener.addr))?,
        };
        bound.push(Bound {
            index,
            addr: socket.local_addr()?,
            tls: listener.tls.is_some(),
            proxy_protocol: listener.proxy_protocol,
            proxy_from: listener.proxy_from.iter().cloned().collect(),
            limits: listener.limits,
            configured: listener.addr,
            socket,
        });
    }
    Ok(bound)
}

const MIN_BACKOFF: Duration = Duration::from_millis(5);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Accepts connections until the drain starts, each served on its own task.
pub async fn accept_loop(app: Arc<App>, bound: Bound) {
    let mut backoff = MIN_BACKOFF;
    let http = Arc::new(conn::http_builder(&bound.limits));
    let slots = Arc::new(Semaphore::new(bound.limits.max_connections));
    loop {
        // At the connection limit, stop accepting: waiting clients queue in
        // the kernel's backlog instead of costing a task and a socket here.
        let slot = tokio::select! {
            () = app.drain.signaled() => break,
            slot = Arc::clone(&slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_closed) => break,
            },
        };
        let accepted = tokio::select! {
            () = app.drain.signaled() => break,
            accepted = bound.socket.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = MIN_BACKOFF;
                let app_for_task = Arc::clone(&app);
                let http = Arc::clone(&http);
                let site = Site {
                    index: bound.index,
                    tls: bound.tls,
                    proxy_protocol: bound.proxy_protocol,
                    proxy_from: Arc::clone(&bound.proxy_from),
                    limits: bound.limits,
                    local: bound.addr,
                };
                app.drain.spawn(async move {
                    connection(app_for_task, &http, site, stream, peer, slot).await;
                });
            }
            Err(error) if is_per_connection(&error) => {
                tracing::debug!("accept: connection lost before it was accepted: {error}");
            }
            Err(error) => {
                tracing::warn!(listener = %bound.addr, "accept failed, retrying in {backoff:?}: {error}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
    tracing::debug!(listener = %bound.addr, "stopped accepting");
}

/// Errors that concern only the connection being accepted.
fn is_per_connection(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
    )
}

/// Where a connection arrived.
struct Site {
    index: usize,
    tls: bool,
    proxy_protocol: bool,
    proxy_from: Arc<[IpNet]>,
    limits: ListenerLimits,
    local: SocketAddr,
}

async fn connection(
    app: Arc<App>,
    http: &Builder<TokioExecutor>,
    site: Site,
    mut stream: TcpStream,
    peer: SocketAddr,
    permit: OwnedSemaphorePermit,
) {
    let Site {
        index,
        tls,
        proxy_protocol,
        proxy_from,
        limits,
        local,
    } = site;
    // Small writes (response heads, SSE events) must not wait ~40 ms for Nagle.
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%peer, "cannot set TCP_NODELAY: {error}");
    }
    let listener = local.to_string();
    let peer = if proxy_protocol {
        // Only a configured balancer may say who the client is.
        if !proxy_from.iter().any(|net| net.contains(peer.ip())) {
            app.metrics
                .proxy_header_failures
                .with_label_values(&[&listener])
                .inc();
            tracing::debug!(%peer, "refused: not in proxy_from");
            return;
        }
        match crate::edge::proxy::read_header(&mut stream, limits.header_timeout).await {
            Ok(client) => client.unwrap_or(peer),
            Err(error) => {
                app.metrics
                    .proxy_header_failures
                    .with_label_values(&[&listener])
                    .inc();
                tracing::debug!(%peer, "refused: {error}");
                return;
            }
        }
    } else {
        peer
    };
    // The slot goes with the connection's state: whatever serves the
    // connection last (an upgraded WebSocket, say) gives it back.
    let info = |scheme, protocol| {
        let open = app
            .metrics
            .connections
            .with_label_values(&[listener.as_str(), protocol]);
        ConnectionInfo::new(scheme, local, index, peer, Slot::new(permit, open))
    };
    if !tls {
        let info = info(Scheme::Http, "http");
        serve_http(app, http, &limits, info, stream).await;
        return;
    }
    let Some(config) = app.live.load().tls.get(index).cloned().flatten() else {
        tracing::error!(listener = %local, "no TLS configuration for a TLS listener");
        return;
    };
    match crate::edge::tls::handshake(config, stream, app.settings.tls_handshake_timeout).await {
        Ok(stream) => {
            let protocol = match stream.get_ref().1.alpn_protocol() {
                Some(b"h2") => "h2",
                // RFC 8737: the handshake was the whole TLS-ALPN-01 answer.
                Some(crate::edge::tls::ACME_TLS_ALPN) => return,
                _ => "http/1.1",
            };
            let info = info(Scheme::Https, protocol);
            serve_http(app, http, &limits, info, stream).await;
        }
        Err(error) => {
            app.metrics
                .tls_handshake_failures
                .with_label_values(&[&listener])
                .inc();
            tracing::debug!(%peer, "TLS handshake failed: {error}");
        }
    }
}

/// Serves HTTP on `io`: hyper's connection under the listener's limits,
/// each request through [`service::handle`].
async fn serve_http<IO>(
    app: Arc<App>,
    http: &Builder<TokioExecutor>,
    limits: &ListenerLimits,
    info: ConnectionInfo,
    io: IO,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let info = Arc::new(info);
    let drain = app.drain.clone();
    let service = {
        let info = Arc::clone(&info);
        move |request| service::handle(Arc::clone(&app), Arc::clone(&info), request)
    };
    conn::serve(http, limits, &drain, info, io, service).await;
}
