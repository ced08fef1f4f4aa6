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

#[tokio::test]
async fn guests_that_exhaust_their_memory_cap_leave_the_gateway_bounded() {
    let gateway = gateway(
        "",
        "[handler.hog]\nlimits = { memory = \"32MiB\" }\n\n[[route]]\npath = \"/hog\"\nhandler = \"hog\"\n",
    );
    let mut client = Client::http1(gateway.http()).await;
    // Warm up, so what is measured is growth, not first-use allocations.
    for _ in 0..5 {
        assert_eq!(
            client.get("/hog").await.status,
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
    let before = gateway.rss_kib();
    for _ in 0..50 {
        assert_eq!(
            client.get("/hog").await.status,
            StatusCode::INTERNAL_SERVER_ERROR
        );
        assert_eq!(client.get("/hello").await.status, StatusCode::OK);
    }
    let after = gateway.rss_kib();
    // 50 guests each took 32 MiB (1.6 GiB in all); the gateway keeps none of it.
    assert!(
        after < before + 64 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
    gateway.wait_for_log("guest ran out of memory");
}
