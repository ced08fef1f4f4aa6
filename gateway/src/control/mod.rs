//! The control plane: the live snapshot and everything that changes or
//! watches the running gateway.
//!
//! [`live`] builds a [`live::Snapshot`] (routes, handlers with their
//! serving versions, TLS configurations) and is where requests read it;
//! [`versions`] plans which versions each handler serves; [`reload`]
//! rebuilds it on a file change, SIGHUP or the admin API; [`rollout`]
//! drives canaries and blue-green switches through the reloader, and
//! [`cluster_sync`] shares its decisions with a cluster's other nodes and
//! applies theirs;
//! [`admin`] is the operators' listener, guarded by [`token`], with the
//! deployment endpoints in [`operations`]; [`drain`] is the one shutdown
//! primitive; [`metrics`] holds every Prometheus collector.
//!
//! May use: [`crate::guest`], [`crate::http::router`] and
//! [`crate::edge::tls`] (to build a snapshot), [`crate::deploy`],
//! [`crate::app`], [`crate::config`], [`crate::cluster`]. [`drain`] and [`metrics`] import nothing of the crate:
//! every stage uses them.
//!
//! Invariant: a snapshot is built whole off the request path and published
//! with one `ArcSwap::store`, or not at all.

pub mod admin;
pub mod cluster_sync;
pub mod drain;
pub mod live;
pub mod metrics;
pub mod operations;
pub mod reload;
pub mod rollout;
pub mod token;
pub mod versions;
