//! WASI 0.3 handlers (`wasi:http/handler@0.3.0`): told apart from 0.2 by
//! their export and served on the same routes, limits, metrics, hot swap
//! and drain; bodies stream both ways, trailers pass, and work a guest does
//! after answering runs, bounded by the handler's time limit.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use http_body_util::BodyExt as _;
use wasmgate_tests::client::{self, Client};
use wasmgate_tests::{TestGateway, handlers_dir, install, metric, wait_for_metric};

/// The 0.3 fixture on /p3 (2 s, 32 MiB, 1 MiB bodies) and the 0.3 hello
/// example on /hello.
const CONFIG: &str = r#"
[gateway]
handlers_dir = "{handlers}"

[[listener]]
addr = "127.0.0.1:0"

[handler.p3]
path = "{handlers}/p3-stream.wasm"
limits = { timeout = "2s", memory = "32MiB", body = "1MiB" }

[handler.hello]
path = "{handlers}/hello-p3.wasm"

[handler.small]
path = "{handlers}/p3-stream.wasm"
limits = { body = "1KiB" }

[handler.reused]
path = "{handlers}/p3-stream.wasm"
reuse = { max_requests = 3 }

[handler.shared]
path = "{handlers}/p3-stream.wasm"
limits = { timeout = "2s", memory = "32MiB" }
reuse = { max_requests = 20, max_concurrent = 16 }

[[route]]
path = "/p3"
handler = "p3"

[[route]]
path = "/shared"
handler = "shared"

[[route]]
path = "/reused"
handler = "reused"

[[route]]
path = "/small"
handler = "small"

[[route]]
path = "/hello"
handler = "hello"
"#;

fn fixture(name: &str) -> PathBuf {
    handlers_dir().join(format!("{name}.wasm"))
}

#[tokio::test]
async fn a_wasi_0_3_component_is_served_over_http1_and_h2_with_streamed_bodies_and_trailers() {
    let gateway = TestGateway::start(CONFIG);
    let mut h1 = Client::http1(gateway.http()).await;
    let hello = h1.get("/hello").await;
    assert_eq!(hello.status.as_u16(), 200);
    assert_eq!(
        hello.text(),
        "Hello from wasmgate over WASI 0.3! You asked for /hello\n"
    );
    assert_eq!(h1.get("/p3").await.text(), "p3\n");

    // On an instance of its own, and on one shared by concurrent requests.
    for (base, mut client) in [
        ("/p3", Client::http1(gateway.http()).await),
        ("/p3", Client::h2c(gateway.http()).await),
        ("/shared", Client::http1(gateway.http()).await),
        ("/shared", Client::h2c(gateway.http()).await),
    ] {
        let request = client
            .request("GET", &format!("{base}?chunks=50"))
            .header("te", "trailers")
            .body(client::empty())
            .expect("valid");
        let response = client.send_streaming(request).await.expect("answered");
        assert_eq!(response.status().as_u16(), 200);
        let collected = response.into_body().collect().await.expect("whole body");
        let trailers = collected.trailers().cloned();
        let body = String::from_utf8(collected.to_bytes().to_vec()).expect("utf-8");
        assert_eq!(body.lines().count(), 50);
        assert_eq!(body.lines().last(), Some("chunk 49"));
        assert_eq!(
            trailers
                .as_ref()
                .and_then(|t| t.get("x-chunks"))
                .map(|v| v.as_bytes()),
            Some(&b"50"[..]),
            "trailers: {trailers:?}"
        );
    }

    // The request body streams in and back out.
    let upload: Vec<u8> = (0..512 * 1024).map(|i| (i % 251) as u8).collect();
    for (base, mut client) in [
        ("/p3", Client::http1(gateway.http()).await),
        ("/p3", Client::h2c(gateway.http()).await),
        ("/shared", Client::http1(gateway.http()).await),
        ("/shared", Client::h2c(gateway.http()).await),
    ] {
        let request = client
            .request("POST", &format!("{base}?echo"))
            .body(client::full(upload.clone()))
            .expect("valid");
        let reply = client.send(request).await.expect("answered");
        assert_eq!(reply.status.as_u16(), 200);
        assert!(reply.body == upload, "{} bytes back", reply.body.len());
    }
    // Over the body limit (1 KiB on /small): 413 when declared. (Small
    // bodies: a large one would still be in flight when the 413 closes the
    // connection.)
    let declared = h1
        .request("POST", "/small?echo")
        .body(client::full(vec![b'a'; 1025]))
        .expect("valid");
    assert_eq!(
        h1.send(declared).await.expect("answered").status.as_u16(),
        413
    );
    let mut h2 = Client::h2c(gateway.http()).await;
    let frames = (0..4).map(|_| {
        Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(bytes::Bytes::from(vec![
            b'z';
            512
        ])))
    });
    let streamed = h2
        .request("POST", "/small?echo")
        .body(http_body_util::StreamBody::new(futures::stream::iter(frames)).boxed())
        .expect("valid");
    // Without a length the body is counted as the guest reads it: this
    // guest answers before reading, so its echo stops where its read
    // failed, at the limit; the gateway carries on.
    let reply = h2.send(streamed).await.expect("answered");
    assert_eq!(reply.status.as_u16(), 200);
    assert!(
        reply.body.len() <= 1024,
        "{} bytes echoed past a 1 KiB limit",
        reply.body.len()
    );
    assert_eq!(
        Client::http1(gateway.http()).await.get("/p3").await.text(),
        "p3\n"
    );
}

