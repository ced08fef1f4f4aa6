//! Rust guest bindings for `wasmgate:streaming@0.1.0` (gateway/wit): one
//! module per world, each with its export macro.

/// The `websocket-service` world; export a handler with [`export_websocket!`].
pub mod websocket {
    wit_bindgen::generate!({
        path: "../../../gateway/wit",
        world: "websocket-service",
        pub_export_macro: true,
        export_macro_name: "export_websocket",
        default_bindings_module: "streaming::websocket",
    });
}

/// The `sse-service` world; export a handler with [`export_sse!`].
pub mod sse {
    wit_bindgen::generate!({
        path: "../../../gateway/wit",
        world: "sse-service",
        pub_export_macro: true,
        export_macro_name: "export_sse",
        default_bindings_module: "streaming::sse",
    });
}
