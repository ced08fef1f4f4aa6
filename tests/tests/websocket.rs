//! WebSocket routes: a `wasmgate:streaming/websocket-service` guest behind a
//! real upgrade, driven by a tokio-tungstenite client.

use std::time::Duration;

use futures::SinkExt as _;
use http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error, Message};
use wasmgate_tests::client::Client;
use wasmgate_tests::ws::{connect, next};
use wasmgate_tests::{TestGateway, hello_and_echo};

fn gateway() -> TestGateway {
    TestGateway::start(&hello_and_echo(
        "[handler.ws-echo]\nworld = \"websocket\"\n\n[[route]]\npath = \"/ws/*\"\nhandler = \"ws-echo\"\n",
    ))
}

#[tokio::test]
async fn text_and_binary_messages_are_echoed_by_the_guest() {
    let gateway = gateway();
    let mut socket = connect(&gateway, "/ws/echo")
        .await
        .expect("upgrade accepted");
    socket.send(Message::text("hello")).await.expect("send");
    assert_eq!(next(&mut socket).await, Message::text("hello"));
    let binary: Vec<u8> = (0..=255).collect();
    socket
        .send(Message::binary(binary.clone()))
        .await
        .expect("send");
    assert_eq!(next(&mut socket).await, Message::binary(binary));
    let large = "x".repeat(1 << 20);
    socket
        .send(Message::text(large.clone()))
        .await
        .expect("send");
    assert_eq!(next(&mut socket).await, Message::text(large));
    let bye = CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    };
    socket.close(Some(bye)).await.expect("close");
    // The guest hears about the close, code and reason (its on-close logs them).
    gateway.wait_for_log("ws-echo: closed with 1000 bye");
}

#[tokio::test]
async fn the_guest_can_refuse_a_connection_with_an_http_status() {
    let gateway = gateway();
    match connect(&gateway, "/ws/refuse").await {
        Err(Error::Http(response)) => assert_eq!(response.status(), StatusCode::FORBIDDEN),
        other => panic!("expected a 403 refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn a_guest_trap_closes_only_its_connection_with_1011() {
    let gateway = gateway();
    let mut bystander = connect(&gateway, "/ws/bystander").await.expect("upgrade");
    let mut socket = connect(&gateway, "/ws/trap").await.expect("upgrade");
    socket.send(Message::text("trap")).await.expect("send");
    match next(&mut socket).await {
        Message::Close(Some(frame)) => assert_eq!(frame.code, CloseCode::Error),
        other => panic!("expected close 1011, got {other:?}"),
    }
    bystander
        .send(Message::text("still here"))
        .await
        .expect("send");
    assert_eq!(next(&mut bystander).await, Message::text("still here"));
    let mut client = Client::http1(gateway.http()).await;
    assert_eq!(client.get("/hello").await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_plain_request_to_a_websocket_route_gets_426() {
    let gateway = gateway();
    let mut client = Client::http1(gateway.http()).await;
    assert_eq!(
        client.get("/ws/echo").await.status,
        StatusCode::UPGRADE_REQUIRED
    );
}

#[tokio::test]
async fn draining_closes_open_connections_with_1001() {
    let mut gateway = gateway();
    let mut socket = connect(&gateway, "/ws/echo").await.expect("upgrade");
    socket.send(Message::text("ping")).await.expect("send");
    assert_eq!(next(&mut socket).await, Message::text("ping"));
    gateway.signal("TERM");
    match next(&mut socket).await {
        Message::Close(Some(frame)) => assert_eq!(frame.code, CloseCode::Away),
        other => panic!("expected close 1001, got {other:?}"),
    }
    assert_eq!(gateway.wait_exit(Duration::from_secs(10)).code(), Some(0));
}

#[tokio::test]
async fn a_published_message_reaches_every_subscriber_once() {
    let gateway = gateway();
    let mut subscribers = Vec::new();
    for _ in 0..5 {
        let mut socket = connect(&gateway, "/ws/chat").await.expect("upgrade");
        socket
            .send(Message::text("subscribe:room"))
            .await
            .expect("send");
        assert_eq!(next(&mut socket).await, Message::text("subscribed to room"));
        subscribers.push(socket);
    }
    let mut publisher = connect(&gateway, "/ws/chat").await.expect("upgrade");
    for text in ["one", "two"] {
        publisher
            .send(Message::text(format!("publish:room:{text}")))
            .await
            .expect("send");
    }
    for socket in &mut subscribers {
        assert_eq!(next(socket).await, Message::text("room: one"));
        assert_eq!(next(socket).await, Message::text("room: two"));
    }
    // The publisher did not subscribe, so it hears nothing back.
    publisher.send(Message::text("echo")).await.expect("send");
    assert_eq!(next(&mut publisher).await, Message::text("echo"));
}