#[tokio::test]
async fn limits_hold_for_wasi_0_3_guests_even_after_they_answer() {
    let gateway = TestGateway::start(CONFIG);
    let mut client = Client::http1(gateway.http()).await;
    // Work after the response runs...
    let after = client.get("/p3?after").await;
    assert_eq!(after.text(), "answered\n");
    gateway.wait_for_log("worked after the response");
    // ...and a guest that never stops after answering is stopped by the
    // handler's 2 s limit: its client already has the whole answer.
    let started = Instant::now();
    let spun = client.get("/p3?spin-after").await;
    assert_eq!(
        (spun.status.as_u16(), spun.text().as_str()),
        (200, "answered\n")
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "the answer did not wait for the guest"
    );
    gateway.wait_for_log("guest exceeded its time limit of 2s");
    let series = r#"wasmgate_guest_outcomes_total{handler="p3",outcome="timeout"}"#;
    assert_eq!(metric(&gateway, series).await, 1.0);
    // A trap and an exhausted memory cap are 500s; the next request is fine.
    assert_eq!(client.get("/p3?trap").await.status.as_u16(), 500);
    assert_eq!(client.get("/p3?grow=64").await.status.as_u16(), 500);
    let oom = r#"wasmgate_guest_outcomes_total{handler="p3",outcome="out_of_memory"}"#;
    assert_eq!(metric(&gateway, oom).await, 1.0);
    assert_eq!(client.get("/p3").await.text(), "p3\n");
}

