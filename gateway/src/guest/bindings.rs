//! The Rust side of our streaming WIT package (`gateway/wit/`): both stream
//! worlds, generated once, for every module that speaks them.
//!
//! Invariant: the interfaces the two worlds share (`types`, `pubsub`) exist
//! once; the SSE world's bindings reuse the WebSocket world's, so one host
//! implementation serves both.

mod websocket_world {
    wasmtime::component::bindgen!({
        path: "wit",
        world: "websocket-service",
        exports: { default: async },
        require_store_data_send: true,
    });
}

mod sse_world {
    wasmtime::component::bindgen!({
        path: "wit",
        world: "sse-service",
        exports: { default: async },
        require_store_data_send: true,
        with: {
            "wasmgate:streaming/types": super::websocket_world::wasmgate::streaming::types,
            "wasmgate:streaming/pubsub": super::websocket_world::wasmgate::streaming::pubsub,
        },
    });
}

pub use sse_world::wasmgate::streaming::sse;
pub use sse_world::{SseService, SseServicePre};
pub use websocket_world::wasmgate::streaming::{pubsub, types, websocket};
pub use websocket_world::{WebsocketService, WebsocketServicePre};
