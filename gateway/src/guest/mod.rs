//! The guest boundary: everything that touches wasmtime.
//!
//! [`engine`] owns the process-wide engine and epoch clock, [`component`]
//! turns files into type-checked pre-instances ([`cache`] keeps their machine
//! code on disk), [`host`] is what a guest's store may reach ([`outbound`]
//! its outgoing requests, [`log`] its stdout and stderr), [`pool`] keeps instances ready and [`handler`]
//! runs one request through one instance. [`stream`], [`websocket`] and
//! [`sse`] hold the guest calls of long-lived streams, connected through
//! [`pubsub`]; [`bindings`] is our WIT (streams, interceptor advice),
//! generated once. Composition: [`capability`] decides what each import
//! needs, [`wire`] serves a component's imports from other components
//! (with interceptors' advice, values rendered by [`render`]), [`chain`]
//! runs a route's middleware, [`channel`] keeps components subscribed to
//! channels. [`resident`] supervises resident components (their records
//! and restart decisions in [`supervision`]).
//!
//! May use: [`crate::config`], [`crate::control::metrics`], and the
//! response vocabulary of [`crate::http::body`] and [`crate::http::error`].
//!
//! Invariant: nothing outside this module sees a wasmtime store; the request
//! path sees only [`Handler::serve`] and the stream sessions' calls.

pub mod bindings;
pub mod cache;
mod capability;
pub mod chain;
pub mod channel;
pub mod command;
pub mod component;
pub mod engine;
mod handler;
mod host;
mod log;
mod outbound;
mod pool;
pub mod pubsub;
mod render;
pub mod resident;
pub mod sse;
pub mod stream;
pub mod supervision;
pub mod websocket;
pub mod wire;

pub use cache::{CompileCache, ContentHash};
pub use chain::Chain;
pub use component::{ComponentFile, HttpPre, LoadError, Loaded, Origin, Pre};
pub use engine::GuestEngine;
pub use handler::{Handler, Services, granted_env};
pub use host::Host;
pub use outbound::{NextHop, OutboundClient};
pub use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
pub use wire::Arguments;
