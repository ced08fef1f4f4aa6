//! Response compression per route (`compress`): negotiated by
//! `Accept-Encoding` (gzip, br, zstd, checked with curl, which decodes all
//! three), only above the minimum size and for the listed content types,
//! never for event streams (which still arrive event by event) and never
//! twice (a precompressed static variant keeps its own encoding). Request
//! decompression per route (`decompress`): bodies arrive decoded, capped
//! after decoding (a gzip bomb is refused with 413), undecodable bytes get
//! 400, an unknown encoding 415; without `decompress` a body passes as sent.

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
limits = { body = "1MiB" }

[handler.clock]

[[route]]
path = "/upload/*"
handler = "echo"
decompress = true

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

/// `curl` POSTing `body` to `url` with `encoding` as `Content-Encoding`:
/// the status, the response's headers (lowercase) and body.
fn post(url: &str, encoding: &str, body: &[u8]) -> (u16, String, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let (file, head, out) = (
        dir.path().join("body"),
        dir.path().join("head"),
        dir.path().join("out"),
    );
    std::fs::write(&file, body).expect("write");
    let output = Command::new("curl")
        .args(["-s", "-H", &format!("Content-Encoding: {encoding}")])
        .args(["-H", "Content-Type: application/octet-stream"])
        .arg("--data-binary")
        .arg(format!("@{}", file.display()))
        .arg("-D")
        .arg(&head)
        .arg("-o")
        .arg(&out)
        .args(["-w", "%{http_code}"])
        .arg(url)
        .output()
        .expect("curl runs");
    let status = String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .expect("a status");
    (
        status,
        std::fs::read_to_string(&head)
            .expect("headers")
            .to_lowercase(),
        String::from_utf8_lossy(&std::fs::read(&out).unwrap_or_default()).into_owned(),
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

#[tokio::test]
async fn request_bodies_are_decoded_on_routes_that_ask_and_capped_after_decoding() {
    let gateway = start();
    let base = format!("http://{}", gateway.http());
    let text = "hello wasmgate\n".repeat(20_000);
    let packed = wasmgate_tests::gzip(text.as_bytes());
    assert!(packed.len() < text.len() / 20);

    // Decoded before the guest reads it: the echo streams back the text.
    let (status, head, body) = post(&format!("{base}/upload/x?body"), "gzip", &packed);
    assert_eq!(status, 200, "{head}");
    assert_eq!(body, text);
    // Without `decompress` the guest gets the bytes as sent.
    let (status, _, body) = post(&format!("{base}/echo/x?length"), "gzip", &packed);
    assert_eq!(status, 200);
    assert_eq!(body.trim(), packed.len().to_string());
    // `identity` and no encoding at all pass as they are.
    let (status, _, body) = post(&format!("{base}/upload/x?length"), "identity", b"plain");
    assert_eq!((status, body.trim()), (200, "5"));

    // A bomb: 64 MiB of zeros in some 64 KiB of gzip, far under the 1 MiB
    // limit as sent, far over it decoded. Refused once 1 MiB is decoded.
    let bomb = wasmgate_tests::gzip(&vec![0u8; 64 << 20]);
    assert!(bomb.len() < 1 << 20, "{}", bomb.len());
    let (status, _, body) = post(&format!("{base}/upload/x?length"), "gzip", &bomb);
    assert_eq!(status, 413, "{body}");

    // Bytes that are not gzip: the client's fault, 400.
    let (status, _, body) = post(
        &format!("{base}/upload/x?length"),
        "gzip",
        b"not gzip at all",
    );
    assert_eq!(status, 400, "{body}");

    // An encoding the gateway cannot decode: 415, naming those it can.
    let (status, head, _) = post(&format!("{base}/upload/x?length"), "compress", b"x");
    assert_eq!(status, 415);
    let accepted = head
        .lines()
        .find_map(|line| line.strip_prefix("accept-encoding: "))
        .unwrap_or_default();
    for encoding in ["gzip", "deflate", "br", "zstd"] {
        assert!(accepted.contains(encoding), "{head}");
    }

    // The gateway and the route carry on.
    let (status, _, body) = post(&format!("{base}/upload/x?length"), "gzip", &packed);
    assert_eq!(
        (status, body.trim()),
        (200, text.len().to_string().as_str())
    );
}
