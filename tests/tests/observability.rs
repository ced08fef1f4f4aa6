//! Observing the gateway: the admin listener's metrics, health and status
//! endpoints after known traffic, checked by Prometheus' own tools, and the
//! access log.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use http::StatusCode;
use wasmgate_tests::client::Client;
use wasmgate_tests::{TestGateway, hello_and_echo};

fn fixtures() -> String {
    hello_and_echo(
        "[handler.trap]\n[handler.hog]\nlimits = { memory = \"16MiB\" }\n\
         [handler.spin]\nlimits = { timeout = \"300ms\" }\n\
         [[route]]\npath = \"/trap\"\nhandler = \"trap\"\n\
         [[route]]\npath = \"/hog\"\nhandler = \"hog\"\n\
         [[route]]\npath = \"/spin\"\nhandler = \"spin\"\n",
    )
}

async fn admin_get(gateway: &TestGateway, path: &str) -> (StatusCode, String) {
    let reply = Client::http1(gateway.admin()).await.get(path).await;
    (reply.status, reply.text())
}

/// The value of the sample `name{labels}` in a scrape, if present.
fn sample(scrape: &str, series: &str) -> Option<f64> {
    scrape
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

#[tokio::test]
async fn metrics_count_known_traffic_by_route_handler_and_outcome() {
    let gateway = TestGateway::start(&fixtures());
    let mut client = Client::http1(gateway.http()).await;
    for _ in 0..5 {
        assert_eq!(client.get("/hello").await.status, StatusCode::OK);
    }
    assert_eq!(client.get("/echo/x?y=1").await.status, StatusCode::OK);
    assert_eq!(client.get("/nowhere").await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        client.get("/trap").await.status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert_eq!(
        client.get("/hog").await.status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert_eq!(
        client.get("/spin").await.status,
        StatusCode::GATEWAY_TIMEOUT
    );
    drop(client);
    let (status, scrape) = admin_get(&gateway, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    let expect = [
        (
            r#"wasmgate_requests_total{handler="hello",method="GET",route="route[0]",status="2xx"}"#,
            5.0,
        ),
        (
            r#"wasmgate_requests_total{handler="echo",method="GET",route="route[1]",status="2xx"}"#,
            1.0,
        ),
        (
            r#"wasmgate_requests_total{handler="-",method="GET",route="-",status="4xx"}"#,
            1.0,
        ),
        (
            r#"wasmgate_requests_total{handler="trap",method="GET",route="route[2]",status="5xx"}"#,
            1.0,
        ),
        (
            r#"wasmgate_guest_outcomes_total{handler="hello",outcome="ok"}"#,
            5.0,
        ),
        (
            r#"wasmgate_guest_outcomes_total{handler="trap",outcome="trap"}"#,
            1.0,
        ),
        (
            r#"wasmgate_guest_outcomes_total{handler="hog",outcome="out_of_memory"}"#,
            1.0,
        ),
        (
            r#"wasmgate_guest_outcomes_total{handler="spin",outcome="timeout"}"#,
            1.0,
        ),
        (
            r#"wasmgate_component_loads_total{handler="hello",outcome="loaded"}"#,
            1.0,
        ),
        (
            r#"wasmgate_request_duration_seconds_count{handler="hello",route="route[0]"}"#,
            5.0,
        ),
    ];
    for (series, value) in expect {
        assert_eq!(
            sample(&scrape, series),
            Some(value),
            "{series} in:\n{scrape}"
        );
    }
    assert!(sample(&scrape, r#"wasmgate_pool_ready_instances{handler="hello"}"#).is_some());
    assert!(scrape.contains("wasmgate_build_info{"));
    // The scraping connection itself is not on a public listener.
    assert!(scrape.contains("wasmgate_instantiation_duration_seconds_bucket"));
    // No raw path ever becomes a label.
    assert!(!scrape.contains("nowhere"), "{scrape}");

    let promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; scripts/test.sh installs it)");
    use std::io::Write as _;
    let mut stdin = promtool.stdin.as_ref().expect("piped stdin");
    stdin.write_all(scrape.as_bytes()).expect("write scrape");
    let output = promtool.wait_with_output().expect("promtool runs");
    assert!(
        output.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn health_readiness_and_status_describe_the_live_generation() {
    let gateway = TestGateway::start(&fixtures());
    assert_eq!(admin_get(&gateway, "/healthz").await.0, StatusCode::OK);
    let (ready, body) = admin_get(&gateway, "/readyz").await;
    assert_eq!(ready, StatusCode::OK, "{body}");
    let (status, body) = admin_get(&gateway, "/status").await;
    assert_eq!(status, StatusCode::OK);
    let json: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(json["generation"], 1);
    let hello = json["handlers"]
        .as_array()
        .expect("handlers")
        .iter()
        .find(|handler| handler["name"] == "hello")
        .expect("hello listed");
    assert_eq!(hello["loaded"], true);
    assert_eq!(hello["sha256"].as_str().map(str::len), Some(64), "{hello}");
    assert!(
        hello["loaded_at"]
            .as_str()
            .is_some_and(|at| at.ends_with('Z'))
    );
    assert!(hello["last_error"].is_null());

    // A configured handler whose file breaks, with no previous version: not ready.
    let broken = fixtures().replace(
        "[handler.trap]",
        "[handler.trap]\npath = \"{dir}/junk.wasm\"",
    );
    std::fs::write(gateway.dir().join("junk.wasm"), b"not wasm").expect("write");
    gateway.write_config(&broken);
    gateway.wait_for_generation(2);
    let (ready, body) = admin_get(&gateway, "/readyz").await;
    assert_eq!(
        ready,
        StatusCode::OK,
        "the old trap handler still serves: {body}"
    );
    let (_, body) = admin_get(&gateway, "/status").await;
    let json: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let trap = json["handlers"]
        .as_array()
        .expect("handlers")
        .iter()
        .find(|handler| handler["name"] == "trap")
        .expect("trap listed");
    assert!(
        trap["last_error"]
            .as_str()
            .is_some_and(|error| !error.is_empty()),
        "{trap}"
    );
}

/// The admin listener is up before the components load and says so; the
/// gateway is held before loading by a FIFO it reads (its test gate,
/// WASMGATE_TEST_LOAD_GATE), so "still loading" lasts exactly until the test
/// writes it (a slow disk or a large component, made deterministic; a FIFO
/// in a component's place would be refused).
#[tokio::test]
async fn readyz_is_503_until_the_components_are_loaded() {
    let dir = tempfile::tempdir().expect("temp dir");
    let fifo = dir.path().join("gate");
    let made = Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo runs");
    assert!(made.success());
    std::fs::copy(
        wasmgate_tests::handlers_dir().join("hello.wasm"),
        dir.path().join("arriving.wasm"),
    )
    .expect("the hello fixture");
    let config = hello_and_echo(
        "[handler.arriving]\npath = \"{dir}/arriving.wasm\"\n\
         [[route]]\npath = \"/arriving\"\nhandler = \"arriving\"\n",
    );
    let gate = fifo.display().to_string();
    let mut gateway = TestGateway::start_admin_first_with_env(
        dir,
        &config,
        &[("WASMGATE_TEST_LOAD_GATE", gate.as_str())],
    );

    let (ready, body) = admin_get(&gateway, "/readyz").await;
    assert_eq!(ready, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("starting"), "{body}");
    assert_eq!(admin_get(&gateway, "/healthz").await.0, StatusCode::OK);
    let (status, _) = admin_get(&gateway, "/status").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let (scraped, scrape) = admin_get(&gateway, "/metrics").await;
    assert_eq!(scraped, StatusCode::OK);
    assert!(scrape.contains("wasmgate_build_info"), "{scrape}");

    // Opening a FIFO for writing waits for the gateway's read: off the runtime.
    tokio::task::spawn_blocking(move || std::fs::write(fifo, b"go"))
        .await
        .expect("writer thread")
        .expect("open the gate");
    gateway.wait_listening();
    let (ready, body) = admin_get(&gateway, "/readyz").await;
    assert_eq!(ready, StatusCode::OK, "{body}");
    let reply = Client::http1(gateway.http()).await.get("/arriving").await;
    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test]
async fn every_request_gets_one_access_log_line() {
    let gateway = TestGateway::start(&fixtures());
    let mut client = Client::http1(gateway.http()).await;
    assert_eq!(
        client.get("/echo/logged?secret=1").await.status,
        StatusCode::OK
    );
    let line = gateway.wait_for_log("\"GET /echo/logged\"");
    let line = line
        .lines()
        .find(|line| line.contains("\"GET /echo/logged\""))
        .expect("the line");
    for field in [
        "status=200",
        "route=route[1]",
        "handler=echo",
        "generation=1",
        "bytes=",
    ] {
        assert!(line.contains(field), "{field} in {line}");
    }
    assert!(
        !line.contains("secret"),
        "queries stay out of the log: {line}"
    );

    let json = TestGateway::start(
        &fixtures().replace("[gateway]\n", "[gateway]\naccess_log = \"json\"\n"),
    );
    let mut client = Client::http1(json.http()).await;
    assert_eq!(client.get("/hello").await.status, StatusCode::OK);
    let log = json.wait_for_log("\"path\":\"/hello\"");
    let line = log
        .lines()
        .find(|line| line.contains("\"path\":\"/hello\""))
        .expect("the line");
    let object = &line[line.find('{').expect("JSON object")..];
    let entry: serde_json::Value = serde_json::from_str(object).expect("JSON");
    assert_eq!(entry["status"], 200);
    assert_eq!(entry["handler"], "hello");
    assert_eq!(entry["bytes"], "Hello from wasmgate!\n".len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_the_admin_port() {
    let gateway = TestGateway::start(&fixtures());
    let mut client = Client::http1(gateway.http()).await;
    for _ in 0..3 {
        assert_eq!(client.get("/hello").await.status, StatusCode::OK);
    }
    // Prometheus takes a port, not port 0: reserve one, release it, pass it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|socket| socket.local_addr())
        .expect("free port")
        .port();
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: wasmgate\n    \
             static_configs:\n      - targets: ['{}']\n",
            gateway.admin()
        ),
    )
    .expect("write config");
    let mut prometheus = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus (Debian package; scripts/test.sh installs it)");
    let query = "/api/v1/query?query=sum(wasmgate_requests_total%7Bhandler%3D%22hello%22%7D)";
    let deadline = Instant::now() + Duration::from_secs(60);
    let value = loop {
        assert!(Instant::now() < deadline, "Prometheus never had the sample");
        // Polls an outside server that signals nothing: its first scrape.
        if let Ok(stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            drop(stream);
            let reply = Client::http1(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
                .await
                .get(query)
                .await;
            let json: serde_json::Value = serde_json::from_slice(&reply.body).unwrap_or_default();
            if let Some(value) = json["data"]["result"][0]["value"][1].as_str() {
                break value.to_string();
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let _ = prometheus.kill();
    let _ = prometheus.wait();
    assert_eq!(value, "3");
}
