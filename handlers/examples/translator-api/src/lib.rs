//! Greeter tutorial, step 4: a translator that asks a translation API,
//! `GET {config.api}/translate?locale=L&text=T`, and returns its answer's
//! body (the text unchanged when the API fails). It needs outgoing HTTP and
//! configuration, both granted to it (and only it) by the gateway's config.

mod bindings {
    wit_bindgen::generate!({
        path: "../../../examples/greeter/wit",
        world: "translator-api",
        generate_all,
    });
}

use bindings::wasi::config::store;

struct Translator;

impl bindings::exports::wasmgate::greeter::translate::Guest for Translator {
    fn translate(text: String, locale: String) -> String {
        let Ok(Some(api)) = store::get("api") else {
            eprintln!("config.api is not set");
            return text;
        };
        match ask(&api, &text, &locale) {
            Ok(translated) => translated,
            Err(error) => {
                eprintln!("the translation API failed: {error}");
                text
            }
        }
    }
}

/// Percent-encodes a query value.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (byte as char).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

fn ask(api: &str, text: &str, locale: &str) -> Result<String, String> {
    if !api.starts_with("http://") {
        return Err("config.api must start with http://".into());
    }
    let url = format!(
        "{}/translate?locale={}&text={}",
        api.trim_end_matches('/'),
        encode(locale),
        encode(text)
    );
    match guest::client::get(&url, 64 * 1024)? {
        (200, translated) => Ok(translated),
        (status, _) => Err(format!("status {status}")),
    }
}

bindings::export!(Translator with_types_in bindings);
