//! The end-to-end harness: starts the real `wasmgate` binary on loopback
//! ports ([`TestGateway`]), talks to it with real HTTP/1.1, h2c and h2-over-TLS
//! clients ([`client`]) and a headless browser ([`browser`]), and makes
//! throw-away certificates ([`certs`]).
//!
//! Invariant: no fixed ports (every listener binds `127.0.0.1:0` and the
//! harness reads the bound address from the gateway's `listening on` lines)
//! and no sleeps where the gateway signals readiness.

pub mod browser;
pub mod certs;
pub mod client;
mod gateway;
pub mod nats;
pub mod pebble;
pub mod sse;
pub mod ws;

pub use gateway::{
    TestGateway, free_project_ports, handlers_dir, run_cli, sign, start_in_project, wasmgate_bin,
};

/// A loopback port free right now, for servers that cannot report the port
/// of a port-0 bind (HAProxy, pebble).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|socket| socket.local_addr())
        .expect("a free port")
        .port()
}

/// Calls `gateway`'s admin API: `method path` with `body` (a component
/// for `/deploy`); the status and the JSON it answers.
pub async fn admin(
    gateway: &TestGateway,
    method: &str,
    path: &str,
    body: Vec<u8>,
) -> (http::StatusCode, serde_json::Value) {
    let mut client = client::Client::http1(gateway.admin()).await;
    let request = client
        .request(method, path)
        .header("content-type", "application/wasm")
        .body(client::full(body))
        .expect("valid request");
    let reply = client.send(request).await.expect("admin answers");
    let json = serde_json::from_slice(&reply.body).expect("JSON");
    (reply.status, json)
}

/// The value of `series` (a metric's name and labels, as Prometheus text
/// shows them) on the gateway's admin listener; 0 when it is not there.
pub async fn metric(gateway: &TestGateway, series: &str) -> f64 {
    let scrape = client::Client::http1(gateway.admin())
        .await
        .get("/metrics")
        .await
        .text();
    scrape
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Waits (at most 5 s) until `series` reads `value`: a guest's run may end
/// after its client already has the answer, and the gauges and counters
/// that report it are the signal to wait on.
pub async fn wait_for_metric(gateway: &TestGateway, series: &str, value: f64) {
    wait_for_metric_where(gateway, series, &format!("read {value}"), |read| {
        read == value
    })
    .await;
}

/// Waits (at most 5 s) until `series` reads `least` or more: what the
/// gateway logs or shows in `/status` comes just before it is counted.
pub async fn wait_for_metric_at_least(gateway: &TestGateway, series: &str, least: f64) {
    wait_for_metric_where(gateway, series, &format!("reached {least}"), |read| {
        read >= least
    })
    .await;
}

async fn wait_for_metric_where(
    gateway: &TestGateway,
    series: &str,
    expected: &str,
    holds: impl Fn(f64) -> bool,
) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let read = metric(gateway, series).await;
        if holds(read) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{series} never {expected}: it reads {read}"
        );
        tokio::task::yield_now().await;
    }
}