#[tokio::test]
async fn a_wasi_0_3_instance_is_reused_only_when_asked_and_never_after_a_failure() {
    let gateway = TestGateway::start(CONFIG);
    let mut client = Client::http1(gateway.http()).await;
    let mut counts = Vec::new();
    let series = r#"wasmgate_pool_reused_instances{handler="reused"}"#;
    for _ in 0..4 {
        let count = client.get("/reused?count").await.text();
        // The client has its answer before the guest's run is over: wait
        // until the instance is back (or, after its third, dropped).
        let waiting = if count == "3\n" { 0.0 } else { 1.0 };
        wait_for_metric(&gateway, series, waiting).await;
        counts.push(count);
    }
    assert_eq!(
        counts,
        ["1\n", "2\n", "3\n", "1\n"],
        "three requests per instance"
    );
    assert_eq!(client.get("/reused?trap").await.status.as_u16(), 500);
    assert_eq!(
        client.get("/reused?count").await.text(),
        "1\n",
        "a trapped instance is dropped"
    );
    // Without `reuse`, a fresh instance every time.
    for _ in 0..2 {
        assert_eq!(client.get("/p3?count").await.text(), "1\n");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_requests_share_one_wasi_0_3_instance_at_once_and_a_failure_retires_it() {
    let gateway = TestGateway::start(CONFIG);
    // 16 clients at once, each held 500 ms inside the guest: on one
    // instance, they are its requests 1 to 16, and the last one in finds
    // the 15 others still there.
    let mut held = Vec::new();
    for _ in 0..16 {
        let http = gateway.http();
        held.push(tokio::spawn(async move {
            let mut client = Client::http1(http).await;
            client.get("/shared?hold=500").await.text()
        }));
    }
    let mut served = Vec::new();
    let mut most_at_once = 0;
    for answer in held {
        let answer = answer.await.expect("client task");
        // "served S, with N at once"
        let numbers: Vec<u32> = answer
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|part| part.parse().ok())
            .collect();
        let [number, at_once] = numbers[..] else {
            panic!("unexpected answer {answer:?}");
        };
        served.push(number);
        most_at_once = most_at_once.max(at_once);
    }
    served.sort_unstable();
    assert_eq!(served, (1..=16).collect::<Vec<_>>(), "one instance");
    assert_eq!(most_at_once, 16, "all 16 inside the guest at once");

    let mut client = Client::http1(gateway.http()).await;
    let shared = |outcome: &str| {
        format!(r#"wasmgate_guest_outcomes_total{{handler="shared",outcome="{outcome}"}}"#)
    };
    // A trap retires the instance: the next request meets a fresh one.
    assert_eq!(client.get("/shared?trap").await.status.as_u16(), 500);
    assert_eq!(metric(&gateway, &shared("trap")).await, 1.0);
    assert_eq!(client.get("/shared?count").await.text(), "1\n");
    // So does an exhausted memory cap.
    assert_eq!(client.get("/shared?grow=64").await.status.as_u16(), 500);
    assert_eq!(metric(&gateway, &shared("out_of_memory")).await, 1.0);
    assert_eq!(client.get("/shared?count").await.text(), "1\n");
    // A guest that goes on computing after its answer holds the instance's
    // event loop: its client has the whole answer at once, the guest is
    // stopped at the request's deadline (its timeout, as on a fresh
    // instance), and the instance is retired.
    let started = Instant::now();
    let spun = client.get("/shared?spin-after").await;
    assert_eq!(spun.text(), "answered\n");
    assert!(started.elapsed() < Duration::from_secs(1));
    wait_for_metric(&gateway, &shared("timeout"), 1.0).await;
    assert_eq!(client.get("/shared?count").await.text(), "1\n");
    // A guest that does not answer in time: 504 for its client, at its
    // own deadline, whatever the instance's other requests do.
    let started = Instant::now();
    let late = client.get("/shared?hold=5000").await;
    assert_eq!(late.status.as_u16(), 504);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(metric(&gateway, &shared("timeout")).await, 2.0);
    assert_eq!(client.get("/shared?count").await.text(), "1\n");
}

/// `handlers/version.wasm` on /version, swapped under load.
const SWAP: &str = r#"
[gateway]
handlers_dir = "{dir}/handlers"
cache_dir = "{dir}/cache"

[[listener]]
addr = "127.0.0.1:0"

[handler.version]

[[route]]
path = "/version"
handler = "version"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_swaps_between_wasi_0_2_and_0_3_under_load_without_a_failed_request() {
    let dir = tempfile::tempdir().expect("dir");
    let handlers = dir.path().join("handlers");
    std::fs::create_dir(&handlers).expect("handlers");
    install(&handlers, "version.wasm", &fixture("version-v1"));
    let gateway = TestGateway::start_in(dir, SWAP);
    let stop = Arc::new(AtomicBool::new(false));
    let loops: Vec<_> = (0..4)
        .map(|_| {
            let (addr, stop) = (gateway.http(), Arc::clone(&stop));
            tokio::spawn(async move {
                let mut client = Client::http1(addr).await;
                let (mut v1, mut p3, mut failed) = (0, 0, Vec::new());
                while !stop.load(Ordering::Relaxed) {
                    let reply = client.get("/version").await;
                    match (reply.status.as_u16(), reply.text().as_str()) {
                        (200, "v1\n") => v1 += 1,
                        (200, "p3\n") => p3 += 1,
                        (status, body) => failed.push(format!("{status} {body}")),
                    }
                }
                (v1, p3, failed)
            })
        })
        .collect();
    let mut probe = Client::http1(gateway.http()).await;
    for round in 0..6 {
        let (next, answer) = if round % 2 == 0 {
            ("p3-stream", "p3\n")
        } else {
            ("version-v1", "v1\n")
        };
        install(&handlers, "version.wasm", &fixture(next));
        gateway.wait_for_generation(round + 2);
        // The load meets the new version for a while: until a request of
        // our own has met it 20 times.
        let mut met = 0;
        while met < 20 {
            if probe.get("/version").await.text() == answer {
                met += 1;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let (mut v1, mut p3) = (0, 0);
    for task in loops {
        let (a, b, failed) = task.await.expect("load loop");
        assert!(failed.is_empty(), "{failed:?}");
        v1 += a;
        p3 += b;
    }
    assert!(v1 > 0 && p3 > 0, "v1 {v1}, p3 {p3}");
}
