//! Shutdown: SIGTERM drains in-flight requests, a second signal does not wait.

use std::time::Duration;

use http::StatusCode;
use http_body_util::BodyExt;
use wasmgate_tests::client::{self, Client};
use wasmgate_tests::{TestGateway, slow_config};

fn gateway(grace: &str) -> TestGateway {
    TestGateway::start(&slow_config(grace, ""))
}

#[tokio::test]
async fn sigterm_lets_an_in_flight_response_finish_then_exits_0() {
    let mut gateway = gateway("10s");
    let mut client = Client::http1(gateway.http()).await;
    let request = client
        .request("GET", "/slow?chunks=5&pause_ms=200")
        .body(client::empty())
        .expect("valid");
    let response = client.send_streaming(request).await.expect("response head");
    assert_eq!(response.status(), StatusCode::OK);
    // The head is out, so the request is in flight: now ask the gateway to stop.
    gateway.signal("TERM");
    let body = response
        .into_body()
        .collect()
        .await
        .expect("the whole body arrives")
        .to_bytes();
    assert_eq!(body, "chunk 0\nchunk 1\nchunk 2\nchunk 3\nchunk 4\n");
    let status = gateway.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{}", gateway.log());
    gateway.wait_for_log("draining");
}

#[tokio::test]
async fn a_second_signal_exits_without_waiting() {
    let mut gateway = gateway("60s");
    let mut client = Client::http1(gateway.http()).await;
    let request = client
        .request("GET", "/slow?chunks=300&pause_ms=100")
        .body(client::empty())
        .expect("valid");
    let response = client.send_streaming(request).await.expect("response head");
    assert_eq!(response.status(), StatusCode::OK);
    gateway.signal("TERM");
    // Wait until the drain has begun before the second signal.
    let mut body = response.into_body();
    let first = body
        .frame()
        .await
        .expect("a first chunk")
        .expect("readable");
    assert!(first.is_data());
    gateway.wait_for_log("draining");
    gateway.signal("INT");
    let status = gateway.wait_exit(Duration::from_secs(5));
    assert_eq!(status.code(), Some(1));
}
