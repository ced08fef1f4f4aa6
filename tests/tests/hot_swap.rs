//! Hot swap: dropping files into the handlers directory and editing the
//! config replace what is served with no restart and no failed request; bad
//! files keep the last good version; requests and WebSocket connections open
//! during a swap stay on their version.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::SinkExt as _;
use http::StatusCode;
use tokio_tungstenite::tungstenite::Message;
use wasmgate_tests::client::{self, Client};
use wasmgate_tests::ws::{connect, next};
use wasmgate_tests::{TestGateway, handlers_dir, install};

/// `handlers/version.wasm` (v1 at start) on `/version`, capped at 32 MiB of
/// memory; compiled components cached in the gateway's directory.
const CONFIG: &str = r#"
[gateway]
handlers_dir = "{dir}/handlers"
cache_dir = "{dir}/cache"
grace_period = "2s"

[[listener]]
addr = "127.0.0.1:0"

[handler.version]
limits = { memory = "32MiB" }

[[route]]
path = "/version"
handler = "version"
"#;

fn fixture(name: &str) -> PathBuf {
    handlers_dir().join(format!("{name}.wasm"))
}

/// Installs like `cp`: truncate and rewrite the file in place.
fn copy_over(dir: &Path, target: &str, source: &Path) {
    std::fs::copy(source, dir.join(target)).expect("copy");
}

/// Starts a gateway on `config` with `version.wasm` = v1 in its handlers directory.
fn start(config: &str) -> (TestGateway, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let handlers = dir.path().join("handlers");
    std::fs::create_dir(&handlers).expect("handlers dir");
    install(&handlers, "version.wasm", &fixture("version-v1"));
    (TestGateway::start_in(dir, config), handlers)
}

async fn body_of(gateway: &TestGateway, path: &str) -> (StatusCode, String) {
    let reply = Client::http1(gateway.http()).await.get(path).await;
    (reply.status, reply.text())
}

#[derive(Default)]
struct Tally {
    v1: usize,
    v2: usize,
    other: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_swaps_under_load_fail_no_request() {
    let (gateway, handlers) = start(CONFIG);
    let addr = gateway.http();
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..16)
        .map(|_| {
            let stop = Arc::clone(&stop);
            tokio::spawn(async move {
                let mut tally = Tally::default();
                let mut client = Client::http1(addr).await;
                while !stop.load(Ordering::Relaxed) {
                    let request = client
                        .request("GET", "/version")
                        .body(client::empty())
                        .expect("valid");
                    match client.send(request).await {
                        Ok(reply) if reply.status == StatusCode::OK && reply.text() == "v1\n" => {
                            tally.v1 += 1
                        }
                        Ok(reply) if reply.status == StatusCode::OK && reply.text() == "v2\n" => {
                            tally.v2 += 1
                        }
                        Ok(reply) => {
                            tally
                                .other
                                .push(format!("{} {:?}", reply.status, reply.text()))
                        }
                        Err(error) => {
                            tally.other.push(format!("transport error: {error}"));
                            client = Client::http1(addr).await;
                        }
                    }
                }
                tally
            })
        })
        .collect();
    for swap in 0..30u64 {
        let next = if swap % 2 == 0 {
            "version-v2"
        } else {
            "version-v1"
        };
        // Both ways operators deploy: rename into place, and cp over the old file.
        if swap % 3 == 0 {
            copy_over(&handlers, "version.wasm", &fixture(next));
        } else {
            install(&handlers, "version.wasm", &fixture(next));
        }
        gateway.wait_for_generation(swap + 2);
    }
    stop.store(true, Ordering::Relaxed);
    let mut total = Tally::default();
    for client in clients {
        let tally = client.await.expect("client task");
        total.v1 += tally.v1;
        total.v2 += tally.v2;
        total.other.extend(tally.other);
    }
    assert!(
        total.other.is_empty(),
        "{} bad responses, e.g. {:?}",
        total.other.len(),
        total.other.first()
    );
    assert!(
        total.v1 > 0 && total.v2 > 0,
        "both versions served: {} v1, {} v2",
        total.v1,
        total.v2
    );
    // The 30th swap installed v1: every request from now on gets it.
    for _ in 0..20 {
        assert_eq!(
            body_of(&gateway, "/version").await,
            (StatusCode::OK, "v1\n".into())
        );
    }
}

