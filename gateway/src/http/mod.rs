//! HTTP: a connection's requests, routed and answered.
//!
//! [`conn`] serves one connection with hyper (HTTP/1.1 and HTTP/2, drain
//! aware); [`service`] answers each request from the live snapshot:
//! [`front_door`] policy first (ACME HTTP-01, HTTPS redirect, HSTS,
//! forwarding headers), then [`router`], then the guest, or [`upgrade`] for
//! stream routes, whose connections [`websocket`] and [`sse`] carry on their
//! own tasks under [`stream_slots`]; [`invoke`] answers the routes that
//! publish to a channel or call a component's function, [`static_files`]
//! those that serve a directory; [`layers`] puts a route's CORS and header
//! rules around whatever serves it. [`error`] is the one rescue point,
//! [`body`] the response body type, [`access`] the access log.
//!
//! May use: [`crate::guest`] (handlers and stream sessions), [`crate::app`],
//! [`crate::control::live`] (the snapshot type), [`crate::control::metrics`],
//! [`crate::control::drain`], [`crate::config`], and the ACME state of
//! [`crate::edge::acme`] for HTTP-01 answers. [`body`] and [`error`] are the
//! vocabulary [`crate::guest`] answers in, and import nothing else here.
//!
//! Invariant: a request loads the snapshot once and every failure leaves
//! through [`error::rescue`].

pub mod access;
pub mod body;
pub mod conn;
pub mod error;
pub mod front_door;
pub mod invoke;
pub mod layers;
pub mod router;
pub mod service;
pub mod sse;
pub mod static_files;
pub mod stream_slots;
pub mod upgrade;
pub mod websocket;
