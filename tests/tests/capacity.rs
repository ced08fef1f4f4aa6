//! Capacity is partitioned: stream connections (each holds a guest instance
//! for its life) cannot take the instances plain HTTP handlers need, and an
//! instance that cannot be had is a 503 with `Retry-After`, never a 500.

use http::StatusCode;
use wasmgate_tests::client::Client;
use wasmgate_tests::ws::connect;
use wasmgate_tests::{TestGateway, hello_and_echo, metric};

fn gateway(max_instances: u32) -> TestGateway {
    let config = hello_and_echo(
        "[handler.ws-echo]\nworld = \"websocket\"\n\n[[route]]\npath = \"/ws/*\"\nhandler = \"ws-echo\"\n",
    )
    .replace(
        "[gateway]\n",
        &format!("[gateway]\nmax_instances = {max_instances}\n"),
    );
    TestGateway::start(&config)
}

#[tokio::test]
async fn websockets_cannot_starve_plain_http_handlers() {
    let gateway = gateway(60);
    let mut open = Vec::new();
    let mut refused = 0;
    for index in 0..80 {
        match connect(&gateway, &format!("/ws/{index}")).await {
            Ok(socket) => open.push(socket),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
                assert!(response.headers().contains_key("retry-after"));
                refused += 1;
            }
            Err(other) => panic!("WebSocket {index}: {other}"),
        }
    }
    assert!(refused > 0, "all 80 WebSockets got an instance out of 60");
    let mut client = Client::http1(gateway.http()).await;
    let mut failures = Vec::new();
    for _ in 0..20 {
        let status = client.get("/hello").await.status;
        if status != StatusCode::OK {
            failures.push(status);
        }
    }
    assert!(
        failures.is_empty(),
        "with {} WebSockets open: {failures:?}",
        open.len()
    );
    let counted = metric(
        &gateway,
        "wasmgate_guest_outcomes_total{handler=\"ws-echo\",outcome=\"refused\"}",
    )
    .await;
    assert_eq!(counted, f64::from(refused));
}

#[test]
fn a_stream_cap_beyond_the_instance_pool_is_a_config_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = hello_and_echo(
        "[handler.ws-echo]\nworld = \"websocket\"\nstream = { max_connections = 100 }\n\n\
         [[route]]\npath = \"/ws/*\"\nhandler = \"ws-echo\"\n",
    )
    .replace("{handlers}", "handlers")
    .replace("[gateway]\n", "[gateway]\nmax_instances = 60\n");
    std::fs::write(dir.path().join("wasmgate.toml"), config).expect("config");
    let output = wasmgate_tests::run_cli(&["check", "--config", "wasmgate.toml"], dir.path());
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("handler.ws-echo.stream.max_connections: 100 is more than the 45 instances streams may hold"),
        "{stderr}"
    );
}
