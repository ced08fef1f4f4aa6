//! Serving over HTTP/1.1, h2c and h2 over TLS, streaming bodies both ways,
//! and staying up whatever a guest does.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{StatusCode, Version};
use http_body_util::{BodyExt, StreamBody};
use wasmgate_tests::TestGateway;
use wasmgate_tests::certs::TestCerts;
use wasmgate_tests::client::{self, Client};

const HELLO_BODY: &str = "Hello from wasmgate!\n";

fn gateway(extra: &str) -> TestGateway {
    TestGateway::start(&wasmgate_tests::hello_and_echo(extra))
}

#[tokio::test]
async fn http1_get_and_post_reach_the_guest() {
    let gateway = gateway("");
    let mut client = Client::http1(gateway.http()).await;
    let reply = client.get("/hello").await;
    assert_eq!(
        (reply.status, reply.version),
        (StatusCode::OK, Version::HTTP_11)
    );
    assert_eq!(reply.text(), HELLO_BODY);

    let request = client
        .request("POST", "/echo/items?color=blue&size=2")
        .header("x-trace", "abc")
        .body(client::full("ignored"))
        .expect("valid request");
    let reply = client.send(request).await.expect("POST");
    assert_eq!(reply.status, StatusCode::OK);
    let described: serde_json::Value =
        serde_json::from_slice(&reply.body).expect("echo answers JSON");
    assert_eq!(described["method"], "POST");
    assert_eq!(described["path"], "/echo/items");
    assert_eq!(described["query"], "color=blue&size=2");
    let headers = described["headers"].as_array().expect("header list");
    assert!(
        headers
            .iter()
            .any(|pair| pair[0] == "x-trace" && pair[1] == "abc"),
        "{headers:?}"
    );
}

#[tokio::test]
async fn a_16_mib_body_streams_through_the_guest_and_back_intact() {
    let gateway = gateway("");
    const CHUNK: usize = 64 * 1024;
    const CHUNKS: usize = 256;
    // A pattern that differs per chunk, so a reordered or repeated chunk shows.
    let payload: Vec<u8> = (0..CHUNK * CHUNKS)
        .map(|i| (i % 251) as u8 ^ (i / CHUNK) as u8)
        .collect();
    let payload = Bytes::from(payload);
    for mut client in [
        Client::http1(gateway.http()).await,
        Client::h2c(gateway.http()).await,
    ] {
        let chunks: Vec<Result<hyper::body::Frame<Bytes>, std::convert::Infallible>> = (0..CHUNKS)
            .map(|index| {
                Ok(hyper::body::Frame::data(
                    payload.slice(index * CHUNK..(index + 1) * CHUNK),
                ))
            })
            .collect();
        let body = StreamBody::new(futures::stream::iter(chunks)).boxed();
        let request = client
            .request("POST", "/echo/upload?body")
            .body(body)
            .expect("valid");
        let reply = client.send(request).await.expect("upload");
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.body.len(), payload.len());
        assert!(
            reply.body == payload,
            "the echoed body differs from what was sent"
        );
    }
}

#[tokio::test]
async fn tls_negotiates_h2_by_alpn_and_falls_back_to_http1() {
    let dir = tempfile::tempdir().expect("temp dir");
    let certs = TestCerts::generate(dir.path());
    let config = format!(
        r#"
[gateway]
handlers_dir = "{{handlers}}"

[[listener]]
addr = "127.0.0.1:0"
tls = {{ cert = "{}", key = "{}" }}

[handler.hello]

[[route]]
path = "/hello"
handler = "hello"
"#,
        certs.cert.display(),
        certs.key.display()
    );
    let gateway = TestGateway::start_in(dir, &config);

    let mut h2 = Client::tls(gateway.https(), certs.client_config(&[b"h2", b"http/1.1"])).await;
    assert_eq!(h2.alpn.as_deref(), Some(&b"h2"[..]));
    let reply = h2.get("/hello").await;
    assert_eq!(
        (reply.status, reply.version),
        (StatusCode::OK, Version::HTTP_2)
    );
    assert_eq!(reply.text(), HELLO_BODY);

    let mut h1 = Client::tls(gateway.https(), certs.client_config(&[b"http/1.1"])).await;
    assert_eq!(h1.alpn.as_deref(), Some(&b"http/1.1"[..]));
    let reply = h1.get("/hello").await;
    assert_eq!(
        (reply.status, reply.version),
        (StatusCode::OK, Version::HTTP_11)
    );
}

