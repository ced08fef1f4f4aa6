//! Fixture: answers the environment variables the guest can see, as a JSON
//! object (what a handler's `env` grant lets through).

use guest::wasip2;
use wasip2::http::types::{IncomingRequest, ResponseOutparam};

struct EnvDump;

impl wasip2::exports::http::incoming_handler::Guest for EnvDump {
    fn handle(_request: IncomingRequest, out: ResponseOutparam) {
        let env: serde_json::Map<String, serde_json::Value> =
            wasip2::cli::environment::get_environment()
                .into_iter()
                .map(|(key, value)| (key, serde_json::Value::String(value)))
                .collect();
        let body = serde_json::Value::Object(env).to_string();
        guest::respond(out, 200, "application/json", body.as_bytes());
    }
}

wasip2::http::proxy::export!(EnvDump);
