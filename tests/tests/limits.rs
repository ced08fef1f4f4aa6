//! Limits that protect the gateway from clients: request body size (413),
//! header size and count (431), per-handler concurrency (503), and per
//! listener connection count and header timeout (slowloris).

use std::convert::Infallible;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{StatusCode, header};
use http_body_util::{BodyExt as _, StreamBody};
use hyper::body::Frame;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use wasmgate_tests::client::{self, Client};
use wasmgate_tests::{TestGateway, hello_and_echo};

fn gateway(listener: &str, handlers: &str) -> TestGateway {
    let config = hello_and_echo(handlers)
        .replace(
            "[handler.echo]\n",
            "[handler.echo]\nlimits = { body = \"1KiB\" }\n",
        )
        .replace(
            "addr = \"127.0.0.1:0\"\n",
            &format!("addr = \"127.0.0.1:0\"\n{listener}\n"),
        );
    TestGateway::start(&config)
}

/// A body of `chunks` chunks of 512 bytes, without a Content-Length.
fn chunked(chunks: usize) -> client::Body {
    let frames =
        (0..chunks).map(|_| Ok::<_, Infallible>(Frame::data(Bytes::from(vec![b'z'; 512]))));
    StreamBody::new(futures::stream::iter(frames)).boxed()
}

#[tokio::test]
async fn a_body_over_the_limit_gets_413_with_or_without_content_length() {
    let gateway = gateway("", "");
    let mut client = Client::http1(gateway.http()).await;
    let at_limit = client
        .request("POST", "/echo/x?length")
        .body(client::full(vec![b'a'; 1024]))
        .expect("valid");
    let reply = client.send(at_limit).await.expect("answered");
    assert_eq!(
        (reply.status, reply.text()),
        (StatusCode::OK, "1024\n".into())
    );

    let declared = client
        .request("POST", "/echo/x?length")
        .body(client::full(vec![b'a'; 1025]))
        .expect("valid");
    let reply = client.send(declared).await.expect("answered");
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);

    // No Content-Length: counted on the stream, while the guest reads.
    let mut client = Client::http1(gateway.http()).await;
    let streamed = client
        .request("POST", "/echo/x?length")
        .body(chunked(4))
        .expect("valid");
    let reply = client.send(streamed).await.expect("answered");
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    let mut h2 = Client::h2c(gateway.http()).await;
    let streamed = h2
        .request("POST", "/echo/x?length")
        .body(chunked(4))
        .expect("valid");
    let reply = h2.send(streamed).await.expect("answered");
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    // Under the limit, chunked, is fine.
    let small = h2
        .request("POST", "/echo/x?length")
        .body(chunked(2))
        .expect("valid");
    let reply = h2.send(small).await.expect("answered");
    assert_eq!(
        (reply.status, reply.text()),
        (StatusCode::OK, "1024\n".into())
    );
}

