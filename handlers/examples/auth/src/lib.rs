//! Example middleware (`middleware = ["auth"]` on a route): answers 401
//! unless the request's `Authorization` is `Bearer <config.token>`; passes
//! every other request on to the rest of the route's chain.

mod bindings {
    wit_bindgen::generate!({
        inline: "
            package wasmgate:auth;
            world auth {
                import wasi:config/store@0.2.0-rc.1;
            }
        ",
        path: ["../../../examples/greeter/wit/deps/config"],
        world: "wasmgate:auth/auth",
        generate_all,
    });
}

use guest::wasip2;
use wasip2::http::types::{IncomingRequest, ResponseOutparam};

struct Auth;

impl wasip2::exports::http::incoming_handler::Guest for Auth {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let token = bindings::wasi::config::store::get("token").ok().flatten();
        let presented = request
            .headers()
            .get("authorization")
            .into_iter()
            .next()
            .and_then(|value| String::from_utf8(value).ok());
        let allowed = match (&token, &presented) {
            (Some(token), Some(presented)) => *presented == format!("Bearer {token}"),
            _ => false,
        };
        if allowed {
            guest::middleware::pass_on(request, out, &[]);
        } else {
            guest::respond(out, 401, "text/plain", b"401 Unauthorized\n");
        }
    }
}

wasip2::http::proxy::export!(Auth);
