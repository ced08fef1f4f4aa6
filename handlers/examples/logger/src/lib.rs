//! Greeter tutorial: interceptor advice that writes a line before and after
//! every call it is put around (the gateway turns them into log lines). With
//! `config.deny = "TEXT"`, it refuses any call whose arguments contain TEXT.

mod bindings {
    wit_bindgen::generate!({
        inline: "
            package wasmgate:logger;
            world logger {
                import wasi:config/store@0.2.0-rc.1;
                export wasmgate:interceptor/advice@0.1.0;
            }
        ",
        path: [
            "../../../gateway/wit/interceptor",
            "../../../examples/greeter/wit/deps/config",
        ],
        world: "wasmgate:logger/logger",
        generate_all,
    });
}

use bindings::exports::wasmgate::interceptor::advice::{Call, Guest};

struct Logger;

fn arguments(call: &Call) -> String {
    call.arguments
        .iter()
        .map(|argument| format!("{}: {}", argument.name, argument.value))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Guest for Logger {
    fn before(call: Call) -> Result<(), String> {
        let arguments = arguments(&call);
        println!("Before {}({arguments})", call.function);
        match deny() {
            Some(denied) if arguments.contains(&denied) => {
                Err(format!("{} may not be called with {denied}", call.function))
            }
            _ => Ok(()),
        }
    }

    fn after(call: Call, returned: String) {
        println!("After {} -> {returned}", call.function);
    }
}

/// The text whose calls are refused, from `config.deny`.
fn deny() -> Option<String> {
    bindings::wasi::config::store::get("deny").ok().flatten()
}

bindings::export!(Logger with_types_in bindings);
