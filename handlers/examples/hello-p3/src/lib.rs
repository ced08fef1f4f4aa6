//! Hello over WASI 0.3: a `wasi:http/handler@0.3.0` export written with the
//! `wasip3` crate's `http` compatibility layer (plain `http` types in and
//! out). Built for wasm32-wasip2 like every handler here; wasmgate tells it
//! apart from a 0.2 component by its export.

use wasip3::http::types::{ErrorCode, Request, Response};
use wasip3::http_compat::{http_from_wasi_request, http_into_wasi_response};

wasip3::http::service::export!(Hello);

struct Hello;

impl wasip3::exports::http::handler::Guest for Hello {
    async fn handle(request: Request) -> Result<Response, ErrorCode> {
        let request = http_from_wasi_request(request)?;
        let greeting = format!(
            "Hello from wasmgate over WASI 0.3! You asked for {}\n",
            request.uri().path()
        );
        http_into_wasi_response(
            http::Response::builder()
                .header("content-type", "text/plain")
                .body(greeting)
                .map_err(|error| ErrorCode::InternalError(Some(error.to_string())))?,
        )
    }
}
