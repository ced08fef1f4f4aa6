//! Example handler: describes the request (method, path, query, headers) as
//! JSON; with a `body` query parameter it streams the request body back
//! instead, chunk by chunk, so neither side buffers it whole; with `length`
//! it reads the whole body first and answers its length (400 if the read
//! fails, e.g. over the gateway's body limit).

use guest::wasip2;
use serde_json::json;
use wasip2::http::types::{IncomingBody, IncomingRequest, Method, ResponseOutparam};

struct Echo;

impl wasip2::exports::http::incoming_handler::Guest for Echo {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path_with_query = request.path_with_query().unwrap_or_default();
        let (path, query) = match path_with_query.split_once('?') {
            Some((path, query)) => (path, query),
            None => (path_with_query.as_str(), ""),
        };
        let has = |key: &str| {
            query
                .split('&')
                .any(|pair| pair.split('=').next() == Some(key))
        };
        if has("body") {
            stream_body_back(request, out);
            return;
        }
        if has("length") {
            count_body(request, out);
            return;
        }
        let headers: Vec<_> = request
            .headers()
            .entries()
            .into_iter()
            .map(|(name, value)| json!([name, String::from_utf8_lossy(&value)]))
            .collect();
        let description = json!({
            "method": method_name(&request.method()),
            "path": path,
            "query": query,
            "headers": headers,
        });
        let mut body = description.to_string();
        body.push('\n');
        guest::respond(out, 200, "application/json", body.as_bytes());
    }
}

fn stream_body_back(request: IncomingRequest, out: ResponseOutparam) {
    let incoming = request.consume().expect("body is consumed once");
    let mut input = incoming.stream().expect("stream is taken once");
    let mut response =
        guest::Streaming::start(out, 200, &[("content-type", "application/octet-stream")]);
    std::io::copy(&mut input, response.stream()).expect("body streams through");
    drop(input);
    IncomingBody::finish(incoming);
    response.finish();
}

fn count_body(request: IncomingRequest, out: ResponseOutparam) {
    let incoming = request.consume().expect("body is consumed once");
    let read = {
        let mut input = incoming.stream().expect("stream is taken once");
        std::io::copy(&mut input, &mut std::io::sink())
    };
    match read {
        Ok(length) => {
            IncomingBody::finish(incoming);
            guest::respond(out, 200, "text/plain", format!("{length}\n").as_bytes());
        }
        Err(error) => guest::respond(
            out,
            400,
            "text/plain",
            format!("reading the body failed: {error}\n").as_bytes(),
        ),
    }
}

fn method_name(method: &Method) -> String {
    match method {
        Method::Get => "GET".into(),
        Method::Head => "HEAD".into(),
        Method::Post => "POST".into(),
        Method::Put => "PUT".into(),
        Method::Delete => "DELETE".into(),
        Method::Connect => "CONNECT".into(),
        Method::Options => "OPTIONS".into(),
        Method::Trace => "TRACE".into(),
        Method::Patch => "PATCH".into(),
        Method::Other(other) => other.clone(),
    }
}

wasip2::http::proxy::export!(Echo);
