//! Fixture: `GET /fetch?url=URL` sends `GET URL` from inside the guest and
//! answers `200` with the status and body it got back, or `502` with the
//! `wasi:http` error code (e.g. `HTTP-request-denied`) when the request failed.

use std::io::Read as _;

use guest::wasip2;
use wasip2::http::outgoing_handler;
use wasip2::http::types::{Fields, IncomingRequest, OutgoingRequest, ResponseOutparam, Scheme};

struct Fetch;

impl wasip2::exports::http::incoming_handler::Guest for Fetch {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let query = request.path_with_query().unwrap_or_default();
        let Some(url) = query
            .split_once("url=")
            .map(|(_, url)| url.split('&').next().unwrap_or_default().to_string())
        else {
            return guest::respond(out, 400, "text/plain", b"give ?url=http://host:port/path\n");
        };
        match fetch(&url) {
            Ok((status, body)) => {
                let text = format!("{status}\n{body}");
                guest::respond(out, 200, "text/plain", text.as_bytes());
            }
            Err(error) => guest::respond(out, 502, "text/plain", format!("{error}\n").as_bytes()),
        }
    }
}

fn fetch(url: &str) -> Result<(u16, String), String> {
    let (scheme, rest) = url.split_once("://").ok_or("not an absolute URL")?;
    let (authority, path) = match rest.find('/') {
        Some(slash) => (&rest[..slash], &rest[slash..]),
        None => (rest, "/"),
    };
    let request = OutgoingRequest::new(Fields::new());
    request
        .set_scheme(Some(&if scheme == "https" {
            Scheme::Https
        } else {
            Scheme::Http
        }))
        .map_err(|()| "bad scheme")?;
    request
        .set_authority(Some(authority))
        .map_err(|()| "bad authority")?;
    request
        .set_path_with_query(Some(path))
        .map_err(|()| "bad path")?;
    let pending = outgoing_handler::handle(request, None).map_err(|code| format!("{code:?}"))?;
    pending.subscribe().block();
    let response = pending
        .get()
        .ok_or("no response")?
        .map_err(|()| "response taken twice")?
        .map_err(|code| format!("{code:?}"))?;
    let status = response.status();
    let body = response.consume().map_err(|()| "body taken twice")?;
    let mut text = String::new();
    {
        let mut stream = body.stream().map_err(|()| "stream taken twice")?;
        stream
            .read_to_string(&mut text)
            .map_err(|error| error.to_string())?;
    }
    Ok((status, text))
}

wasip2::http::proxy::export!(Fetch);
