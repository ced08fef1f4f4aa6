//! Greeter tutorial, steps 2 on: greets `?name=` (default "World") through
//! the `translate` import, which the gateway wires to a translator component
//! at load time, into the locale its configuration gives (`config.locale`).
//! Also exports `greet`, so the gateway can invoke it without HTTP.

mod bindings {
    wit_bindgen::generate!({
        path: "../../../examples/greeter/wit",
        world: "greeter",
        generate_all,
    });
}

use bindings::wasi::config::store;
use bindings::wasmgate::greeter::translate::translate;
use guest::wasip2;
use wasip2::http::types::{IncomingRequest, ResponseOutparam};

/// The locale when the configuration sets none: the tutorial's step 2
/// greets in Hawaiian before step 3 configures a locale.
const DEFAULT_LOCALE: &str = "haw-US";

struct Greeter;

impl bindings::exports::wasmgate::greeter::greet::Guest for Greeter {
    fn greet(name: String) -> String {
        let locale = match store::get("locale") {
            Ok(Some(locale)) => locale,
            Ok(None) | Err(_) => DEFAULT_LOCALE.to_string(),
        };
        translate(&format!("Hello, {name}!"), &locale)
    }
}

impl wasip2::exports::http::incoming_handler::Guest for Greeter {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let query = request.path_with_query().unwrap_or_default();
        let name = query
            .split_once("name=")
            .map(|(_, rest)| rest.split('&').next().unwrap_or_default())
            .filter(|name| !name.is_empty())
            .unwrap_or("World");
        let greeting = <Greeter as bindings::exports::wasmgate::greeter::greet::Guest>::greet(
            name.to_string(),
        );
        guest::respond(out, 200, "text/plain; charset=utf-8", greeting.as_bytes());
    }
}

bindings::export!(Greeter with_types_in bindings);
wasip2::http::proxy::export!(Greeter);
