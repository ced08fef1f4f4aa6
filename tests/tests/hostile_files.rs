//! Loading cannot wedge the gateway: a component path that is a FIFO, a
//! device or an oversized file is refused with a clear reason while the
//! previous version keeps serving, and the next reload works; a reload
//! asked for during the drain is refused; and the grace period is a
//! deadline for the whole process, even with a load still stuck.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use http::StatusCode;
use wasmgate_tests::client::{self, Client};
use wasmgate_tests::{TestGateway, handlers_dir};

/// `site` served from `{dir}/site.wasm` (a copy of the hello example).
fn gateway(grace: &str) -> TestGateway {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::copy(
        handlers_dir().join("hello.wasm"),
        dir.path().join("site.wasm"),
    )
    .expect("copy hello");
    let config = format!(
        "[gateway]\nhandlers_dir = \"{{handlers}}\"\nwatch = false\ngrace_period = \"{grace}\"\n\n\
         [[listener]]\naddr = \"127.0.0.1:0\"\n\n\
         [handler.site]\npath = \"{{dir}}/site.wasm\"\n\n\
         [handler.slow]\n\n\
         [[route]]\npath = \"/site\"\nhandler = \"site\"\n\n\
         [[route]]\npath = \"/slow\"\nhandler = \"slow\"\n"
    );
    TestGateway::start_in(dir, &config)
}

fn replace_with_fifo(path: &Path) {
    std::fs::remove_file(path).expect("remove");
    let made = Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("mkfifo runs");
    assert!(made.success());
}

async fn reload(gateway: &TestGateway) -> (StatusCode, String) {
    let mut client = Client::http1(gateway.admin()).await;
    let request = client
        .request("POST", "/reload")
        .body(client::empty())
        .expect("valid");
    let reply = tokio::time::timeout(Duration::from_secs(10), client.send(request))
        .await
        .expect("the reload answers in time")
        .expect("admin answers");
    (reply.status, reply.text())
}

async fn site_is_served(gateway: &TestGateway) {
    let reply = Client::http1(gateway.http()).await.get("/site").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
}

#[tokio::test]
async fn fifos_devices_and_oversized_files_are_refused_and_the_old_version_serves() {
    let gateway = gateway("5s");
    let site = gateway.dir().join("site.wasm");

    replace_with_fifo(&site);
    assert_eq!(reload(&gateway).await.0, StatusCode::OK);
    gateway.wait_for_log("site.wasm: not a regular file (a FIFO)");
    site_is_served(&gateway).await;

    std::fs::remove_file(&site).expect("remove");
    std::os::unix::fs::symlink("/dev/zero", &site).expect("symlink");
    assert_eq!(reload(&gateway).await.0, StatusCode::OK);
    gateway.wait_for_log("site.wasm: not a regular file (a character device)");
    site_is_served(&gateway).await;

    std::fs::remove_file(&site).expect("remove");
    let huge = std::fs::File::create(&site).expect("create");
    huge.set_len(300 * 1024 * 1024).expect("sparse 300 MiB");
    assert_eq!(reload(&gateway).await.0, StatusCode::OK);
    gateway.wait_for_log("site.wasm: 314572800 bytes, more than a component may have (256 MiB)");
    site_is_served(&gateway).await;

    std::fs::remove_file(&site).expect("remove");
    std::fs::copy(handlers_dir().join("echo.wasm"), &site).expect("copy echo");
    let (status, body) = reload(&gateway).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let reply = Client::http1(gateway.http()).await.get("/site").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_ne!(
        reply.text(),
        wasmgate_tests::HELLO_BODY,
        "the new version serves"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grace_period_is_a_deadline_even_with_a_load_stuck() {
    let mut gateway = gateway("1s");
    replace_with_fifo(&gateway.dir().join("site.wasm"));
    // A reload that may never finish reading its file, then the end.
    gateway.signal("HUP");
    gateway.wait_for_log("reloading cause=SIGHUP");
    gateway.signal("TERM");
    let started = Instant::now();
    gateway.wait_exit(Duration::from_secs(10));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "exited only after {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_during_the_drain_is_refused() {
    let gateway = gateway("10s");
    let mut slow = Client::http1(gateway.http()).await;
    // Its head is out: the request is in flight through the drain.
    let response = slow.get_streaming("/slow?chunks=20&pause_ms=100").await;
    gateway.signal("TERM");
    gateway.wait_for_log("draining");
    let (status, body) = reload(&gateway).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("draining"), "{body}");
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .expect("the in-flight response completes");
    assert_eq!(body.to_bytes().len(), 20 * "chunk 0\n".len() + 10);
}

/// A compiled component is native code the gateway maps and runs: a cache
/// directory other users may write to is refused (the gateway compiles
/// instead, and says why).
#[tokio::test]
async fn a_cache_directory_others_may_write_to_is_not_used() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().expect("temp dir");
    let cache = dir.path().join("cache");
    std::fs::create_dir(&cache).expect("mkdir");
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let config = wasmgate_tests::hello_and_echo("")
        .replace("[gateway]\n", "[gateway]\ncache_dir = \"{dir}/cache\"\n");
    let gateway = TestGateway::start_in(dir, &config);
    let line = gateway.wait_for_log("compile cache disabled");
    assert!(
        line.contains("other users may write to it (mode 777)"),
        "{line}"
    );
    site_is_served_by(&gateway, "/hello").await;
    assert_eq!(
        std::fs::read_dir(&cache).expect("listing").count(),
        0,
        "nothing was written to it"
    );
}

async fn site_is_served_by(gateway: &TestGateway, path: &str) {
    let reply = Client::http1(gateway.http()).await.get(path).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
}