#[tokio::test]
async fn oversized_or_too_many_headers_get_431() {
    let gateway = gateway("max_header_size = \"16KiB\"\nmax_headers = 20", "");
    let mut client = Client::http1(gateway.http()).await;
    let big = client
        .request("GET", "/hello")
        .header("x-big", "b".repeat(20 * 1024))
        .body(client::empty())
        .expect("valid");
    let reply = client.send(big).await.expect("answered");
    assert_eq!(reply.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);

    let mut client = Client::http1(gateway.http()).await;
    let mut many = client.request("GET", "/hello");
    for index in 0..30 {
        many = many.header(format!("x-h{index}"), "1");
    }
    let reply = client
        .send(many.body(client::empty()).expect("valid"))
        .await
        .expect("answered");
    assert_eq!(reply.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);

    let mut client = Client::http1(gateway.http()).await;
    assert_eq!(client.get("/hello").await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_requests_to_a_handler_capped_at_ten_get_200_or_503_and_none_hangs() {
    let gateway = gateway(
        "",
        "[handler.slow]\nlimits = { concurrency = 10 }\n\n[[route]]\npath = \"/slow\"\nhandler = \"slow\"\n",
    );
    let addr = gateway.http();
    let started = Instant::now();
    let requests: Vec<_> = (0..1000)
        .map(|_| {
            tokio::spawn(async move {
                let mut client = Client::http1(addr).await;
                let reply = client.get("/slow?chunks=1&pause_ms=300").await;
                let retry = reply.headers.get(header::RETRY_AFTER).cloned();
                (reply.status, retry)
            })
        })
        .collect();
    let (mut ok, mut refused) = (0, 0);
    for request in requests {
        let (status, retry) = tokio::time::timeout(Duration::from_secs(60), request)
            .await
            .expect("no request hangs")
            .expect("request task");
        match status {
            StatusCode::OK => ok += 1,
            StatusCode::SERVICE_UNAVAILABLE => {
                assert_eq!(
                    retry.as_ref().map(|value| value.as_bytes()),
                    Some(&b"1"[..])
                );
                refused += 1;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(ok + refused, 1000);
    assert!(ok >= 10, "at least the first ten are served: {ok}");
    assert!(refused > 0, "a cap of ten refuses some of 1000 at once");
    // Refusals are fast: the whole burst is over in far less than 1000 x 300 ms / 10.
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_slowloris_connection_is_closed_after_the_header_timeout() {
    let gateway = gateway("header_timeout = \"500ms\"", "");
    let mut tcp = TcpStream::connect(gateway.http()).await.expect("connect");
    tcp.write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .expect("write");
    let started = Instant::now();
    let mut buffer = Vec::new();
    // EOF (or a reset): either way the connection is over.
    let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut buffer))
        .await
        .expect("the gateway closes the connection");
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "closed only once the timeout ran: {:?}",
        started.elapsed()
    );
    // An honest client is still served.
    let mut client = Client::http1(gateway.http()).await;
    assert_eq!(client.get("/hello").await.status, StatusCode::OK);
}

/// One HTTP/2 frame: 9-byte header (length, type, flags, stream id), payload.
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let length = u32::try_from(payload.len()).expect("a small frame");
    let mut frame = length.to_be_bytes()[1..].to_vec();
    frame.extend([kind, flags]);
    frame.extend(stream.to_be_bytes());
    frame.extend(payload);
    frame
}

/// Reads the next frame: (type, flags, stream id, payload).
async fn read_h2_frame(tcp: &mut TcpStream) -> (u8, u8, u32, Vec<u8>) {
    let mut header = [0; 9];
    tcp.read_exact(&mut header).await.expect("a frame header");
    let length = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
    let stream = u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff;
    let mut payload = vec![0; length];
    tcp.read_exact(&mut payload).await.expect("a frame payload");
    (header[3], header[4], stream, payload)
}

/// hyper's and h2's clients queue requests past the server's stream limit
/// themselves, so this client speaks raw frames: it opens one stream more
/// than the listener allows, and the server refuses exactly that one.
#[tokio::test]
async fn an_h2_client_past_the_stream_limit_is_refused_that_stream() {
    const HEADERS: u8 = 0x1;
    const RST_STREAM: u8 = 0x3;
    const SETTINGS: u8 = 0x4;
    const GOAWAY: u8 = 0x7;
    const MAX_CONCURRENT_STREAMS: u16 = 0x3;
    const REFUSED_STREAM: u32 = 0x7;
    let gateway = gateway("h2_max_streams = 3", "");
    let mut tcp = TcpStream::connect(gateway.http()).await.expect("connect");
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .expect("preface");
    tcp.write_all(&h2_frame(SETTINGS, 0, 0, &[]))
        .await
        .expect("settings");
    let (kind, _, _, settings) = read_h2_frame(&mut tcp).await;
    assert_eq!(kind, SETTINGS, "the server speaks first with its settings");
    let advertised = settings.chunks_exact(6).find_map(|setting| {
        (u16::from_be_bytes([setting[0], setting[1]]) == MAX_CONCURRENT_STREAMS)
            .then(|| u32::from_be_bytes([setting[2], setting[3], setting[4], setting[5]]))
    });
    assert_eq!(advertised, Some(3));
    tcp.write_all(&h2_frame(SETTINGS, 0x1, 0, &[]))
        .await
        .expect("ack");

    // GET /echo/open?body with no END_STREAM: each stream stays open, waiting
    // for a body. HPACK: :method GET (2), :scheme http (6), then :path and
    // :authority as literals with indexed names (4, 1), no Huffman.
    let path = b"/echo/open?body";
    let mut block = vec![0x82, 0x86, 0x04, u8::try_from(path.len()).expect("short")];
    block.extend(path);
    block.extend([0x01, 9]);
    block.extend(b"localhost");
    for stream in [1, 3, 5, 7] {
        tcp.write_all(&h2_frame(HEADERS, 0x4, stream, &block))
            .await
            .expect("headers");
    }
    let refused = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let (kind, _, stream, payload) = read_h2_frame(&mut tcp).await;
            assert_ne!(kind, GOAWAY, "the connection itself is not given up");
            if kind == RST_STREAM {
                let code = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]);
                break (stream, code);
            }
        }
    })
    .await
    .expect("a stream is refused");
    assert_eq!(
        refused,
        (7, REFUSED_STREAM),
        "only the fourth stream is refused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_at_its_connection_limit_waits_for_one_to_close() {
    let gateway = gateway("max_connections = 2", "");
    let mut first = Client::http1(gateway.http()).await;
    let mut second = Client::http1(gateway.http()).await;
    assert_eq!(first.get("/hello").await.status, StatusCode::OK);
    assert_eq!(second.get("/hello").await.status, StatusCode::OK);
    // The third connects (the kernel's backlog) but is not served...
    let mut third = Client::http1(gateway.http()).await;
    let mut waiting = tokio::spawn(async move { third.get("/hello").await.status });
    // Nothing signals "not served": give it half a second to (wrongly) answer.
    let early = tokio::time::timeout(Duration::from_millis(500), &mut waiting).await;
    assert!(early.is_err(), "served past the connection limit");
    // ...until one of the two goes away.
    drop(first);
    let status = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("served once a slot freed")
        .expect("task");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(second.get("/hello").await.status, StatusCode::OK);
}
