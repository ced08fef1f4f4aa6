//! wasmgate: an edge HTTP gateway that serves WebAssembly components
//! implementing `wasi:http/incoming-handler` (the WASI 0.2 proxy world).
//!
//! # Life of a request
//!
//! ```text
//! listener::accept_loop ──spawn──▶ tls::handshake (timeout, own task) ──▶ conn::serve
//!     (hyper-util auto: HTTP/1.1 keep-alive, HTTP/2 by ALPN or h2c prior knowledge)
//!   ──▶ service::handle
//!         snapshot = app.live.load_full()            one generation for the whole request
//!         route    = snapshot.router.route(host, path)  pure
//!         handler.serve(request)                     guest::handler: ready instance from the pool,
//!                                                    guest on its own task, body streamed both ways
//!         Err(e) ──▶ error::rescue(e)                status by blame, no internals in the body
//! ```
//!
//! Start-up follows the same modules in the other direction: [`config`]
//! validates the file, the [`admin`] listener comes up (answering "starting"),
//! [`live::build`] loads certificates and compiles every component, and only
//! then does [`listener::bind`] take the public ports.

pub mod app;
pub mod cli;
pub mod config;
pub mod control;
pub mod edge;
pub mod guest;
pub mod http;
pub mod start;

pub use start::{Gateway, Prepared, StartError, file_problems};
