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

use std::io::Read as _;

use bindings::wasi::config::store;
use guest::wasip2;
use wasip2::http::outgoing_handler;
use wasip2::http::types::{Fields, OutgoingRequest, Scheme};

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
    let authority = api
        .strip_prefix("http://")
        .ok_or("config.api must start with http://")?
        .trim_end_matches('/');
    let request = OutgoingRequest::new(Fields::new());
    request
        .set_scheme(Some(&Scheme::Http))
        .map_err(|()| "bad scheme")?;
    request
        .set_authority(Some(authority))
        .map_err(|()| "bad authority")?;
    let path = format!("/translate?locale={}&text={}", encode(locale), encode(text));
    request
        .set_path_with_query(Some(&path))
        .map_err(|()| "bad path")?;
    let pending = outgoing_handler::handle(request, None).map_err(|code| format!("{code:?}"))?;
    pending.subscribe().block();
    let response = pending
        .get()
        .ok_or("no response")?
        .map_err(|()| "response taken twice")?
        .map_err(|code| format!("{code:?}"))?;
    if response.status() != 200 {
        return Err(format!("status {}", response.status()));
    }
    let body = response.consume().map_err(|()| "body taken twice")?;
    let mut translated = String::new();
    {
        let stream = body.stream().map_err(|()| "stream taken twice")?;
        stream
            .take(64 * 1024)
            .read_to_string(&mut translated)
            .map_err(|error| error.to_string())?;
    }
    Ok(translated)
}

bindings::export!(Translator with_types_in bindings);
