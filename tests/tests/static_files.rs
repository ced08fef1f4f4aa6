//! Static routes (`static = "DIR"`): index files, content types, ranges,
//! conditional requests, precompressed variants; nothing outside DIR, by
//! `..` (raw or percent-encoded) or by a symlink; counted and logged like
//! any route, and reloaded with the config.

use http::{StatusCode, header};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use wasmgate_tests::client::{Client, empty};
use wasmgate_tests::{TestGateway, metric};

fn config(dir: &str) -> String {
    format!(
        "[[listener]]\naddr = \"127.0.0.1:0\"\n\n[admin]\naddr = \"127.0.0.1:0\"\n\n\
         [[route]]\npath = \"/site/*\"\nstatic = \"{{dir}}/{dir}\"\n"
    )
}

/// A site in `dir/public` (and `dir/other`), with a secret beside it and
/// links that lead to it.
fn site() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let write = |path: &str, bytes: &[u8]| {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, bytes).expect("write");
    };
    write("public/index.html", b"<h1>home</h1>");
    write("public/docs/index.html", b"<h1>docs</h1>");
    write("public/empty/.keep", b"");
    write("public/app.js", b"console.log('plain');");
    write("public/app.js.br", b"BROTLI");
    write("public/app.js.gz", b"GZIP");
    write("public/logo.png", b"\x89PNG\r\n\x1a\n");
    write("public/digits.txt", b"0123456789");
    write("other/index.html", b"<h1>other</h1>");
    write("secret.txt", b"the secret");
    std::os::unix::fs::symlink(
        dir.path().join("secret.txt"),
        dir.path().join("public/leak.txt"),
    )
    .expect("symlink");
    std::os::unix::fs::symlink(dir.path(), dir.path().join("public/up")).expect("symlink");
    dir
}

/// The status line of a request sent byte for byte (no client normalizes it).
async fn raw_status(gateway: &TestGateway, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(gateway.http())
        .await
        .expect("connect");
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: site\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .expect("write");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.expect("read");
    let text = String::from_utf8_lossy(&answer);
    assert!(!text.contains("the secret"), "{path} leaked: {text}");
    text.lines().next().unwrap_or_default().to_string()
}

#[tokio::test]
async fn files_are_served_with_types_ranges_validators_and_precompressed_variants() {
    let gateway = TestGateway::start_in(site(), &config("public"));
    let mut client = Client::http1(gateway.http()).await;

    let home = client.get("/site/").await;
    assert_eq!(home.status, StatusCode::OK);
    assert_eq!(home.text(), "<h1>home</h1>");
    assert!(
        home.headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap_or("")
            .starts_with("text/html")
    );
    assert_eq!(client.get("/site/docs/").await.text(), "<h1>docs</h1>");
    // A directory without its slash: redirected, prefix kept.
    let docs = client.get("/site/docs").await;
    assert_eq!(docs.status, StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(docs.headers[header::LOCATION], "/site/docs/");
    // No listing of a directory without an index.
    assert_eq!(
        client.get("/site/empty/").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        client.get("/site/nothing.txt").await.status,
        StatusCode::NOT_FOUND
    );

    let png = client.get("/site/logo.png").await;
    assert_eq!(png.headers[header::CONTENT_TYPE], "image/png");

    // A range.
    let request = client
        .request("GET", "/site/digits.txt")
        .header(header::RANGE, "bytes=2-5")
        .body(empty())
        .expect("request");
    let part = client.send(request).await.expect("answered");
    assert_eq!(part.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(part.text(), "2345");
    assert_eq!(part.headers[header::CONTENT_RANGE], "bytes 2-5/10");

    // Conditional requests against the ETag and Last-Modified.
    let js = client.get("/site/app.js").await;
    assert_eq!(js.text(), "console.log('plain');");
    assert!(
        js.headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap_or("")
            .contains("javascript")
    );
    let etag = js.headers[header::ETAG].clone();
    let modified = js.headers[header::LAST_MODIFIED].clone();
    for (name, value) in [
        (header::IF_NONE_MATCH, etag),
        (header::IF_MODIFIED_SINCE, modified),
    ] {
        let request = client
            .request("GET", "/site/app.js")
            .header(name.clone(), value)
            .body(empty())
            .expect("request");
        let again = client.send(request).await.expect("answered");
        assert_eq!(again.status, StatusCode::NOT_MODIFIED, "{name}");
        assert!(again.body.is_empty());
    }

    // The precompressed variant the client accepts, with its encoding.
    for (accept, body, encoding) in [
        ("br, gzip", "BROTLI", Some("br")),
        ("gzip", "GZIP", Some("gzip")),
        ("identity", "console.log('plain');", None),
    ] {
        let request = client
            .request("GET", "/site/app.js")
            .header(header::ACCEPT_ENCODING, accept)
            .body(empty())
            .expect("request");
        let reply = client.send(request).await.expect("answered");
        assert_eq!(reply.text(), body, "{accept}");
        assert_eq!(
            reply
                .headers
                .get(header::CONTENT_ENCODING)
                .and_then(|value| value.to_str().ok()),
            encoding,
            "{accept}"
        );
    }

    // Counted and logged like any route.
    assert!(
        metric(
            &gateway,
            r#"wasmgate_requests_total{handler="static:files",method="GET",route="route[0]",status="2xx"}"#
        )
        .await
            >= 5.0
    );
    gateway.wait_for_log("\"GET /site/logo.png\"");
}

#[tokio::test]
async fn nothing_outside_the_directory_is_served() {
    let gateway = TestGateway::start_in(site(), &config("public"));
    for path in [
        "/site/../secret.txt",
        "/site/%2e%2e/secret.txt",
        "/site/..%2fsecret.txt",
        "/site/%2E%2E%2Fsecret.txt",
        "/site/docs/../../secret.txt",
        "/site//etc/passwd",
        "/site/leak.txt",
        "/site/up/secret.txt",
        "/site/up/other/index.html",
    ] {
        let status = raw_status(&gateway, path).await;
        assert!(
            status.contains(" 404 ") || status.contains(" 400 "),
            "{path}: {status}"
        );
    }
    // What is inside still is.
    assert!(
        raw_status(&gateway, "/site/index.html")
            .await
            .contains(" 200 ")
    );
}

#[tokio::test]
async fn a_static_route_reloads_with_the_config() {
    let mut gateway = TestGateway::start_in(site(), &config("public"));
    let mut client = Client::http1(gateway.http()).await;
    assert_eq!(client.get("/site/").await.text(), "<h1>home</h1>");
    gateway.write_config(&config("other"));
    gateway.signal("HUP");
    gateway.wait_for_generation(2);
    let mut client = Client::http1(gateway.http()).await;
    assert_eq!(client.get("/site/").await.text(), "<h1>other</h1>");
    // A directory that is not there is a config problem: the old one stays.
    gateway.write_config(&config("missing"));
    gateway.signal("HUP");
    gateway.wait_for_log("route[0].static");
    assert_eq!(client.get("/site/").await.text(), "<h1>other</h1>");
    let _ = &mut gateway;
}
