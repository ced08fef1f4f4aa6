//! Helpers of the `wasmgate` command that are not on the request path:
//! building every component source ([`toolchain`]: the Rust workspace
//! through [`handler_build`], also compiled by the tests' build script;
//! npm and Python projects), rebuilding on every edit ([`dev`]), a new
//! project ([`new`]), a development certificate ([`devcert`]), and the
//! operator's deployment and signing commands ([`ops`]).
//!
//! May use: `devcert`, `handler_build` and `new` nothing else of the crate,
//! `toolchain` only `handler_build`, `dev` only `toolchain`; `ops` the
//! config, the admin client and signing. Only `main` imports these.

pub mod dev;
pub mod devcert;
pub mod handler_build;
pub mod new;
pub mod ops;
pub mod toolchain;
