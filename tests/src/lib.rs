//! The end-to-end harness: starts the real `wasmgate` binary on loopback
//! ports ([`TestGateway`]), talks to it with real HTTP/1.1, h2c and h2-over-TLS
//! clients ([`client`]) and makes throw-away certificates ([`certs`]).
//!
//! Invariant: no fixed ports (every listener binds `127.0.0.1:0` and the
//! harness reads the bound address from the gateway's `listening on` lines)
//! and no sleeps where the gateway signals readiness.

pub mod certs;
pub mod client;
mod gateway;

pub use gateway::{TestGateway, handlers_dir, run_cli, wasmgate_bin};
