//! The edge: listening sockets and a connection's life before HTTP.
//!
//! [`listener`] binds (or takes over, [`handover`], [`activation`]) the
//! public sockets and runs one accept loop per listener; each accepted
//! connection gets its own task, which reads a PROXY header ([`proxy`]) when
//! the listener takes one, completes the TLS handshake ([`tls`], with
//! certificates from files or from [`acme`]) and hands the stream to
//! [`crate::http::conn`].
//!
//! May use: [`crate::http`] (to serve a connection), [`crate::app`],
//! [`crate::config`], [`crate::control::metrics`] and
//! [`crate::control::drain`]. [`tls`] and [`acme`] are also used by
//! [`crate::control::live`], which builds the TLS configuration of each
//! generation; they import nothing above them.
//!
//! Invariant: an accept loop never dies on a transient error, and nothing a
//! client does before its first HTTP byte runs on the accept loop's task.

pub mod acme;
pub mod activation;
pub mod handover;
pub mod listener;
pub mod proxy;
pub mod tls;
