//! HTTP middleware on routes: wasi:http handlers that answer a request
//! (401) or pass it on to `http://next/`, in order, ending at the route's
//! handler, with the response coming back through them.

use http::StatusCode;
use wasmgate_tests::client::{self, Client};
use wasmgate_tests::{TestGateway, metric};

/// `/` (hello) and `/echo` (echo, a 512 KiB body limit) behind `auth` then
/// `stamp`; `/p3` (a WASI 0.3 handler) behind `stamp`; `/bare` is hello
/// with no middleware.
const CONFIG: &str = r#"
[gateway]
handlers_dir = "{handlers}"
auto_routes = false

[[listener]]
addr = "127.0.0.1:0"

[handler.auth]
config.token = "s3cret"
limits = { timeout = "5s" }

[handler.stamp]
path = "{handlers}/mw-stamp.wasm"

[handler.hello]

[handler.echo]
limits = { body = "512KiB" }

[handler.hello-p3]

[[route]]
path = "/"
handler = "hello"
middleware = ["auth", "stamp"]

[[route]]
path = "/echo"
handler = "echo"
middleware = ["auth", "stamp"]

[[route]]
path = "/p3"
handler = "hello-p3"
middleware = ["stamp"]

[[route]]
path = "/bare"
handler = "hello"
"#;

/// The series counting `handler`'s runs that ended well.
fn ran(handler: &str) -> String {
    format!("wasmgate_guest_outcomes_total{{handler=\"{handler}\",outcome=\"ok\"}}")
}

async fn get(gateway: &TestGateway, path: &str, token: Option<&str>) -> client::Reply {
    let mut client = Client::http1(gateway.http()).await;
    let mut request = client.request("GET", path);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    client
        .send(request.body(client::empty()).expect("request"))
        .await
        .expect("response")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn middleware_answers_401_without_reaching_the_handler() {
    let gateway = TestGateway::start(CONFIG);
    let refused = get(&gateway, "/", None).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert!(refused.headers.get("x-middleware").is_none());
    let wrong = get(&gateway, "/", Some("guess")).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    // auth ran twice; neither stamp nor hello ran at all.
    wasmgate_tests::wait_for_metric(&gateway, &ran("auth"), 2.0).await;
    assert_eq!(metric(&gateway, &ran("stamp")).await, 0.0);
    assert_eq!(metric(&gateway, &ran("hello")).await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passed_request_reaches_the_handler_and_the_response_is_stamped_on_the_way_back() {
    let gateway = TestGateway::start(CONFIG);
    let reply = get(&gateway, "/", Some("s3cret")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.text(), wasmgate_tests::HELLO_BODY);
    assert_eq!(reply.headers["x-middleware"], "stamp");
    let bare = get(&gateway, "/bare", None).await;
    assert_eq!(bare.status, StatusCode::OK);
    assert!(bare.headers.get("x-middleware").is_none());
    // A WASI 0.3 handler at the end of a chain.
    let p3 = get(&gateway, "/p3", None).await;
    assert_eq!(p3.status, StatusCode::OK, "{}", p3.text());
    assert_eq!(p3.headers["x-middleware"], "stamp");
    // Each link counts as its own handler, the request once for its route.
    // (A run is counted when it ends, which may be after its answer.)
    wasmgate_tests::wait_for_metric(&gateway, &ran("stamp"), 2.0).await;
    wasmgate_tests::wait_for_metric(&gateway, &ran("auth"), 1.0).await;
    wasmgate_tests::wait_for_metric(&gateway, &ran("hello"), 2.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_stream_through_the_chain_under_the_handlers_own_limits() {
    let gateway = TestGateway::start(CONFIG);
    let mut client = Client::http1(gateway.http()).await;
    let body: Vec<u8> = (0..400 * 1024).map(|index| (index % 251) as u8).collect();
    let request = client
        .request("POST", "/echo?body")
        .header("authorization", "Bearer s3cret")
        .body(client::full(body.clone()))
        .expect("request");
    let reply = client.send(request).await.expect("response");
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body.len(), body.len());
    assert!(reply.body == body, "the echoed body differs");
    // The handler's own body limit holds behind the middleware.
    let mut client = Client::http1(gateway.http()).await;
    let request = client
        .request("POST", "/echo?length")
        .header("authorization", "Bearer s3cret")
        .body(client::full(vec![0u8; 600 * 1024]))
        .expect("request");
    let reply = client.send(request).await.expect("response");
    assert_ne!(reply.status, StatusCode::OK, "{}", reply.text());
}

/// A middleware passing one request on many times at once gets the same
/// bound as requests out to the network: at most 16 per instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_middleware_cannot_fan_a_request_out_without_bound() {
    let gateway = TestGateway::start(
        "[gateway]\nhandlers_dir = \"{handlers}\"\nauto_routes = false\n\n[[listener]]\naddr = \"127.0.0.1:0\"\n\n\
         [handler.mw-fanout]\n\n[handler.slow]\n\n\
         [[route]]\npath = \"/fan\"\nhandler = \"slow\"\nmiddleware = [\"mw-fanout\"]\n",
    );
    let reply = Client::http1(gateway.http())
        .await
        .get("/fan?fanout=24")
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.text(), "passed=16 refused=8");
    gateway.wait_for_log("passing a request on denied: 16 already out from this instance");
}