#[tokio::test]
async fn bad_files_keep_the_last_good_version_serving() {
    let (gateway, handlers) = start(CONFIG);
    let dir = tempfile::tempdir().expect("temp dir");
    let v2 = std::fs::read(fixture("version-v2")).expect("fixture");
    let bad: [(&str, Vec<u8>, &str); 5] = [
        (
            "not wasm",
            b"<html>a web page</html>".to_vec(),
            "not a WebAssembly file",
        ),
        ("truncated", v2[..v2.len() / 2].to_vec(), "does not compile"),
        (
            "core module",
            b"\0asm\x01\0\0\0".to_vec(),
            "a core WebAssembly module, not a component",
        ),
        (
            "no handler export",
            std::fs::read(fixture("no-handler")).expect("fixture"),
            "exports neither wasi:http/incoming-handler",
        ),
        (
            "fails to instantiate",
            std::fs::read(fixture("big-memory")).expect("fixture"),
            "cannot be instantiated",
        ),
    ];
    for (generation, (case, bytes, reason)) in (2u64..).zip(bad) {
        let source = dir.path().join("bad.wasm");
        std::fs::write(&source, bytes).expect("write");
        install(&handlers, "version.wasm", &source);
        gateway.wait_for_generation(generation);
        let line = gateway.wait_for_log(reason);
        assert!(
            line.contains("version.wasm") && line.contains("previous version keeps serving"),
            "{case}: {line}"
        );
        assert_eq!(
            body_of(&gateway, "/version").await,
            (StatusCode::OK, "v1\n".into()),
            "{case}"
        );
    }
    // A good file after the bad ones is picked up.
    install(&handlers, "version.wasm", &fixture("version-v2"));
    gateway.wait_for_generation(7);
    assert_eq!(
        body_of(&gateway, "/version").await,
        (StatusCode::OK, "v2\n".into())
    );
}

#[tokio::test]
async fn a_file_written_slowly_is_loaded_only_once_complete() {
    let (gateway, handlers) = start(CONFIG);
    let v2 = std::fs::read(fixture("version-v2")).expect("fixture");
    let mut file = std::fs::File::create(handlers.join("version.wasm")).expect("open for writing");
    for piece in v2.chunks(v2.len().div_ceil(4)) {
        file.write_all(piece).expect("write");
        file.flush().expect("flush");
        // Longer than the reload debounce: a watcher reacting to writes
        // would load the partial file now.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            body_of(&gateway, "/version").await,
            (StatusCode::OK, "v1\n".into())
        );
    }
    drop(file);
    gateway.wait_for_generation(2);
    assert_eq!(
        body_of(&gateway, "/version").await,
        (StatusCode::OK, "v2\n".into())
    );
    let log = gateway.log();
    assert!(
        !log.contains("ERROR"),
        "a partial file was reported as broken:\n{log}"
    );
}

#[tokio::test]
async fn a_deleted_file_keeps_its_last_version_serving() {
    let (gateway, handlers) = start(CONFIG);
    std::fs::remove_file(handlers.join("version.wasm")).expect("delete");
    gateway.wait_for_log("component file deleted; the last good version keeps serving");
    assert_eq!(
        body_of(&gateway, "/version").await,
        (StatusCode::OK, "v1\n".into())
    );
    install(&handlers, "version.wasm", &fixture("version-v2"));
    gateway.wait_for_generation(3);
    assert_eq!(
        body_of(&gateway, "/version").await,
        (StatusCode::OK, "v2\n".into())
    );
}

#[tokio::test]
async fn a_dropped_file_gets_an_automatic_route_that_configured_routes_override() {
    let config = CONFIG.replace("[gateway]\n", "[gateway]\nauto_routes = true\n")
        + "\n[[route]]\npath = \"/greeter/config\"\nhandler = \"version\"\n";
    let (gateway, handlers) = start(&config);
    assert_eq!(body_of(&gateway, "/greeter").await.0, StatusCode::NOT_FOUND);
    install(&handlers, "greeter.wasm", &fixture("hello"));
    gateway.wait_for_generation(2);
    assert_eq!(
        body_of(&gateway, "/greeter").await,
        (StatusCode::OK, "Hello from wasmgate!\n".into())
    );
    assert_eq!(body_of(&gateway, "/greeter/a/b").await.0, StatusCode::OK);
    assert_eq!(
        body_of(&gateway, "/greeter/config").await,
        (StatusCode::OK, "v1\n".into())
    );
}

