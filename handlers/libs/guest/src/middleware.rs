//! HTTP middleware for wasmgate's route chains: a middleware is a plain
//! `wasi:http` handler that either answers a request itself or passes it on
//! to the next link of its route's chain by sending it to the authority
//! `next` (`http://next/<path>`); the gateway delivers it in-process to the
//! next middleware or to the route's handler, with the original scheme and
//! host, and the response comes back as the answer to that request.

use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    Fields, IncomingBody, IncomingRequest, IncomingResponse, OutgoingBody, OutgoingRequest,
    OutgoingResponse, ResponseOutparam, Scheme,
};
use wasip2::io::poll::{Pollable, poll};
use wasip2::io::streams::{InputStream, OutputStream, StreamError};

/// The authority that means "the next link of this route's chain".
pub const NEXT: &str = "next";

/// Sends `request` (method, path, headers, body) to the next link and
/// answers `out` with its response, adding `extra` response headers on the
/// way back. Both bodies stream at once (the next link may answer while the
/// request body is still arriving); a failure to reach the next link
/// answers 502.
pub fn pass_on(request: IncomingRequest, out: ResponseOutparam, extra: &[(&str, &str)]) {
    let (outgoing, body) = match prepare(&request) {
        Ok(prepared) => prepared,
        Err(error) => return bad_gateway(out, &error),
    };
    let pending = match outgoing_handler::handle(outgoing, None) {
        Ok(pending) => pending,
        Err(code) => return bad_gateway(out, &format!("{code:?}")),
    };
    let upload = request
        .consume()
        .ok()
        .and_then(|incoming| Some((incoming.stream().ok()?, incoming)))
        .and_then(|(from, incoming)| {
            Some((
                Pump {
                    from,
                    to: body.write().ok()?,
                },
                incoming,
            ))
        });
    let Some((pump, incoming)) = upload else {
        return bad_gateway(out, "body streams taken twice");
    };
    let mut upload = Some(Piped {
        pump,
        sink: body,
        source: incoming,
    });
    let mut out = Some(out);
    let mut download: Option<Piped> = None;
    loop {
        let mut waits: Vec<Pollable> = Vec::new();
        if let Some(piped) = &upload {
            match piped.pump.run() {
                Some(wait) => waits.push(wait),
                None => upload.take().into_iter().for_each(Piped::finish),
            }
        }
        if out.is_some() {
            match pending.get() {
                None => waits.push(pending.subscribe()),
                Some(answer) => {
                    let Some(out) = out.take() else { return };
                    match answer {
                        Ok(Ok(response)) => match answer_with(response, out, extra) {
                            Some(piped) => download = Some(piped),
                            None => return,
                        },
                        Ok(Err(code)) => return bad_gateway(out, &format!("{code:?}")),
                        Err(()) => return bad_gateway(out, "response taken twice"),
                    }
                }
            }
        }
        if let Some(piped) = &download {
            match piped.pump.run() {
                Some(wait) => waits.push(wait),
                None => {
                    download.take().into_iter().for_each(Piped::finish);
                    // The answer is complete; a request body still being
                    // sent is no longer wanted.
                    return;
                }
            }
        }
        let refs: Vec<&Pollable> = waits.iter().collect();
        poll(&refs);
    }
}

fn bad_gateway(out: ResponseOutparam, error: &str) {
    crate::respond(out, 502, "text/plain", format!("{error}\n").as_bytes());
}

/// The outgoing copy of `request`, addressed to the next link, and its body.
fn prepare(request: &IncomingRequest) -> Result<(OutgoingRequest, OutgoingBody), String> {
    let outgoing = OutgoingRequest::new(request.headers().clone());
    outgoing
        .set_method(&request.method())
        .map_err(|()| "bad method")?;
    outgoing
        .set_path_with_query(request.path_with_query().as_deref())
        .map_err(|()| "bad path")?;
    outgoing
        .set_scheme(Some(&Scheme::Http))
        .map_err(|()| "bad scheme")?;
    outgoing
        .set_authority(Some(NEXT))
        .map_err(|()| "bad authority")?;
    let body = outgoing.body().map_err(|()| "body taken twice")?;
    Ok((outgoing, body))
}

/// Sends the response head (with `extra` added) and pipes its body.
fn answer_with(
    response: IncomingResponse,
    out: ResponseOutparam,
    extra: &[(&str, &str)],
) -> Option<Piped> {
    let headers: Fields = response.headers().clone();
    for (name, value) in extra {
        let _ = headers.append(name, &value.as_bytes().to_vec());
    }
    let answer = OutgoingResponse::new(headers);
    let _ = answer.set_status_code(response.status());
    let body = answer.body().ok()?;
    ResponseOutparam::set(out, Ok(answer));
    let incoming = response.consume().ok()?;
    let pump = Pump {
        from: incoming.stream().ok()?,
        to: body.write().ok()?,
    };
    Some(Piped {
        pump,
        sink: body,
        source: incoming,
    })
}

/// A body being copied, with the resources its streams belong to.
struct Piped {
    pump: Pump,
    sink: OutgoingBody,
    source: IncomingBody,
}

impl Piped {
    /// Ends the copy: streams first, then their bodies.
    fn finish(self) {
        let Self { pump, sink, source } = self;
        drop(pump);
        drop(source);
        let _ = OutgoingBody::finish(sink, None);
    }
}

/// Copies one stream into another without blocking.
struct Pump {
    from: InputStream,
    to: OutputStream,
}

impl Pump {
    /// Copies what can be copied now; `None` when done (the source ended or
    /// the sink closed), else what to wait for before the next try.
    fn run(&self) -> Option<Pollable> {
        loop {
            let room = match self.to.check_write() {
                Ok(0) => return Some(self.to.subscribe()),
                Ok(room) => room.min(64 * 1024),
                Err(_) => return None,
            };
            match self.to.splice(&self.from, room) {
                Ok(0) => return Some(self.from.subscribe()),
                Ok(_) => {}
                Err(StreamError::Closed) => {
                    let _ = self.to.blocking_flush();
                    return None;
                }
                Err(_) => return None,
            }
        }
    }
}
