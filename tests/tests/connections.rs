//! Connection handling: malformed requests, full-duplex streaming, slow TLS
//! clients and file-descriptor exhaustion.

use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, StreamBody};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wasmgate_tests::TestGateway;
use wasmgate_tests::certs::TestCerts;
use wasmgate_tests::client::Client;

fn config() -> String {
    wasmgate_tests::hello_and_echo("")
}

#[tokio::test]
async fn malformed_http_gets_400_and_the_gateway_carries_on() {
    let gateway = TestGateway::start(&config());
    let mut raw = TcpStream::connect(gateway.http()).await.expect("connect");
    raw.write_all(b"THIS IS NOT HTTP\r\n\r\n")
        .await
        .expect("write");
    let mut answer = Vec::new();
    raw.read_to_end(&mut answer)
        .await
        .expect("read until close");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    let mut client = Client::http1(gateway.http()).await;
    assert_eq!(client.get("/hello").await.status, StatusCode::OK);
}

/// The guest echoes each chunk before the next one is sent: neither the
/// request nor the response body can be buffered whole anywhere on the way.
#[tokio::test]
async fn bodies_stream_through_the_guest_in_both_directions_at_once() {
    let gateway = TestGateway::start(&config());
    for mut client in [
        Client::http1(gateway.http()).await,
        Client::h2c(gateway.http()).await,
    ] {
        let (chunks, receiver) = tokio::sync::mpsc::channel::<Bytes>(1);
        let frames = futures::stream::unfold(receiver, |mut receiver| async move {
            let chunk = receiver.recv().await?;
            Some((
                Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(chunk)),
                receiver,
            ))
        });
        let request = client
            .request("POST", "/echo/duplex?body")
            .body(StreamBody::new(frames).boxed())
            .expect("valid");
        let first = Bytes::from(vec![b'a'; 1000]);
        chunks.send(first.clone()).await.expect("body accepts");
        let response = client.send_streaming(request).await.expect("response head");
        assert_eq!(response.status(), StatusCode::OK);
        let mut body = response.into_body();
        for round in 0u8..5 {
            let expected = Bytes::from(vec![b'a' + round; 1000]);
            let mut echoed = Vec::new();
            while echoed.len() < expected.len() {
                let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
                    .await
                    .expect("the chunk comes back before the next is sent")
                    .expect("body continues")
                    .expect("readable");
                echoed.extend_from_slice(frame.data_ref().expect("data frame"));
            }
            assert_eq!(echoed, expected);
            if round < 4 {
                chunks
                    .send(Bytes::from(vec![b'a' + round + 1; 1000]))
                    .await
                    .expect("send");
            }
        }
        drop(chunks);
        let rest = body.collect().await.expect("body ends").to_bytes();
        assert!(rest.is_empty());
    }
}

#[tokio::test]
async fn a_silent_tls_client_does_not_hold_up_other_handshakes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let certs = TestCerts::generate(dir.path());
    let config = format!(
        "[gateway]\nhandlers_dir = \"{{handlers}}\"\ntls_handshake_timeout = \"30s\"\n\n\
         [[listener]]\naddr = \"127.0.0.1:0\"\ntls = {{ cert = \"{}\", key = \"{}\" }}\n\n\
         [handler.hello]\n[[route]]\npath = \"/hello\"\nhandler = \"hello\"\n",
        certs.cert.display(),
        certs.key.display()
    );
    let gateway = TestGateway::start_in(dir, &config);
    // Connected, but never says a word.
    let _silent: Vec<TcpStream> =
        futures::future::join_all((0..5).map(|_| TcpStream::connect(gateway.https())))
            .await
            .into_iter()
            .map(|stream| stream.expect("connect"))
            .collect();
    let mut client = Client::tls(gateway.https(), certs.client_config(&[b"h2"])).await;
    assert_eq!(client.get("/hello").await.status, StatusCode::OK);
}

#[tokio::test]
async fn running_out_of_file_descriptors_does_not_stop_the_listener() {
    let gateway = TestGateway::start_with_fd_limit(&config(), 64);
    let addr = gateway.http();
    // Far more connections than the gateway can hold descriptors for: the
    // surplus waits in the backlog while accept fails with EMFILE.
    let mut held = Vec::new();
    for _ in 0..120 {
        held.push(TcpStream::connect(addr).await.expect("connect (backlog)"));
    }
    gateway.wait_for_log("accept failed, retrying");
    drop(held);
    let mut client = tokio::time::timeout(Duration::from_secs(30), Client::http1(addr))
        .await
        .expect("the listener accepts again");
    let reply = tokio::time::timeout(Duration::from_secs(30), client.get("/hello"))
        .await
        .expect("served once descriptors are free");
    assert_eq!(reply.status, StatusCode::OK);
}
