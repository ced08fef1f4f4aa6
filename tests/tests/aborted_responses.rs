//! A response the guest cannot finish is never passed off as complete: once
//! its head is out, a guest that runs past its time limit (or traps, or runs
//! out of memory) aborts the response. HTTP/1.1 closes the connection with no
//! final chunk, HTTP/2 resets the stream, and the access log says `aborted`.

use std::time::Duration;

use http::StatusCode;
use http_body_util::BodyExt as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wasmgate_tests::client::Client;
use wasmgate_tests::{TestGateway, hello_and_echo};

/// 100 chunks 100 ms apart under a 1 s limit: the guest is cut off mid-body.
const CUT_OFF: &str = "/slow?chunks=100&pause_ms=100";

fn gateway() -> TestGateway {
    TestGateway::start(&hello_and_echo(
        "[handler.slow]\nlimits = { timeout = \"1s\" }\n\n[[route]]\npath = \"/slow\"\nhandler = \"slow\"\n",
    ))
}

#[tokio::test]
async fn http1_closes_a_cut_off_response_without_its_last_chunk() {
    let gateway = gateway();
    let mut raw = TcpStream::connect(gateway.http()).await.expect("connect");
    raw.write_all(format!("GET {CUT_OFF} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())
        .await
        .expect("write");
    // Until the connection closes, or the body ends like a complete one
    // (after which a keep-alive connection would stay open).
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let read = tokio::time::timeout(Duration::from_secs(10), raw.read(&mut buffer))
            .await
            .expect("the response goes on or ends");
        match read {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buffer[..n]),
        }
        if answer.ends_with(b"0\r\n\r\n") {
            break;
        }
    }
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("chunk 0\n"), "{text}");
    assert!(
        !text.ends_with("0\r\n\r\n"),
        "a cut-off body ended like a complete one:\n{text}"
    );
    let line = gateway.wait_for_log("outcome=aborted");
    assert!(line.contains("status=200"), "{line}");
}

#[tokio::test]
async fn http2_resets_the_stream_of_a_cut_off_response() {
    let gateway = gateway();
    let mut client = Client::h2c(gateway.http()).await;
    let response = client.get_streaming(CUT_OFF).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body = tokio::time::timeout(Duration::from_secs(10), response.into_body().collect())
        .await
        .expect("the stream ends");
    assert!(body.is_err(), "a cut-off body ended like a complete one");
    // The connection itself carries on.
    assert_eq!(client.get("/hello").await.status, StatusCode::OK);
    gateway.wait_for_log("outcome=aborted");
}

#[tokio::test]
async fn a_complete_streamed_response_still_ends_cleanly() {
    let gateway = gateway();
    let mut client = Client::h2c(gateway.http()).await;
    let response = client.get_streaming("/slow?chunks=3&pause_ms=10").await;
    let body = response
        .into_body()
        .collect()
        .await
        .expect("a finished body ends cleanly")
        .to_bytes();
    assert_eq!(&body[..], b"chunk 0\nchunk 1\nchunk 2\n");
    gateway.wait_for_log("outcome=complete");
}
