//! Connection handling: malformed requests, slow TLS clients and
//! file-descriptor exhaustion.

use std::time::Duration;

use http::StatusCode;
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
