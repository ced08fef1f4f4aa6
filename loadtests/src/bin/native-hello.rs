//! The ceiling to measure against: a plain hyper server answering exactly what
//! the `hello` component answers, with the same connection handling as the
//! gateway (hyper-util auto builder, TCP_NODELAY, one task per connection).
//! Prints `listening on http://ADDR` like wasmgate.

use std::convert::Infallible;

use bytes::Bytes;
use http::{Response, header};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

const BODY: &str = "Hello from wasmgate!\n";

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".into());
    let listener = TcpListener::bind(&addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                eprintln!("accept: {error}");
                continue;
            }
        };
        stream.set_nodelay(true)?;
        tokio::spawn(async move {
            let service = service_fn(|_request| async {
                let response = Response::builder()
                    .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
                    .body(Full::new(Bytes::from_static(BODY.as_bytes())))
                    .expect("static response");
                Ok::<_, Infallible>(response)
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
