//! Response compression per route (`compress`): negotiated by
//! `Accept-Encoding` (gzip, br, zstd, checked with curl, which decodes all
//! three), only above the minimum size and for the listed content types,
//! never for event streams (which still arrive event by event) and never
//! twice (a precompressed static variant keeps its own encoding).

use std::process::Command;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use http::header;
use http_body_util::BodyExt as _;
use wasmgate_tests::TestGateway;
use wasmgate_tests::client::{Client, empty};

fn config() -> String {
    r#"
[gateway]
handlers_dir = "{handlers}"

[[listener]]
addr = "127.0.0.1:0"

[handler.echo]
[handler.clock]

[[route]]
path = "/echo/*"
handler = "echo"
compress = { min_size = 256 }

[[route]]
path = "/small/*"
handler = "echo"
compress = { min_size = 60000 }

[[route]]
path = "/clock"
handler = "clock"
compress = true

[[route]]
path = "/site/*"
static = "{dir}/public"
compress = true
"#
    .to_string()
}

/// `curl` fetching `url` with `accept` as `Accept-Encoding`, decoding what it
/// can (`--compressed`): the response's headers (lowercase) and body.
fn curl(url: &str, accept: &str, headers: &[&str]) -> (String, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let head = dir.path().join("head");
    let mut command = Command::new("curl");
    command
        .args(["-s", "--compressed", "-D"])
        .arg(&head)
        .args(["-H", &format!("Accept-Encoding: {accept}")]);
    for header in headers {
        command.args(["-H", header]);
    }
    let output = command.arg(url).output().expect("curl runs");
    assert!(output.status.success(), "{output:?}");
    (
        std::fs::read_to_string(&head)
            .expect("headers")
            .to_lowercase(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

fn start() -> TestGateway {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(dir.path().join("public")).expect("mkdir");
    let page = "<p>compress me</p>\n".repeat(200);
    std::fs::write(dir.path().join("public/page.html"), &page).expect("write");
    std::fs::write(dir.path().join("public/app.js"), "x".repeat(4000)).expect("write");
    std::fs::write(dir.path().join("public/app.js.gz"), b"already gzip").expect("write");
    TestGateway::start_in(dir, &config())
}

#[tokio::test]
async fn responses_are_compressed_as_the_client_accepts() {
    let gateway = start();
    let base = format!("http://{}", gateway.http());
    // The echo handler describes the request as JSON; a long header makes
    // it long enough to compress.
    let pad = format!("x-pad: {}", "a".repeat(2000));
    for encoding in ["gzip", "br", "zstd"] {
        let (head, body) = curl(&format!("{base}/echo/x"), encoding, &[&pad]);
        assert!(
            head.contains(&format!("content-encoding: {encoding}")),
            "{encoding}: {head}"
        );
        assert!(body.contains(&"a".repeat(2000)), "{encoding}: decoded");
        assert!(head.contains("vary: accept-encoding"), "{head}");
    }
    // Not asked for, too small, or not a listed type: as it was.
    let (head, _) = curl(&format!("{base}/echo/x"), "identity", &[&pad]);
    assert!(!head.contains("content-encoding"), "{head}");
    let (head, _) = curl(&format!("{base}/small/x"), "gzip", &[&pad]);
    assert!(!head.contains("content-encoding"), "{head}");
    let (head, _) = curl(
        &format!("{base}/echo/x?body"),
        "gzip",
        &["Content-Type: application/octet-stream"],
    );
    assert!(!head.contains("content-encoding"), "octet-stream: {head}");

    // Static files compress too, but a precompressed variant is not
    // compressed again.
    let (head, body) = curl(&format!("{base}/site/page.html"), "br", &[]);
    assert!(head.contains("content-encoding: br"), "{head}");
    assert_eq!(body, "<p>compress me</p>\n".repeat(200));
    // Encoded here, its ETag is weak (it names another representation),
    // and a conditional request with it still gets 304.
    let etag = head
        .lines()
        .find_map(|line| line.strip_prefix("etag: "))
        .expect("an etag")
        .trim()
        .to_string();
    assert!(etag.starts_with("w/\""), "{etag}");
    let mut client = Client::http1(gateway.http()).await;
    let plain = client.get("/site/page.html").await;
    let strong = plain.headers[header::ETAG]
        .to_str()
        .expect("text")
        .to_string();
    assert!(
        strong.starts_with('"'),
        "uncompressed keeps its strong ETag: {strong}"
    );
    let request = client
        .request("GET", "/site/page.html")
        .header(header::ACCEPT_ENCODING, "br")
        .header(header::IF_NONE_MATCH, format!("W/{strong}"))
        .body(empty())
        .expect("request");
    let again = client.send(request).await.expect("answered");
    assert_eq!(again.status, http::StatusCode::NOT_MODIFIED);

    let request = client
        .request("GET", "/site/app.js")
        .header(header::ACCEPT_ENCODING, "gzip")
        .body(empty())
        .expect("request");
    let reply = client.send(request).await.expect("answered");
    assert_eq!(reply.headers[header::CONTENT_ENCODING], "gzip");
    assert_eq!(reply.text(), "already gzip");
    // Its encoding was not ours: its ETag stays as ServeDir made it.
    assert!(
        reply.headers[header::ETAG]
            .to_str()
            .is_ok_and(|etag| etag.starts_with('"'))
    );
}

#[tokio::test]
async fn an_event_stream_is_never_compressed_and_arrives_event_by_event() {
    let gateway = start();
    let mut client = Client::http1(gateway.http()).await;
    let request = client
        .request("GET", "/clock?interval_ms=300&count=3")
        .header(header::ACCEPT_ENCODING, "gzip, br, zstd")
        .body(empty())
        .expect("request");
    let response = client.send_streaming(request).await.expect("answered");
    assert!(response.headers().get(header::CONTENT_ENCODING).is_none());
    let started = Instant::now();
    let mut body = response.into_body().into_data_stream();
    let first = body.next().await.expect("a chunk").expect("data");
    assert!(
        String::from_utf8_lossy(&first).contains("event: tick"),
        "{first:?}"
    );
    // The first event came alone, long before the last one is written.
    assert!(started.elapsed() < Duration::from_millis(250));
    let rest: Vec<_> = body.collect().await;
    assert_eq!(rest.len(), 2, "one chunk per event");
}