/// `gzip -c` of `data`, made by the real tool.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut child = std::process::Command::new("gzip")
        .args(["-c", "-9"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("gzip runs");
    let mut stdin = child.stdin.take().expect("stdin");
    let data = data.to_vec();
    // Written from a thread: gzip's output fills its pipe while it reads.
    let writer = std::thread::spawn(move || stdin.write_all(&data).expect("gzip reads"));
    let output = child.wait_with_output().expect("gzip ends");
    writer.join().expect("written");
    assert!(output.status.success());
    output.stdout
}

/// A server a Debian package installs: `$ENV`, else `/usr/sbin/NAME` or
/// `/usr/bin/NAME` (a non-root PATH may lack `/usr/sbin`), else NAME on the
/// PATH.
pub fn debian_tool(env: &str, name: &str) -> std::path::PathBuf {
    std::env::var_os(env)
        .map(std::path::PathBuf::from)
        .or_else(|| {
            ["/usr/sbin", "/usr/bin"]
                .into_iter()
                .map(|dir| std::path::Path::new(dir).join(name))
                .find(|path| path.exists())
        })
        .unwrap_or_else(|| name.into())
}

/// A tool scripts/test.sh installs into its virtualenv: `$ENV`, else
/// `target/test-venv/bin/NAME`, else NAME on the PATH; the first whose
/// `--version` succeeds.
pub fn venv_tool(env: &str, name: &str) -> std::path::PathBuf {
    let venv = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/test-venv/bin")
        .join(name);
    std::env::var_os(env)
        .map(std::path::PathBuf::from)
        .into_iter()
        .chain([venv, std::path::PathBuf::from(name)])
        .find(|tool| {
            std::process::Command::new(tool)
                .arg("--version")
                .output()
                .is_ok_and(|output| output.status.success())
        })
        .unwrap_or_else(|| {
            panic!("{name} is not installed: run ./scripts/test.sh (it installs it), or set {env}")
        })
}

/// Writes `config` (with `{handlers}` and `{dir}` expanded) as `dir/gw.toml`,
/// runs `wasmgate check` on it and returns its exit code and its stderr,
/// with `dir` written as `{dir}`.
pub fn check_in(dir: &std::path::Path, config: &str) -> (Option<i32>, String) {
    let text = config
        .replace("{handlers}", &handlers_dir().display().to_string())
        .replace("{dir}", &dir.display().to_string());
    let path = dir.join("gw.toml");
    std::fs::write(&path, text).expect("write config");
    let output = run_cli(&["check", "--config", &path.display().to_string()], dir);
    let stderr =
        String::from_utf8_lossy(&output.stderr).replace(&dir.display().to_string(), "{dir}");
    (output.status.code(), stderr)
}

/// Installs `source` as `dir/target` like a deployment tool: written
/// aside, then renamed into place.
pub fn install(dir: &std::path::Path, target: &str, source: &std::path::Path) {
    let staging = dir.join(format!(".{target}.staging"));
    std::fs::copy(source, &staging).expect("copy");
    std::fs::rename(&staging, dir.join(target)).expect("rename");
}

/// What the `hello` example answers.
pub const HELLO_BODY: &str = "Hello from wasmgate!\n";

/// A gateway config with one plain listener, `hello` on `/hello` and `echo`
/// on `/echo/*`, followed by `extra` (more handlers and routes).
pub fn hello_and_echo(extra: &str) -> String {
    format!(
        r#"
[gateway]
handlers_dir = "{{handlers}}"

[[listener]]
addr = "127.0.0.1:0"

[handler.hello]
[handler.echo]

[[route]]
path = "/hello"
handler = "hello"

[[route]]
path = "/echo/*"
handler = "echo"
{extra}"#
    )
}

/// A gateway config with one plain listener and `slow` at `/slow`, draining
/// for `grace`, with `more` in `[gateway]`.
pub fn slow_config(grace: &str, more: &str) -> String {
    format!(
        r#"
[gateway]
handlers_dir = "{{handlers}}"
grace_period = "{grace}"
{more}

[[listener]]
addr = "127.0.0.1:0"

[handler.slow]

[[route]]
path = "/slow"
handler = "slow"
"#
    )
}

/// The chat example as the dev config serves it: one component on four
/// routes (page, POST, WebSocket, SSE), with a 100 ms keep-alive.
pub fn chat_config() -> String {
    hello_and_echo(
        r#"
[handler.chat]
topic_scope = "chat"

[handler.chat-ws]
path = "{handlers}/chat.wasm"
world = "websocket"
topic_scope = "chat"

[handler.chat-sse]
path = "{handlers}/chat.wasm"
world = "sse"
topic_scope = "chat"

[[route]]
path = "/chat"
handler = "chat"

[[route]]
path = "/chat/send"
handler = "chat"

[[route]]
path = "/chat/ws"
handler = "chat-ws"

[[route]]
path = "/chat/events"
handler = "chat-sse"
"#,
    )
    .replace("[gateway]\n", "[gateway]\nstream_keep_alive = \"100ms\"\n")
}
