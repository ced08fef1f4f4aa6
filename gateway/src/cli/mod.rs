//! Helpers of the `wasmgate` command that are not on the request path:
//! building the guest workspace ([`handler_build`], also compiled by the
//! tests' build script) and a development certificate ([`devcert`]).
//!
//! May use: nothing else of the crate (the command line calls these and
//! [`crate::start`]).

pub mod devcert;
pub mod handler_build;
