//! Outgoing HTTP from a guest (`wasi:http/outgoing-handler`), the one
//! request at a time that examples and fixtures need.

use std::io::Read as _;

use wasip2::http::outgoing_handler;
use wasip2::http::types::{Fields, OutgoingRequest, Scheme};

/// `GET url` (`http://` or `https://`): its status and at most `max_body`
/// bytes of its body, as text; or why not (a `wasi:http` error code).
pub fn get(url: &str, max_body: u64) -> Result<(u16, String), String> {
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
        let stream = body.stream().map_err(|()| "stream taken twice")?;
        stream
            .take(max_body)
            .read_to_string(&mut text)
            .map_err(|error| error.to_string())?;
    }
    Ok((status, text))
}