#[tokio::test]
async fn config_edits_add_and_remove_routes_and_invalid_edits_change_nothing() {
    let (gateway, _handlers) = start(CONFIG);
    let added = format!("{CONFIG}\n[[route]]\npath = \"/v/*\"\nhandler = \"version\"\n");
    gateway.write_config(&added);
    gateway.wait_for_generation(2);
    assert_eq!(
        body_of(&gateway, "/v/x").await,
        (StatusCode::OK, "v1\n".into())
    );
    assert_eq!(body_of(&gateway, "/version").await.0, StatusCode::OK);

    gateway.write_config(&added.replacen("path = \"/version\"", "path = \"/renamed\"", 1));
    gateway.wait_for_generation(3);
    assert_eq!(body_of(&gateway, "/version").await.0, StatusCode::NOT_FOUND);
    assert_eq!(body_of(&gateway, "/renamed").await.0, StatusCode::OK);

    gateway.write_config("[[listener]\nthis is not toml");
    gateway.wait_for_log("reload rejected");
    assert_eq!(body_of(&gateway, "/renamed").await.0, StatusCode::OK);
    assert_eq!(body_of(&gateway, "/v/x").await.0, StatusCode::OK);
}

#[tokio::test]
async fn sighup_reloads_the_config() {
    let config = CONFIG.replace("[gateway]\n", "[gateway]\nwatch = false\n");
    let (gateway, _handlers) = start(&config);
    gateway.write_config(&format!(
        "{config}\n[[route]]\npath = \"/hup\"\nhandler = \"version\"\n"
    ));
    gateway.signal("HUP");
    let line = gateway.wait_for_generation(2);
    assert!(line.contains("cause=SIGHUP"), "{line}");
    assert_eq!(
        body_of(&gateway, "/hup").await,
        (StatusCode::OK, "v1\n".into())
    );
}

#[tokio::test]
async fn a_restart_maps_compiled_components_from_the_cache() {
    let cache = tempfile::tempdir().expect("cache dir");
    let config = CONFIG.replace("{dir}/cache", &cache.path().display().to_string());
    let (cold, _) = start(&config);
    let loaded = cold.wait_for_log("component loaded");
    assert!(loaded.contains("origin=Compiled"), "{loaded}");
    drop(cold);
    let (warm, _) = start(&config);
    let loaded = warm.wait_for_log("component loaded");
    assert!(loaded.contains("origin=Cache"), "{loaded}");
    assert_eq!(
        body_of(&warm, "/version").await,
        (StatusCode::OK, "v1\n".into())
    );
}

#[tokio::test]
async fn wasmgate_reload_asks_the_running_gateway_through_its_admin_listener() {
    // The CLI finds the gateway through the config file, so the admin port is
    // chosen here: reserve a free one, release it, configure it.
    let port = wasmgate_tests::free_port();
    let config = format!(
        "{}\n[admin]\naddr = \"127.0.0.1:{port}\"\n",
        CONFIG.replace("[gateway]\n", "[gateway]\nwatch = false\n")
    );
    let (gateway, _handlers) = start(&config);
    let config_file = gateway.dir().join("wasmgate.toml").display().to_string();
    gateway.write_config(&format!(
        "{config}\n[[route]]\npath = \"/cli\"\nhandler = \"version\"\n"
    ));
    let output = wasmgate_tests::run_cli(&["reload", "--config", &config_file], gateway.dir());
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "reloaded: generation 2\n"
    );
    assert_eq!(
        body_of(&gateway, "/cli").await,
        (StatusCode::OK, "v1\n".into())
    );

    // An invalid file is refused by the CLI before it bothers the gateway...
    gateway.write_config(&config.replace("handler = \"version\"", "handler = \"nobody\""));
    let output = wasmgate_tests::run_cli(&["reload", "--config", &config_file], gateway.dir());
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("route[0].handler: no [handler.nobody] is configured"),
        "{stderr}"
    );
    assert!(
        stderr.contains("the gateway was not asked to reload"),
        "{stderr}"
    );

    // ...and by the gateway itself, which lists every problem and keeps going.
    let admin = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut client = Client::http1(admin).await;
    let request = client
        .request("POST", "/reload")
        .body(client::empty())
        .expect("valid");
    let reply = client.send(request).await.expect("admin answers");
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    let answer: serde_json::Value = serde_json::from_slice(&reply.body).expect("JSON");
    let problems = answer["problems"].as_array().expect("problem list");
    assert!(
        problems[0]
            .as_str()
            .is_some_and(|p| p.contains("no [handler.nobody]")),
        "{answer}"
    );
    assert_eq!(
        client.get("/reload").await.status,
        StatusCode::METHOD_NOT_ALLOWED
    );
    assert_eq!(
        body_of(&gateway, "/cli").await,
        (StatusCode::OK, "v1\n".into())
    );
}

