//! Instance reuse (opt-in per handler): what a guest keeps in memory
//! survives from one request to the next on a reused instance, but never
//! past a trap, an exhausted memory cap, `max_requests` or `idle`; without
//! `reuse`, every request gets a fresh instance.

use std::time::Duration;

use wasmgate_tests::client::Client;
use wasmgate_tests::{TestGateway, wait_for_metric};

/// The counter fixture three ways: reused (3 requests at most, 32 MiB),
/// reused with a short idle time, and fresh per request (the default).
const CONFIG: &str = r#"
[gateway]
handlers_dir = "{handlers}"

[[listener]]
addr = "127.0.0.1:0"

[handler.counter]
reuse = { max_requests = 3 }
limits = { memory = "32MiB" }

[handler.brief]
path = "{handlers}/counter.wasm"
reuse = { max_requests = 100, idle = "100ms" }

[handler.fresh]
path = "{handlers}/counter.wasm"

[[route]]
path = "/counter"
handler = "counter"

[[route]]
path = "/brief"
handler = "brief"

[[route]]
path = "/fresh"
handler = "fresh"
"#;

/// What `path` answers to one request after another on one connection.
/// The client has a response before its guest has returned: before each
/// next request, wait until the gateway has the instance back (or has
/// dropped it), as its reused-instances gauge says.
async fn counts(
    gateway: &TestGateway,
    client: &mut Client,
    path: &str,
    times: usize,
) -> Vec<String> {
    let mut answers = Vec::new();
    for _ in 0..times {
        let reply = client.get(path).await;
        let answer = format!("{} {}", reply.status.as_u16(), reply.text().trim());
        settled(gateway, handler_of(path), &answer).await;
        answers.push(answer);
    }
    answers
}

fn handler_of(path: &str) -> &str {
    path.trim_start_matches('/').split('?').next().unwrap_or("")
}

/// Waits until `handler`'s reused-instances gauge says where the instance
/// that gave `answer` went: back (1), or dropped after its third request on
/// /counter (0). Other answers and handlers are not waited on.
async fn settled(gateway: &TestGateway, handler: &str, answer: &str) {
    let waiting = match (handler, answer) {
        ("counter", "200 3") => 0.0,
        ("counter" | "brief", "200 1" | "200 2") => 1.0,
        _ => return,
    };
    let series = format!(r#"wasmgate_pool_reused_instances{{handler="{handler}"}}"#);
    wait_for_metric(gateway, &series, waiting).await;
}

#[tokio::test]
async fn a_reused_instance_keeps_its_state_up_to_max_requests() {
    let gateway = TestGateway::start(CONFIG);
    let mut client = Client::http1(gateway.http()).await;
    assert_eq!(
        counts(&gateway, &mut client, "/counter", 7).await,
        [
            "200 1", "200 2", "200 3", "200 1", "200 2", "200 3", "200 1"
        ],
        "three requests per instance, then a fresh one"
    );
    // Without `reuse`, every request meets a fresh instance.
    assert_eq!(
        counts(&gateway, &mut client, "/fresh", 3).await,
        ["200 1", "200 1", "200 1"]
    );
}

#[tokio::test]
async fn a_trap_or_an_exhausted_memory_cap_is_never_reused() {
    let gateway = TestGateway::start(CONFIG);
    let mut client = Client::http1(gateway.http()).await;
    assert_eq!(
        counts(&gateway, &mut client, "/counter", 1).await,
        ["200 1"]
    );
    let trapped = client.get("/counter?trap").await;
    assert_eq!(trapped.status.as_u16(), 500);
    assert_eq!(
        counts(&gateway, &mut client, "/counter", 2).await,
        ["200 1", "200 2"],
        "the trapped instance was dropped"
    );
    // 64 MiB more than the 32 MiB cap: out of memory, and dropped.
    let starved = client.get("/counter?grow=64").await;
    assert_eq!(starved.status.as_u16(), 500, "{}", starved.text());
    assert_eq!(
        counts(&gateway, &mut client, "/counter", 1).await,
        ["200 1"]
    );
}

#[tokio::test]
async fn an_instance_idle_past_its_time_is_not_reused() {
    let gateway = TestGateway::start(CONFIG);
    let mut client = Client::http1(gateway.http()).await;
    assert_eq!(
        counts(&gateway, &mut client, "/brief", 2).await,
        ["200 1", "200 2"]
    );
    // Idling is what is tested: wait past `idle` (100 ms).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(counts(&gateway, &mut client, "/brief", 1).await, ["200 1"]);
}
