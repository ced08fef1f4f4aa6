//! Cluster mode (`[cluster] nats = ...`): three gateways and a real
//! nats-server. A chat message published on one node reaches the WebSocket
//! and SSE subscribers of every node, once; with NATS stopped every node
//! keeps serving and its own pub/sub works, says so in `/status` and
//! metrics, and cluster delivery resumes when NATS is back.

use std::time::Duration;

use eventsource_stream::Eventsource as _;
use futures::SinkExt as _;
use http::StatusCode;
use http_body_util::BodyDataStream;
use tokio_tungstenite::tungstenite::Message;
use wasmgate_tests::client::Client;
use wasmgate_tests::nats::Nats;
use wasmgate_tests::sse::next_event;
use wasmgate_tests::{TestGateway, chat_config, metric, wait_for_metric, wait_for_metric_at_least};

/// A node of the cluster. Its keep-alive is long: the test leaves a socket
/// unread while it stops and resumes NATS, and a client that answers no
/// pings for two 100 ms periods (`chat_config`'s) is rightly closed.
fn node(nats: &Nats, name: &str) -> TestGateway {
    let config = format!(
        "{}\n[admin]\naddr = \"127.0.0.1:0\"\n\n[cluster]\nnats = \"{}\"\nnode = \"{name}\"\n",
        chat_config().replace(
            "stream_keep_alive = \"100ms\"",
            "stream_keep_alive = \"30s\""
        ),
        nats.url()
    );
    TestGateway::start(&config)
}

fn connected(name: &str) -> String {
    format!("wasmgate_cluster_connected{{node=\"{name}\"}}")
}

/// Waits until nodes a, b and c say they reach NATS.
async fn all_connected(nodes: &[TestGateway; 3]) {
    for (gateway, name) in nodes.iter().zip(["a", "b", "c"]) {
        wait_for_metric(gateway, &connected(name), 1.0).await;
    }
}

/// The next text message on a WebSocket, skipping pings.
async fn text<S>(socket: &mut tokio_tungstenite::WebSocketStream<S>) -> String
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    match wasmgate_tests::ws::next(socket).await {
        Message::Text(text) => text.to_string(),
        other => panic!("expected text, got {other:?}"),
    }
}

type Socket = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// Asserts that the next message of each subscriber (a WebSocket on a, SSE
/// on b, a WebSocket on c) is `expected`.
async fn heard_everywhere<E, Err>(
    on_a: &mut Socket,
    on_b: &mut E,
    on_c: &mut Socket,
    expected: &str,
) where
    E: futures::Stream<Item = Result<eventsource_stream::Event, Err>> + Unpin,
    Err: std::fmt::Debug,
{
    assert_eq!(text(on_a).await, expected, "on a");
    assert_eq!(next_event(on_b).await.data, expected, "on b");
    assert_eq!(text(on_c).await, expected, "on c");
}

async fn status(gateway: &TestGateway) -> serde_json::Value {
    let mut admin = Client::http1(gateway.admin()).await;
    serde_json::from_slice(&admin.get("/status").await.body).expect("JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publications_cross_nodes_once_and_survive_a_nats_outage() {
    let mut nats = Nats::start();
    let nodes = [node(&nats, "a"), node(&nats, "b"), node(&nats, "c")];
    all_connected(&nodes).await;
    let [a, b, c] = &nodes;
    let mut on_a = wasmgate_tests::ws::connect(a, "/chat/ws?room=x")
        .await
        .expect("websocket on a");
    let mut on_c = wasmgate_tests::ws::connect(c, "/chat/ws?room=x")
        .await
        .expect("websocket on c");
    let mut client_b = Client::http1(b.http()).await;
    let response = client_b.get_streaming("/chat/events?room=x").await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut on_b = BodyDataStream::new(response.into_body()).eventsource();
    assert_eq!(next_event(&mut on_b).await.event, "joined");

    // From a WebSocket on a: a itself (local), b's SSE and c's WebSocket.
    on_a.send(Message::Text("one".into())).await.expect("send");
    heard_everywhere(&mut on_a, &mut on_b, &mut on_c, "one").await;
    // From a POST on c; each subscriber's next message is this one, so
    // the first arrived once.
    let mut client_c = Client::http1(c.http()).await;
    let request = client_c
        .request("POST", "/chat/send?room=x")
        .body(wasmgate_tests::client::full("two"))
        .expect("request");
    let reply = client_c.send(request).await.expect("answered");
    assert!(reply.status.is_success(), "{}", reply.status);
    heard_everywhere(&mut on_a, &mut on_b, &mut on_c, "two").await;
    wait_for_metric_at_least(
        a,
        r#"wasmgate_cluster_messages_total{direction="out",outcome="sent"}"#,
        1.0,
    )
    .await;
    wait_for_metric_at_least(
        b,
        r#"wasmgate_cluster_messages_total{direction="in",outcome="delivered"}"#,
        2.0,
    )
    .await;
    assert_eq!(status(b).await["cluster"]["connected"], true);

    // NATS goes away: every node says so and serves on alone.
    nats.stop();
    for (gateway, name) in nodes.iter().zip(["a", "b", "c"]) {
        wait_for_metric(gateway, &connected(name), 0.0).await;
        assert_eq!(status(gateway).await["cluster"]["connected"], false);
        let hello = Client::http1(gateway.http()).await.get("/hello").await;
        assert_eq!(hello.status, StatusCode::OK);
    }
    on_a.send(Message::Text("alone".into()))
        .await
        .expect("send");
    assert_eq!(text(&mut on_a).await, "alone", "local pub/sub works");

    // NATS is back: the nodes reconnect on their own and delivery resumes;
    // what was published while apart is not delivered late.
    nats.resume();
    all_connected(&nodes).await;
    on_a.send(Message::Text("back".into())).await.expect("send");
    heard_everywhere(&mut on_a, &mut on_b, &mut on_c, "back").await;
    wait_for_metric_at_least(
        a,
        r#"wasmgate_cluster_messages_total{direction="out",outcome="dropped"}"#,
        1.0,
    )
    .await;
}

#[test]
fn bad_cluster_settings_are_config_problems() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (code, stderr) = wasmgate_tests::check_in(
        dir.path(),
        "[[listener]]\naddr = \"127.0.0.1:0\"\n\n[deploy]\nstate_dir = \"\"\n\n[cluster]\nnats = \"nats://\"\nname = \"a.b\"\nnode = \"has space\"\n",
    );
    assert_eq!(code, Some(2), "{stderr}");
    for expected in [
        "cluster.nats: ",
        "cluster.name: `a.b`",
        "cluster.node: `has space`",
        "deploy.state_dir: a cluster's nodes keep the versions they share on disk",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in {stderr}"
        );
    }
}

