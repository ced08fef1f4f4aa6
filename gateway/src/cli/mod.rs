//! Helpers of the `wasmgate` command that are not on the request path:
//! building the guest workspace ([`handler_build`], also compiled by the
//! tests' build script), rebuilding it on every edit ([`dev`]), a new
//! project ([`new`]), a
//! development certificate ([`devcert`]), and the operator's deployment and
//! signing commands ([`ops`]).
//!
//! May use: `devcert`, `handler_build` and `new` nothing else of the crate, `dev`
//! only `handler_build`; `ops` the config, the admin client and signing.
//! Only `main` imports these.

pub mod dev;
pub mod devcert;
pub mod handler_build;
pub mod new;
pub mod ops;
