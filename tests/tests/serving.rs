//! Serving over HTTP/1.1, h2c and h2 over TLS: requests reach the guest,
//! unknown paths get 404, and many concurrent requests all succeed.

use http::{StatusCode, Version};
use wasmgate_tests::certs::TestCerts;
use wasmgate_tests::client::{self, Client};
use wasmgate_tests::{HELLO_BODY, TestGateway};

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
