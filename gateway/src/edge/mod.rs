//! The edge: listening sockets and what happens to a connection before HTTP.

pub mod acme;
pub mod activation;
pub mod handover;
pub mod listener;
pub mod proxy;
pub mod tls;
