//! Helpers of the command line that are not on the request path.

pub mod devcert;
pub mod handler_build;
