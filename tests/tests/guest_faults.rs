//! Misbehaving guests fail only their own request: a trap answers 500, an
//! endless loop 504 at its time limit, and a guest that exhausts its memory
//! cap 500, while the gateway serves everything else and stays bounded.

use std::time::{Duration, Instant};

use http::StatusCode;
use wasmgate_tests::client::Client;
use wasmgate_tests::{HELLO_BODY, TestGateway, hello_and_echo};

#[tokio::test]
async fn a_trap_fails_only_its_request() {
    let gateway = TestGateway::start(&hello_and_echo(
        r#"
[handler.trap]

[[route]]
path = "/trap"
handler = "trap"
"#,
    ));
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
    let gateway = TestGateway::start(&hello_and_echo(
        r#"
[handler.spin]
limits = { timeout = "1s" }

[[route]]
path = "/spin"
handler = "spin"
"#,
    ));
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
async fn guests_that_exhaust_their_memory_cap_leave_the_gateway_bounded() {
    let gateway = TestGateway::start(&hello_and_echo(
        "[handler.hog]\nlimits = { memory = \"32MiB\" }\n\n[[route]]\npath = \"/hog\"\nhandler = \"hog\"\n",
    ));
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