/// Like [`start`], with `slow.wasm` installed too and served at `/slow`
/// under `[handler.slow]` with `settings`.
fn start_with_slow(settings: &str) -> (TestGateway, PathBuf) {
    let config = CONFIG.replace(
        "[handler.version]",
        &format!("[handler.slow]\n{settings}\n\n[handler.version]"),
    ) + "\n[[route]]\npath = \"/slow\"\nhandler = \"slow\"\n";
    let dir = tempfile::tempdir().expect("temp dir");
    let handlers = dir.path().join("handlers");
    std::fs::create_dir(&handlers).expect("handlers dir");
    install(&handlers, "version.wasm", &fixture("version-v1"));
    install(&handlers, "slow.wasm", &fixture("slow"));
    (TestGateway::start_in(dir, &config), handlers)
}

#[tokio::test]
async fn a_request_in_flight_during_a_swap_finishes_on_its_version() {
    let (gateway, handlers) = start_with_slow("");
    let mut client = Client::http1(gateway.http()).await;
    let request = client
        .request("GET", "/slow?chunks=4&pause_ms=200")
        .body(client::empty())
        .expect("valid");
    let response = client.send_streaming(request).await.expect("response head");
    // Mid-response, the handler becomes another component entirely.
    install(&handlers, "slow.wasm", &fixture("hello"));
    gateway.wait_for_generation(2);
    assert_eq!(
        body_of(&gateway, "/slow").await,
        (StatusCode::OK, "Hello from wasmgate!\n".into()),
        "new requests get the new version"
    );
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .expect("the in-flight body completes")
        .to_bytes();
    assert_eq!(body, "chunk 0\nchunk 1\nchunk 2\nchunk 3\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swap_does_not_reset_the_concurrency_limit() {
    let (gateway, handlers) = start_with_slow("limits = { concurrency = 2 }");
    let mut holders = Vec::new();
    for _ in 0..2 {
        let mut client = Client::http1(gateway.http()).await;
        let response = client.get_streaming("/slow?chunks=30&pause_ms=100").await;
        assert_eq!(response.status(), StatusCode::OK);
        holders.push((client, response));
    }
    install(&handlers, "slow.wasm", &fixture("hello"));
    gateway.wait_for_generation(2);
    let (status, _) = body_of(&gateway, "/slow").await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "the old version's two requests still count against the limit"
    );
    for (_client, response) in holders {
        http_body_util::BodyExt::collect(response.into_body())
            .await
            .expect("the old version's bodies complete");
    }
    assert_eq!(
        body_of(&gateway, "/slow").await,
        (StatusCode::OK, "Hello from wasmgate!\n".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_hot_swap_open_connections_keep_their_version_and_new_ones_get_the_new() {
    let dir = tempfile::tempdir().expect("temp dir");
    let handlers = dir.path().join("handlers");
    std::fs::create_dir(&handlers).expect("handlers dir");
    install(&handlers, "live.wasm", &fixture("ws-echo"));
    let config = "[gateway]\nhandlers_dir = \"{dir}/handlers\"\n\n[[listener]]\naddr = \"127.0.0.1:0\"\n\n\
                  [handler.live]\nworld = \"websocket\"\n\n[[route]]\npath = \"/live\"\nhandler = \"live\"\n";
    let gateway = TestGateway::start_in(dir, config);
    // ws-echo answers `subscribe:T` with "subscribed to T"; the chat
    // component publishes the text to its room, so it comes back as is.
    let mut old = connect(&gateway, "/live").await.expect("upgrade");
    old.send(Message::text("subscribe:t")).await.expect("send");
    assert_eq!(next(&mut old).await, Message::text("subscribed to t"));
    install(&handlers, "live.wasm", &fixture("chat"));
    gateway.wait_for_generation(2);
    let mut new = connect(&gateway, "/live").await.expect("upgrade");
    new.send(Message::text("subscribe:t")).await.expect("send");
    assert_eq!(next(&mut new).await, Message::text("subscribe:t"));
    old.send(Message::text("subscribe:u")).await.expect("send");
    assert_eq!(next(&mut old).await, Message::text("subscribed to u"));
}
