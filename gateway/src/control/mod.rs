//! The control plane: the live snapshot, reloads, drain, admin API, metrics.

pub mod admin;
pub mod drain;
pub mod live;
pub mod metrics;
pub mod reload;
