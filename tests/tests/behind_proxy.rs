//! wasmgate behind a load balancer: HAProxy (Debian's package) in TCP mode
//! sends PROXY v2 and v1 headers, and the guest sees the real client's
//! address in `Forwarded` / `X-Forwarded-For`, not HAProxy's.
//!
//! Loopback has a whole /8: the test's client connects from 127.0.0.2, and
//! HAProxy connects to the gateway from 127.0.0.1, so the two are told apart.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use http::StatusCode;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpSocket;
use wasmgate_tests::certs::TestCerts;
use wasmgate_tests::client::Client;
use wasmgate_tests::{TestGateway, free_port, hello_and_echo};

const CLIENT_IP: &str = "127.0.0.2";

struct Haproxy {
    child: Child,
    /// Frontends: PROXY v2, then PROXY v1.
    v2: SocketAddr,
    v1: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Haproxy {
    fn start(backend: SocketAddr) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let v2 = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let v1 = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let config = format!(
            "defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n\
             frontend v2\n  bind {v2}\n  default_backend gateway_v2\n\
             frontend v1\n  bind {v1}\n  default_backend gateway_v1\n\
             backend gateway_v2\n  server gw {backend} send-proxy-v2\n\
             backend gateway_v1\n  server gw {backend} send-proxy\n"
        );
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, config).expect("write haproxy.cfg");
        let child = Command::new(wasmgate_tests::debian_tool("WASMGATE_HAPROXY", "haproxy"))
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("haproxy starts");
        let haproxy = Self {
            child,
            v2,
            v1,
            _dir: dir,
        };
        // Ready when both frontends accept.
        let deadline = Instant::now() + Duration::from_secs(10);
        for frontend in [v2, v1] {
            while std::net::TcpStream::connect(frontend).is_err() {
                assert!(Instant::now() < deadline, "haproxy did not listen");
                std::thread::yield_now();
            }
        }
        haproxy
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A connection to `frontend` from 127.0.0.2.
async fn connect_from_client_ip(frontend: SocketAddr) -> tokio::net::TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new(CLIENT_IP.parse().expect("ip"), 0))
        .expect("bind 127.0.0.2");
    socket.connect(frontend).await.expect("connect")
}

/// `GET /echo/who` through `frontend`, from 127.0.0.2; returns the
/// forwarding headers the guest saw.
async fn echo_from_client_ip(frontend: SocketAddr) -> (String, String) {
    let stream = connect_from_client_ip(frontend).await;
    echo_who(Client::over_tcp(stream, frontend).await).await
}

/// The guest saw the client at 127.0.0.2, reaching the gateway over `proto`.
fn assert_sees_client((forwarded_for, forwarded): (String, String), proto: &str) {
    assert_eq!(forwarded_for, CLIENT_IP);
    assert!(
        forwarded.starts_with(&format!("for={CLIENT_IP};proto={proto}")),
        "{forwarded}"
    );
}

/// The `X-Forwarded-For` and `Forwarded` headers `GET /echo/who` saw.
async fn echo_who(mut client: Client) -> (String, String) {
    let reply = client.get("/echo/who").await;
    assert_eq!(reply.status, StatusCode::OK);
    let json: serde_json::Value = serde_json::from_slice(&reply.body).expect("echo JSON");
    let header = |name: &str| {
        json["headers"]
            .as_array()
            .expect("headers")
            .iter()
            .find(|pair| pair[0] == name)
            .and_then(|pair| pair[1].as_str())
            .unwrap_or_default()
            .to_string()
    };
    (header("x-forwarded-for"), header("forwarded"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guests_see_the_client_behind_haproxy_v2_and_v1() {
    let gateway = TestGateway::start(&hello_and_echo("").replacen(
        "addr = \"127.0.0.1:0\"\n",
        "addr = \"127.0.0.1:0\"\nproxy_protocol = true\nproxy_from = [\"127.0.0.1/32\"]\n",
        1,
    ));
    let haproxy = Haproxy::start(gateway.http());
    for frontend in [haproxy.v2, haproxy.v1] {
        assert_sees_client(echo_from_client_ip(frontend).await, "http");
    }
}

/// The header comes first, then TLS: the handshake starts exactly where
/// HAProxy stops, and the guest sees the client's address and `https`.
#[tokio::test]
async fn proxy_headers_work_in_front_of_a_tls_listener() {
    let dir = tempfile::tempdir().expect("temp dir");
    let certs = TestCerts::generate(dir.path());
    let config = hello_and_echo(&format!(
        "\n[[listener]]\naddr = \"127.0.0.1:0\"\nproxy_protocol = true\nproxy_from = [\"127.0.0.1/32\"]\ntls = {{ cert = \"{}\", key = \"{}\" }}\n",
        certs.cert.display(),
        certs.key.display()
    ));
    let gateway = TestGateway::start_in(dir, &config);
    let haproxy = Haproxy::start(gateway.https());
    for frontend in [haproxy.v2, haproxy.v1] {
        let stream = connect_from_client_ip(frontend).await;
        let tls_config = certs.client_config(&[b"h2", b"http/1.1"]);
        let client = Client::tls_over_tcp(stream, frontend, "localhost", tls_config).await;
        assert_sees_client(echo_who(client).await, "https");
    }
}

#[tokio::test]
async fn a_connection_without_a_proxy_header_is_refused() {
    let gateway = TestGateway::start(&hello_and_echo("").replacen(
        "addr = \"127.0.0.1:0\"\n",
        "addr = \"127.0.0.1:0\"\nproxy_protocol = true\nproxy_from = [\"127.0.0.1/32\"]\n",
        1,
    ));
    let mut tcp = tokio::net::TcpStream::connect(gateway.http())
        .await
        .expect("connect");
    tcp.write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut answer = Vec::new();
    let _ = tcp.read_to_end(&mut answer).await;
    assert!(answer.is_empty(), "no HTTP answer: {answer:?}");
    let scrape = Client::http1(gateway.admin()).await.get("/metrics").await;
    assert!(
        scrape.text().lines().any(
            |line| line.starts_with("wasmgate_proxy_header_failures_total{")
                && line.ends_with(" 1")
        ),
        "{}",
        scrape.text()
    );
}

/// Only the balancers in `proxy_from` may say who the client is: anyone
/// else sending a PROXY header (a spoofed client address) is refused.
#[tokio::test]
async fn a_proxy_header_from_outside_proxy_from_is_refused() {
    let gateway = TestGateway::start(&hello_and_echo("").replacen(
        "addr = \"127.0.0.1:0\"\n",
        "addr = \"127.0.0.1:0\"\nproxy_protocol = true\nproxy_from = [\"127.0.0.1/32\"]\n",
        1,
    ));
    let mut tcp = connect_from_client_ip(gateway.http()).await;
    tcp.write_all(
        b"PROXY TCP4 203.0.113.9 127.0.0.1 4242 80\r\nGET /echo/who HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await
    .expect("write");
    let mut answer = Vec::new();
    let _ = tcp.read_to_end(&mut answer).await;
    assert!(
        answer.is_empty(),
        "answered a PROXY header from outside proxy_from: {}",
        String::from_utf8_lossy(&answer)
    );
}
