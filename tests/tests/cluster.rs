//! Cluster mode (`[cluster] nats = ...`): three gateways and a real
//! nats-server. A chat message published on one node reaches the WebSocket
//! and SSE subscribers of every node, once; with NATS stopped every node
//! keeps serving and its own pub/sub works, says so in `/status` and
//! metrics, and cluster delivery resumes when NATS is back.

use std::time::Duration;

use eventsource_stream::{Event, Eventsource as _};
use futures::{SinkExt as _, StreamExt as _};
use http::StatusCode;
use http_body_util::BodyDataStream;
use tokio_tungstenite::tungstenite::Message;
use wasmgate_tests::client::Client;
use wasmgate_tests::nats::Nats;
use wasmgate_tests::{TestGateway, chat_config, metric, wait_for_metric};

fn node(nats: &Nats, name: &str) -> TestGateway {
    let config = format!(
        "{}\n[admin]\naddr = \"127.0.0.1:0\"\n\n[cluster]\nnats = \"{}\"\nnode = \"{name}\"\n",
        chat_config(),
        nats.url()
    );
    TestGateway::start(&config)
}

fn connected(name: &str) -> String {
    format!("wasmgate_cluster_connected{{node=\"{name}\"}}")
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

async fn next_event<S, E>(events: &mut S) -> Event
where
    S: futures::Stream<Item = Result<Event, E>> + Unpin,
    E: std::fmt::Debug,
{
    tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .expect("an event in time")
        .expect("the stream is open")
        .expect("a well-formed event")
}

async fn status(gateway: &TestGateway) -> serde_json::Value {
    let mut admin = Client::http1(gateway.admin()).await;
    serde_json::from_slice(&admin.get("/status").await.body).expect("JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publications_cross_nodes_once_and_survive_a_nats_outage() {
    let mut nats = Nats::start();
    let nodes = [node(&nats, "a"), node(&nats, "b"), node(&nats, "c")];
    for (gateway, name) in nodes.iter().zip(["a", "b", "c"]) {
        wait_for_metric(gateway, &connected(name), 1.0).await;
    }
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
    assert_eq!(text(&mut on_a).await, "one");
    assert_eq!(next_event(&mut on_b).await.data, "one");
    assert_eq!(text(&mut on_c).await, "one");
    // From a POST on c; each subscriber's next message is this one, so
    // the first arrived once.
    let mut client_c = Client::http1(c.http()).await;
    let request = client_c
        .request("POST", "/chat/send?room=x")
        .body(wasmgate_tests::client::full("two"))
        .expect("request");
    let reply = client_c.send(request).await.expect("answered");
    assert!(reply.status.is_success(), "{}", reply.status);
    assert_eq!(text(&mut on_a).await, "two");
    assert_eq!(next_event(&mut on_b).await.data, "two");
    assert_eq!(text(&mut on_c).await, "two");
    assert!(
        metric(
            a,
            r#"wasmgate_cluster_messages_total{direction="out",outcome="sent"}"#
        )
        .await
            >= 1.0
    );
    assert!(
        metric(
            b,
            r#"wasmgate_cluster_messages_total{direction="in",outcome="delivered"}"#
        )
        .await
            >= 2.0
    );
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
    for (gateway, name) in nodes.iter().zip(["a", "b", "c"]) {
        wait_for_metric(gateway, &connected(name), 1.0).await;
    }
    on_a.send(Message::Text("back".into())).await.expect("send");
    assert_eq!(text(&mut on_a).await, "back");
    assert_eq!(next_event(&mut on_b).await.data, "back");
    assert_eq!(text(&mut on_c).await, "back");
    assert!(
        metric(
            a,
            r#"wasmgate_cluster_messages_total{direction="out",outcome="dropped"}"#
        )
        .await
            >= 1.0
    );
}

#[test]
fn bad_cluster_settings_are_config_problems() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (code, stderr) = wasmgate_tests::check_in(
        dir.path(),
        "[[listener]]\naddr = \"127.0.0.1:0\"\n\n[cluster]\nnats = \"nats://\"\nname = \"a.b\"\nnode = \"has space\"\n",
    );
    assert_eq!(code, Some(2), "{stderr}");
    for expected in [
        "cluster.nats: ",
        "cluster.name: `a.b`",
        "cluster.node: `has space`",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in {stderr}"
        );
    }
}
