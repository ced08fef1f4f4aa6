//! wasmgate: an edge HTTP gateway that serves WebAssembly components
//! implementing `wasi:http/incoming-handler` (the WASI 0.2 proxy world) and
//! wasmgate's own streaming worlds (WebSocket, Server-Sent Events).
//!
//! This page is the map; `docs/ARCHITECTURE.md` tells the same story at
//! length.
//!
//! # Life of a request
//!
//! ```text
//! edge::listener::accept_loop        connection slot before accept; never dies on EMFILE
//!   ──spawn──▶ edge::proxy::read_header   (listeners with proxy_protocol)
//!   ──▶ edge::tls::handshake               (TLS listeners; timeout, in the connection's task)
//!   ──▶ http::conn::serve              hyper-util auto: HTTP/1.1 keep-alive, h2 by ALPN or h2c; drain-aware
//!   ──▶ http::service::handle          per request:
//!         snapshot = app.live.load_full()             one generation for the whole request
//!         http::front_door                            ACME HTTP-01, HTTPS redirect, forwarding headers
//!         route = snapshot.router.route(host, path)   http::router: pure, most specific wins
//!         publish / invoke routes                     http::invoke: a channel message (guest::pubsub),
//!                                                     or a component's function (guest::wire)
//!         version = deployed.place(headers, client)   deploy::split: pin, else weighted bucket
//!         handler.serve(request)                      guest::handler: instance from guest::pool,
//!                                                     guest on its own task, bodies streamed both ways;
//!                                                     through guest::chain first on middleware routes;
//!                                                     wired imports call components (guest::wire)
//!         or http::upgrade                            WebSocket / SSE routes: http::websocket, http::sse
//!                                                     on their own task, guest::websocket / guest::sse calls
//!         Err(e) ──▶ http::error::rescue(e)           status by blame, no internals in the body
//!   ──▶ http::access                   metrics and the access-log line when the body ends
//! ```
//!
//! Start-up ([`start`]) follows the stages in the other direction: [`config`]
//! validates the file, the [`control::admin`] listener comes up (answering
//! "starting"), [`control::live::build`] loads certificates and compiles
//! every component, and only then does [`edge::listener::bind`] take the
//! public ports. A reload ([`control::reload`]) builds the next
//! [`control::live::Snapshot`] off the request path and publishes it with one
//! store into [`app::App::live`].
//!
//! # Layout
//!
//! In request order; a module calls down this list, never up it (the stages
//! read the shared state in [`app`] and [`control::live`], which import none
//! of them). `gateway/tests/layout.rs` checks that no two modules import each
//! other, directly or round about.
//!
//! - [`edge`]: listening sockets and a connection's life before HTTP
//!   (accept, PROXY header, TLS, ACME, socket handover and activation).
//! - [`http`]: a connection's requests: hyper connection, per-request
//!   service, front-door policy, router, stream routes, bodies, errors,
//!   access log.
//! - [`cluster`]: gateways that share a NATS server act as one: pub/sub
//!   relayed between nodes, and each node's connection state.
//! - [`guest`]: everything that touches wasmtime: engine, compile cache,
//!   components, store data, instance pools, handlers, streams, pub/sub,
//!   and composition (wired imports, capabilities, interceptors, middleware
//!   chains, channel subscriptions).
//! - [`control`]: the live snapshot and how it changes (reload, watcher,
//!   rollouts, admin API), the drain, metrics.
//! - [`deploy`]: what safe deployments decide on: the version store and
//!   history, the traffic split, the canary verdict, signatures, the audit
//!   trail.
//! - [`config`]: the file, parsed and checked into a typed [`config::Config`].
//! - [`app`]: the state shared by a running gateway, and what survives a
//!   hot swap.
//! - [`start`]: start-up, serving and the drain, for `main`.
//! - [`cli`]: helpers of the command line that are not on the request path.
//! - [`private_files`]: directories and files only this user may write.

// Every public item says what it is: `cargo doc` is the crate map's detail.
#![warn(missing_docs)]

pub mod app;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod control;
pub mod deploy;
pub mod edge;
pub mod guest;
pub mod http;
pub mod private_files;
pub mod start;

pub use start::{Gateway, Prepared, StartError, file_problems};
