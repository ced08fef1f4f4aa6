//! No connection holds a listener's slot for free: a client that connects
//! and says nothing (before any protocol is detected, or after its TLS
//! handshake), an HTTP/2 connection left idle, and an upgraded WebSocket are
//! each bounded or counted, so `max_connections` cannot be filled by silence.

use std::time::Duration;

use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wasmgate_tests::certs::TestCerts;
use wasmgate_tests::client::Client;
use wasmgate_tests::ws::connect;
use wasmgate_tests::{TestGateway, hello_and_echo};

/// Long enough for the gateway to drop the silent ones (1 s) with room to spare.
const SERVED_WITHIN: Duration = Duration::from_secs(10);

/// `hello_and_echo` whose listener has `limits` (TOML key = value lines).
fn limited(limits: &str, extra: &str) -> String {
    hello_and_echo(extra).replacen(
        "[[listener]]\naddr = \"127.0.0.1:0\"\n",
        &format!("[[listener]]\naddr = \"127.0.0.1:0\"\n{limits}\n"),
        1,
    )
}

async fn silent(addr: std::net::SocketAddr, count: usize) -> Vec<TcpStream> {
    let mut held = Vec::new();
    for _ in 0..count {
        held.push(TcpStream::connect(addr).await.expect("connect"));
    }
    held
}

#[tokio::test]
async fn connections_that_never_speak_do_not_keep_the_listener_full() {
    let config = limited("max_connections = 10\nheader_timeout = \"1s\"", "");
    assert!(config.contains("max_connections = 10"), "{config}");
    let gateway = TestGateway::start(&config);
    let _silent = silent(gateway.http(), 10).await;
    let reply = tokio::time::timeout(SERVED_WITHIN, async {
        Client::http1(gateway.http()).await.get("/hello").await
    })
    .await
    .expect("served once the silent connections time out");
    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test]
async fn a_tls_connection_silent_after_its_handshake_is_closed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let certs = TestCerts::generate(dir.path());
    let config = format!(
        "[gateway]\nhandlers_dir = \"{{handlers}}\"\n\n\
         [[listener]]\naddr = \"127.0.0.1:0\"\nmax_connections = 3\nheader_timeout = \"1s\"\n\
         tls = {{ cert = \"{}\", key = \"{}\" }}\n\n\
         [handler.hello]\n[[route]]\npath = \"/hello\"\nhandler = \"hello\"\n",
        certs.cert.display(),
        certs.key.display()
    );
    let gateway = TestGateway::start_in(dir, &config);
    let connector = tokio_rustls::TlsConnector::from(certs.client_config(&[b"h2"]));
    let mut quiet = Vec::new();
    for _ in 0..3 {
        let tcp = TcpStream::connect(gateway.https()).await.expect("connect");
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
        // Handshake done, then not a byte of HTTP.
        quiet.push(connector.connect(name, tcp).await.expect("handshake"));
    }
    let reply = tokio::time::timeout(SERVED_WITHIN, async {
        let mut client = Client::tls(gateway.https(), certs.client_config(&[b"h2"])).await;
        client.get("/hello").await
    })
    .await
    .expect("served once the quiet TLS connections time out");
    assert_eq!(reply.status, StatusCode::OK);
    // Each quiet one was closed by the gateway, not left to linger.
    for mut stream in quiet {
        let mut buffer = [0u8; 64];
        let read = tokio::time::timeout(SERVED_WITHIN, stream.read(&mut buffer))
            .await
            .expect("the gateway closes it");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }
}

#[tokio::test]
async fn an_idle_http2_connection_gives_its_slot_back() {
    let config = limited("max_connections = 1\nidle_timeout = \"1s\"", "");
    let gateway = TestGateway::start(&config);
    let mut first = Client::h2c(gateway.http()).await;
    assert_eq!(first.get("/hello").await.status, StatusCode::OK);
    // `first` stays open and idle; the only slot must come free for this one.
    let reply = tokio::time::timeout(SERVED_WITHIN, async {
        Client::h2c(gateway.http()).await.get("/hello").await
    })
    .await
    .expect("served once the idle HTTP/2 connection is closed");
    assert_eq!(reply.status, StatusCode::OK);
    drop(first);
}

#[tokio::test]
async fn an_upgraded_websocket_keeps_counting_against_max_connections() {
    let config = limited(
        "max_connections = 2",
        "[handler.ws-echo]\nworld = \"websocket\"\n\n[[route]]\npath = \"/ws/*\"\nhandler = \"ws-echo\"\n",
    );
    let gateway = TestGateway::start(&config);
    let first = connect(&gateway, "/ws/a").await.expect("first WebSocket");
    let _second = connect(&gateway, "/ws/b").await.expect("second WebSocket");
    // Both slots are taken by open WebSockets: a third connection waits in
    // the backlog, unanswered.
    let mut third = TcpStream::connect(gateway.http()).await.expect("connect");
    third
        .write_all(b"GET /hello HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut answer = Vec::new();
    let early =
        tokio::time::timeout(Duration::from_millis(500), third.read_to_end(&mut answer)).await;
    assert!(
        early.is_err(),
        "answered while both slots were WebSockets: {}",
        String::from_utf8_lossy(&answer)
    );
    drop(first);
    tokio::time::timeout(SERVED_WITHIN, third.read_to_end(&mut answer))
        .await
        .expect("answered once a WebSocket closed")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn a_stalled_upload_is_answered_408_and_frees_its_guest() {
    let config = limited("body_timeout = \"1s\"", "");
    let gateway = TestGateway::start(&config);
    let mut raw = TcpStream::connect(gateway.http()).await.expect("connect");
    // Ten of the hundred promised bytes, then nothing.
    raw.write_all(
        b"POST /echo/x?length HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n0123456789",
    )
    .await
    .expect("write");
    let mut answer = vec![0u8; 1024];
    let read = tokio::time::timeout(SERVED_WITHIN, raw.read(&mut answer))
        .await
        .expect("answered while the upload stalls")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer[..read]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let line = gateway.wait_for_log("\"POST /echo/x\"");
    assert!(line.contains("status=408"), "{line}");
}

/// A client that sends a large body to be echoed but never reads the echo:
/// the gateway's writes stall, and after the write timeout the connection
/// (and the only slot) is given up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_reads_nothing_gives_its_slot_back() {
    let config = limited("max_connections = 1\nwrite_timeout = \"1s\"", "");
    let gateway = TestGateway::start(&config);
    let mut reader = TcpStream::connect(gateway.http()).await.expect("connect");
    let length = 64 * 1024 * 1024;
    let writer = tokio::spawn(async move {
        let head =
            format!("POST /echo/x?body HTTP/1.1\r\nhost: x\r\ncontent-length: {length}\r\n\r\n");
        reader.write_all(head.as_bytes()).await?;
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..length / chunk.len() {
            reader.write_all(&chunk).await?;
        }
        // Never reads: hold the connection until the gateway drops it.
        let mut byte = [0u8; 1];
        tokio::time::sleep(Duration::from_secs(30)).await;
        reader.read(&mut byte).await.map(drop)
    });
    let reply = tokio::time::timeout(SERVED_WITHIN, async {
        Client::http1(gateway.http()).await.get("/hello").await
    })
    .await
    .expect("served once the stalled reader is dropped");
    assert_eq!(reply.status, StatusCode::OK);
    writer.abort();
}
