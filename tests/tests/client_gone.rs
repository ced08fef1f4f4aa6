//! A client that goes away stops its guest: an HTTP/1.1 client that closes
//! its connection, or an HTTP/2 client that resets its stream a few
//! milliseconds after its HEADERS (the rapid-reset pattern), ends the guest's
//! run at once (not at its time limit), brings `in_flight` back down and
//! leaves an access line that says `cancelled`.

use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use wasmgate_tests::client::Client;
use wasmgate_tests::{TestGateway, hello_and_echo, metric};

/// A guest that would spin for 30 s if nobody stopped it.
fn gateway() -> TestGateway {
    TestGateway::start(&hello_and_echo(
        "[handler.spin]\nlimits = { timeout = \"30s\" }\n\n[[route]]\npath = \"/spin\"\nhandler = \"spin\"\n",
    ))
}

/// Waits up to 5 s for `series` to read `value`.
async fn until(gateway: &TestGateway, series: &str, value: f64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = metric(gateway, series).await;
        if now == value {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{series} stayed {now}, not {value}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const IN_FLIGHT: &str = "wasmgate_requests_in_flight";
const CANCELLED: &str = "wasmgate_guest_outcomes_total{handler=\"spin\",outcome=\"cancelled\"}";

#[tokio::test]
async fn an_http1_client_that_hangs_up_stops_its_guest() {
    let gateway = gateway();
    let mut raw = TcpStream::connect(gateway.http()).await.expect("connect");
    raw.write_all(b"GET /spin HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("write");
    until(&gateway, IN_FLIGHT, 1.0).await;
    drop(raw);
    until(&gateway, CANCELLED, 1.0).await;
    until(&gateway, IN_FLIGHT, 0.0).await;
    let line = gateway.wait_for_log("outcome=cancelled");
    assert!(line.contains("status=499"), "{line}");
}

#[tokio::test]
async fn http2_rapid_resets_stop_their_guests() {
    let gateway = gateway();
    let mut client = Client::h2c(gateway.http()).await;
    for _ in 0..5 {
        // HEADERS out, then RST_STREAM(CANCEL) when the request is dropped.
        let request = client.get_streaming("/spin");
        let _ = tokio::time::timeout(Duration::from_millis(5), request).await;
    }
    until(&gateway, CANCELLED, 5.0).await;
    until(&gateway, IN_FLIGHT, 0.0).await;
    // The connection and the gateway carry on.
    assert_eq!(client.get("/hello").await.status, http::StatusCode::OK);
}
