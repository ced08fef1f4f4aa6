//! What the gateway adds around a route, whatever serves it: CORS (with
//! preflights answered without a guest) and response header rules.

use http::{HeaderValue, StatusCode, header};
use wasmgate_tests::client::{Client, empty};
use wasmgate_tests::{TestGateway, metric};

const CORS: &str = r#"
[[listener]]
addr = "127.0.0.1:0"

[admin]
addr = "127.0.0.1:0"

[handler.hello]
path = "{handlers}/hello.wasm"

[[route]]
path = "/api/*"
handler = "hello"
cors = { origins = ["https://app.example"], methods = ["GET", "POST"], headers = ["content-type", "x-token"], expose = ["x-request-id"], credentials = true, max_age = "10m" }
headers = { set = { "x-frame-options" = "DENY", "content-type" = "text/plain; charset=utf-8" }, append = { "cache-control" = "no-store" }, remove = ["x-powered-by"] }

[[route]]
path = "/open"
handler = "hello"
cors = { origins = ["*"] }
"#;

const GUEST_RUNS: &str = r#"wasmgate_guest_outcomes_total{handler="hello",outcome="ok"}"#;

fn header<'a>(reply: &'a wasmgate_tests::client::Reply, name: &str) -> Option<&'a str> {
    reply
        .headers
        .get(name)
        .and_then(|value| value.to_str().ok())
}

#[tokio::test]
async fn cors_preflights_are_answered_without_a_guest_and_responses_carry_the_policy() {
    let gateway = TestGateway::start(CORS);
    let mut client = Client::http1(gateway.http()).await;
    let ran = |gateway| metric(gateway, GUEST_RUNS);

    let before = ran(&gateway).await;
    let preflight = |client: &Client, origin: &str| {
        client
            .request("OPTIONS", "/api/items")
            .header(header::ORIGIN, origin)
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
            .header(
                header::ACCESS_CONTROL_REQUEST_HEADERS,
                "content-type, x-token",
            )
            .body(empty())
            .expect("request")
    };
    let allowed = client
        .send(preflight(&client, "https://app.example"))
        .await
        .expect("answered");
    assert_eq!(allowed.status, StatusCode::OK);
    assert_eq!(
        header(&allowed, "access-control-allow-origin"),
        Some("https://app.example")
    );
    assert_eq!(
        header(&allowed, "access-control-allow-credentials"),
        Some("true")
    );
    assert_eq!(header(&allowed, "access-control-max-age"), Some("600"));
    let methods = header(&allowed, "access-control-allow-methods").unwrap_or_default();
    assert!(
        methods.contains("POST") && methods.contains("GET"),
        "{methods}"
    );
    let headers = header(&allowed, "access-control-allow-headers").unwrap_or_default();
    assert!(headers.contains("x-token"), "{headers}");
    // Header rules apply to the gateway's own answers too.
    assert_eq!(header(&allowed, "x-frame-options"), Some("DENY"));

    let refused = client
        .send(preflight(&client, "https://evil.example"))
        .await
        .expect("answered");
    assert_eq!(header(&refused, "access-control-allow-origin"), None);

    // No guest ran for either preflight.
    assert_eq!(ran(&gateway).await, before);

    // A real request reaches the guest and carries the policy back.
    let request = client
        .request("GET", "/api/items")
        .header(header::ORIGIN, "https://app.example")
        .body(empty())
        .expect("request");
    let reply = client.send(request).await.expect("answered");
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        header(&reply, "access-control-allow-origin"),
        Some("https://app.example")
    );
    assert_eq!(
        header(&reply, "access-control-expose-headers"),
        Some("x-request-id")
    );
    assert!(
        reply
            .headers
            .get_all(header::VARY)
            .iter()
            .any(|value| value.to_str().unwrap_or_default().contains("origin")),
        "{:?}",
        reply.headers
    );
    // Counted when the guest's run ends, which can be just after its
    // response reached the client.
    wasmgate_tests::wait_for_metric(&gateway, GUEST_RUNS, before + 1.0).await;

    // Any origin, without credentials.
    let request = client
        .request("GET", "/open")
        .header(header::ORIGIN, "https://anyone.example")
        .body(empty())
        .expect("request");
    let open = client.send(request).await.expect("answered");
    assert_eq!(header(&open, "access-control-allow-origin"), Some("*"));
}

#[tokio::test]
async fn header_rules_set_append_and_remove() {
    let gateway = TestGateway::start(CORS);
    let mut client = Client::http1(gateway.http()).await;
    let reply = client.get("/api/x").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(header(&reply, "x-frame-options"), Some("DENY"));
    // Set replaces what the guest sent.
    assert_eq!(
        reply
            .headers
            .get_all(header::CONTENT_TYPE)
            .iter()
            .collect::<Vec<_>>(),
        vec![HeaderValue::from_static("text/plain; charset=utf-8")]
    );
    assert_eq!(header(&reply, "cache-control"), Some("no-store"));
    // Only on the route that has them.
    let other = client.get("/open").await;
    assert_eq!(header(&other, "x-frame-options"), None);
}

#[test]
fn bad_cors_and_header_rules_are_config_problems() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (code, stderr) = wasmgate_tests::check_in(
        dir.path(),
        r#"
[[listener]]
addr = "127.0.0.1:0"

[handler.hello]
path = "{handlers}/hello.wasm"

[[route]]
path = "/a"
handler = "hello"
cors = { origins = ["*"], credentials = true }

[[route]]
path = "/b"
handler = "hello"
cors = { origins = ["app.example/x"], methods = ["GE T"] }
headers = { set = { "bad header" = "x" }, append = { "x-ok" = "line\nbreak" } }
compress = { types = ["json", "text/*"] }

[[route]]
path = "/files/*"
static = "."
decompress = true
"#,
    );
    assert_eq!(code, Some(2), "{stderr}");
    for expected in [
        "route[0].cors.credentials: credentials cannot be allowed with `*` origins or headers",
        "route[1].cors.origins[0]: `app.example/x` is not an origin",
        "route[1].cors.methods[0]: `GE T` is not an HTTP method",
        "route[1].headers.set.bad header: `bad header` is not a header name",
        "route[1].headers.append.x-ok:",
        "route[1].compress.types[0]: `json` is not a content type",
        "route[2].decompress: decompress applies to routes that read a request body",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in {stderr}"
        );
    }
}
