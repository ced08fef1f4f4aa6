//! HTTP: one connection's requests, routed and answered.

pub mod access;
pub mod body;
pub mod conn;
pub mod error;
pub mod front_door;
pub mod router;
pub mod service;
pub mod sse;
pub mod stream_slots;
pub mod upgrade;
pub mod websocket;
