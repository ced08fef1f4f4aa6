//! CPU budgets: `limits.fuel` stops a guest that computes too long, however
//! long its wall-clock timeout, as its own outcome; a reload cannot turn
//! fuel metering on in a running process.

use std::time::{Duration, Instant};

use http::StatusCode;
use wasmgate_tests::client::Client;
use wasmgate_tests::{TestGateway, metric, wait_for_metric};

const BUDGETED: &str = "[gateway]\nhandlers_dir = \"{handlers}\"\nauto_routes = false\n\n\
                        [[listener]]\naddr = \"127.0.0.1:0\"\n\n\
                        [handler.spin]\nlimits = { timeout = \"60s\", fuel = 200_000_000 }\n\n\
                        [handler.hello]\nlimits = { fuel = 10_000_000 }\n\n\
                        [[route]]\npath = \"/spin\"\nhandler = \"spin\"\n\n\
                        [[route]]\npath = \"/hello\"\nhandler = \"hello\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_loop_ends_by_fuel_long_before_its_timeout() {
    let gateway = TestGateway::start(BUDGETED);
    let mut client = Client::http1(gateway.http()).await;
    for _ in 0..2 {
        let started = Instant::now();
        let reply = client.get("/spin").await;
        assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT);
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "stopped by its budget, not its 60 s timeout: {:?}",
            started.elapsed()
        );
    }
    gateway.wait_for_log("guest used up its CPU budget of 200000000 fuel (limits.fuel)");
    wait_for_metric(
        &gateway,
        "wasmgate_guest_outcomes_total{handler=\"spin\",outcome=\"out_of_fuel\"}",
        2.0,
    )
    .await;
    assert_eq!(
        metric(
            &gateway,
            "wasmgate_guest_outcomes_total{handler=\"spin\",outcome=\"timeout\"}"
        )
        .await,
        0.0
    );
    // A handler whose work fits its budget is unaffected, request after request.
    for _ in 0..3 {
        assert_eq!(client.get("/hello").await.status, StatusCode::OK);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_cannot_add_a_cpu_budget_to_a_process_without_metering() {
    let unmetered = BUDGETED
        .replace(", fuel = 200_000_000", "")
        .replace("limits = { fuel = 10_000_000 }\n", "");
    let gateway = TestGateway::start(&unmetered);
    gateway.write_config(BUDGETED);
    gateway.signal("HUP");
    gateway.wait_for_log(
        "limits.fuel: CPU budgets need fuel metering, which is chosen when wasmgate starts; restart it to apply them",
    );
    let reply = Client::http1(gateway.http()).await.get("/hello").await;
    assert_eq!(reply.status, StatusCode::OK);
}