#[tokio::test]
async fn h2c_with_prior_knowledge_is_served() {
    let gateway = gateway("");
    let mut client = Client::h2c(gateway.http()).await;
    for _ in 0..3 {
        let reply = client.get("/hello").await;
        assert_eq!(
            (reply.status, reply.version),
            (StatusCode::OK, Version::HTTP_2)
        );
        assert_eq!(reply.text(), HELLO_BODY);
    }
}

#[tokio::test]
async fn two_hundred_concurrent_requests_all_succeed() {
    let gateway = gateway("");
    let addr = gateway.http();
    let requests = (0..200).map(|_| async move {
        let mut client = Client::http1(addr).await;
        client.get("/hello").await
    });
    let replies = futures::future::join_all(requests).await;
    let failed: Vec<_> = replies
        .iter()
        .filter(|reply| reply.status != StatusCode::OK)
        .collect();
    assert!(
        failed.is_empty(),
        "{} of 200 failed: {:?}",
        failed.len(),
        failed.first()
    );
    assert!(replies.iter().all(|reply| reply.text() == HELLO_BODY));
}

#[tokio::test]
async fn unknown_paths_get_404() {
    let gateway = gateway("");
    let mut client = Client::http1(gateway.http()).await;
    for path in ["/", "/nothing", "/hello/extra", "/echoes"] {
        let reply = client.get(path).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(reply.text(), "404 Not Found\n");
    }
}

#[tokio::test]
async fn a_trap_fails_only_its_request() {
    let gateway = gateway(
        r#"
[handler.trap]

[[route]]
path = "/trap"
handler = "trap"
"#,
    );
    let mut client = Client::http1(gateway.http()).await;
    let reply = client.get("/trap").await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        reply.text(),
        "500 Internal Server Error\n",
        "no internals in the body"
    );
    let reply = client.get("/hello").await;
    assert_eq!(
        (reply.status, reply.text().as_str()),
        (StatusCode::OK, HELLO_BODY)
    );
    let line = gateway.wait_for_log("guest trapped");
    assert!(line.contains("unreachable"), "{line}");
    assert!(
        line.contains("route[2]") && line.contains("handler=\"trap\""),
        "{line}"
    );
    // The guest's own stderr reaches the log, tagged with the handler.
    let stderr = gateway.wait_for_log("the trap fixture always panics");
    assert!(stderr.contains("handler=\"trap\""), "{stderr}");
}

#[tokio::test]
async fn an_endless_loop_times_out_with_504_while_others_are_served() {
    let gateway = gateway(
        r#"
[handler.spin]
limits = { timeout = "1s" }

[[route]]
path = "/spin"
handler = "spin"
"#,
    );
    let addr = gateway.http();
    let started = Instant::now();
    let spinning = tokio::spawn(async move { Client::http1(addr).await.get("/spin").await });
    let mut client = Client::http1(addr).await;
    for _ in 0..20 {
        assert_eq!(client.get("/hello").await.status, StatusCode::OK);
    }
    let reply = spinning.await.expect("spin request task");
    assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(
        started.elapsed() < Duration::from_secs(1) + Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    gateway.wait_for_log("exceeded its time limit of 1s");
}

#[tokio::test]
async fn a_memory_hog_is_stopped_at_its_cap() {
    let gateway = gateway(
        r#"
[handler.hog]
limits = { memory = "32MiB" }

[[route]]
path = "/hog"
handler = "hog"
"#,
    );
    let mut client = Client::http1(gateway.http()).await;
    assert_eq!(
        client.get("/hog").await.status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert_eq!(client.get("/hello").await.status, StatusCode::OK);
}