/// HAProxy in TCP mode in front of `nodes`, checking each one's `/readyz`
/// every 100 ms; a connection its server refuses is sent to another.
struct Balancer {
    child: std::process::Child,
    front: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

impl Balancer {
    fn start(nodes: &[TestGateway]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let front = std::net::SocketAddr::from(([127, 0, 0, 1], wasmgate_tests::free_port()));
        let servers: String = nodes
            .iter()
            .enumerate()
            .map(|(index, node)| {
                format!(
                    "  server n{index} {} check port {}\n",
                    node.http(),
                    node.admin().port()
                )
            })
            .collect();
        let config = format!(
            "defaults\n  mode tcp\n  timeout connect 1s\n  timeout client 30s\n  timeout server 30s\n  \
             retries 3\n  option redispatch\n\
             frontend site\n  bind {front}\n  default_backend gateways\n\
             backend gateways\n  balance roundrobin\n  option httpchk\n  \
             http-check send meth GET uri /readyz\n  default-server inter 100ms fall 1 rise 1\n{servers}"
        );
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, config).expect("write haproxy.cfg");
        let child =
            std::process::Command::new(wasmgate_tests::debian_tool("WASMGATE_HAPROXY", "haproxy"))
                .arg("-db")
                .arg("-f")
                .arg(&path)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("haproxy starts");
        Self {
            child,
            front,
            _dir: dir,
        }
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What one client saw through the balancer until `end`: answers 200, and
/// requests that failed (connection refused or cut, any other status).
async fn load(front: std::net::SocketAddr, end: tokio::time::Instant) -> (u64, u64) {
    let (mut ok, mut failed) = (0, 0);
    let mut client = None;
    while tokio::time::Instant::now() < end {
        if client.is_none() {
            match tokio::net::TcpStream::connect(front).await {
                Ok(io) => client = Some(Client::over_tcp(io, front).await),
                Err(_) => {
                    failed += 1;
                    continue;
                }
            }
        }
        let Some(open) = client.as_mut() else {
            continue;
        };
        let request = open
            .request("GET", "/hello")
            .body(wasmgate_tests::client::empty())
            .expect("request");
        match tokio::time::timeout(Duration::from_secs(5), open.send(request)).await {
            Ok(Ok(reply)) if reply.status == StatusCode::OK => ok += 1,
            _ => {
                failed += 1;
                client = None;
            }
        }
    }
    (ok, failed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_under_load_costs_under_a_thousandth_of_requests() {
    let nats = Nats::start();
    let nodes = [node(&nats, "a"), node(&nats, "b"), node(&nats, "c")];
    let balancer = Balancer::start(&nodes);
    // Every node in rotation: requests succeed through the balancer.
    let warm = tokio::time::Instant::now() + Duration::from_secs(1);
    let (ok, _) = load(balancer.front, warm).await;
    assert!(ok > 0, "nothing answered through haproxy");

    let started = tokio::time::Instant::now();
    let end = started + Duration::from_secs(6);
    let clients: Vec<_> = (0..8)
        .map(|_| tokio::spawn(load(balancer.front, end)))
        .collect();
    tokio::time::sleep_until(started + Duration::from_secs(2)).await;
    nodes[1].signal("KILL");
    let mut ok = 0;
    let mut failed = 0;
    for client in clients {
        let (answered, lost) = client.await.expect("client task");
        ok += answered;
        failed += lost;
    }
    let rate = ok as f64 / (ok + failed) as f64;
    eprintln!("{ok} answered, {failed} failed: success rate {rate:.5}");
    assert!(ok >= 5_000, "too few requests to judge a rate: {ok}");
    assert!(rate >= 0.999, "{ok} answered, {failed} failed");
    // The survivors served the rest.
    for survivor in [&nodes[0], &nodes[2]] {
        let served = r#"wasmgate_requests_total{handler="hello",method="GET",route="route[0]",status="2xx"}"#;
        assert!(metric(survivor, served).await > 0.0);
    }
}
