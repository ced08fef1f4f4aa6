//! The limits of WebSocket and SSE routes (`[handler.NAME.stream]` and the
//! gateway's keep-alive), each driven to the point where it acts, and
//! WebSockets over HTTP/2 (RFC 8441).

use std::time::Duration;

use futures::{SinkExt as _, StreamExt as _};
use http::{StatusCode, header};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::{Error, Message};
use wasmgate_tests::client::{self, Client};
use wasmgate_tests::ws::{connect, next};
use wasmgate_tests::{TestGateway, hello_and_echo};

/// ws-echo and sse-room under `stream` limits, with a 100 ms keep-alive.
fn gateway(stream: &str) -> TestGateway {
    let config = hello_and_echo(&format!(
        "[handler.ws-echo]\nworld = \"websocket\"\nstream = {{ {stream} }}\n\n\
         [handler.sse-room]\nworld = \"sse\"\nstream = {{ {stream} }}\n\n\
         [[route]]\npath = \"/ws/*\"\nhandler = \"ws-echo\"\n\n\
         [[route]]\npath = \"/sse/*\"\nhandler = \"sse-room\"\n"
    ))
    .replace("[gateway]\n", "[gateway]\nstream_keep_alive = \"100ms\"\n");
    TestGateway::start(&config)
}

fn close_code(message: Message) -> (CloseCode, String) {
    match message {
        Message::Close(Some(frame)) => (frame.code, frame.reason.to_string()),
        other => panic!("expected a close frame, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_limit_closes_with_1009() {
    let gateway = gateway("max_message = \"64KiB\"");
    let mut socket = connect(&gateway, "/ws/big").await.expect("upgrade");
    let at_limit = "x".repeat(64 * 1024);
    socket
        .send(Message::text(at_limit.clone()))
        .await
        .expect("send");
    assert_eq!(next(&mut socket).await, Message::text(at_limit));
    let over = "x".repeat(64 * 1024 + 1);
    socket.send(Message::text(over)).await.expect("send");
    let (code, _) = close_code(next(&mut socket).await);
    assert_eq!(code, CloseCode::Size);
    gateway.wait_for_log("ws-echo: closed with 1009 message too big");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_route_refuses_the_upgrade_with_503_until_a_slot_frees() {
    let gateway = gateway("max_connections = 2");
    let first = connect(&gateway, "/ws/a").await.expect("upgrade");
    let _second = connect(&gateway, "/ws/b").await.expect("upgrade");
    match connect(&gateway, "/ws/c").await {
        Err(Error::Http(response)) => {
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        }
        other => panic!("expected 503, got {other:?}"),
    }
    // SSE routes count their own streams; this one is empty.
    let mut sse = Client::http1(gateway.http()).await;
    let stream = sse.get_streaming("/sse/room").await;
    assert_eq!(stream.status(), StatusCode::OK);
    drop(first);
    // The guest hears the close first; the slot frees as its task ends, just
    // after, so a retry covers only that last step.
    gateway.wait_for_log("ws-echo: closed with 1006");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match connect(&gateway, "/ws/d").await {
            Ok(_) => break,
            Err(Error::Http(response)) if response.status() == StatusCode::SERVICE_UNAVAILABLE => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the slot never freed"
                );
                tokio::task::yield_now().await;
            }
            Err(other) => panic!("unexpected {other}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_is_closed_with_1001() {
    let gateway = gateway("idle_timeout = \"400ms\"");
    let mut socket = connect(&gateway, "/ws/idle").await.expect("upgrade");
    socket.send(Message::text("hi")).await.expect("send");
    assert_eq!(next(&mut socket).await, Message::text("hi"));
    // Pings keep flowing (the client answers them), yet nothing is said.
    let (code, reason) = close_code(next(&mut socket).await);
    assert_eq!((code, reason.as_str()), (CloseCode::Away, "idle timeout"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_pings_and_answers_pings() {
    let gateway = gateway("idle_timeout = \"1h\"");
    let mut socket = connect(&gateway, "/ws/pings").await.expect("upgrade");
    socket
        .send(Message::Ping(b"are you there".to_vec().into()))
        .await
        .expect("send");
    let mut pinged = 0;
    let mut ponged = false;
    while pinged < 5 || !ponged {
        match tokio::time::timeout(Duration::from_secs(10), socket.next()).await {
            Ok(Some(Ok(Message::Ping(_)))) => pinged += 1,
            Ok(Some(Ok(Message::Pong(payload)))) => {
                assert_eq!(&payload[..], b"are you there");
                ponged = true;
            }
            other => panic!("expected pings and a pong, got {other:?}"),
        }
    }
    // Five intervals later the client, which answered every ping, is still served.
    socket
        .send(Message::text("still here"))
        .await
        .expect("send");
    assert_eq!(next(&mut socket).await, Message::text("still here"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_answers_pings_is_dropped() {
    let gateway = gateway("idle_timeout = \"1h\"");
    // A raw socket: it completes the handshake, then reads bytes without
    // ever answering (a tungstenite client would pong on its own).
    let mut tcp = TcpStream::connect(gateway.http()).await.expect("connect");
    let handshake = format!(
        "GET /ws/mute HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        gateway.http()
    );
    tcp.write_all(handshake.as_bytes()).await.expect("write");
    let mut received = Vec::new();
    let mut buffer = [0; 1024];
    loop {
        let read = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buffer))
            .await
            .expect("the gateway ends the connection in time")
            .expect("read");
        if read == 0 {
            break;
        }
        received.extend_from_slice(&buffer[..read]);
    }
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 101"), "{text}");
    let head_end = received
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .expect("a response head")
        + 4;
    // 0x89: an unfragmented ping frame, the first thing after the head.
    assert_eq!(received.get(head_end), Some(&0x89), "{received:?}");
    gateway.wait_for_log("ws-echo: closed with 1006 no answer to pings");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_closed_as_a_slow_consumer() {
    let gateway = gateway("send_queue = 4, max_message = \"1MiB\"");
    let mut socket = connect(&gateway, "/ws/slow").await.expect("upgrade");
    // Echoes pile up: the client sends and never reads, so the kernel's
    // buffers fill, then the connection's send queue, then the policy acts.
    let chunk = "y".repeat(512 * 1024);
    let sending = async {
        for _ in 0..200 {
            if socket.send(Message::text(chunk.clone())).await.is_err() {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(20), sending).await;
    gateway.wait_for_log("ws-echo: closed with 1008 slow consumer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_streams_count_against_their_route_and_call_on_close_when_the_client_leaves() {
    let gateway = gateway("max_connections = 1");
    let mut first = Client::http1(gateway.http()).await;
    let stream = first.get_streaming("/sse/room").await;
    assert_eq!(stream.status(), StatusCode::OK);
    let mut second = Client::http1(gateway.http()).await;
    let refused = second.get("/sse/room").await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    drop(stream);
    drop(first);
    gateway.wait_for_log("sse-room: client gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_open_over_http2_with_extended_connect() {
    let gateway = gateway("max_message = \"1MiB\"");
    let mut h2 = Client::h2c(gateway.http()).await;
    // One ordinary request first, so the server's SETTINGS (which enable
    // extended CONNECT) have arrived.
    assert_eq!(h2.get("/hello").await.status, StatusCode::OK);
    let mut request = h2
        .request("CONNECT", "/ws/h2")
        .header(header::SEC_WEBSOCKET_VERSION, "13")
        .body(client::empty())
        .expect("valid");
    request
        .extensions_mut()
        .insert(hyper::ext::Protocol::from_static("websocket"));
    let response = h2.send_streaming(request).await.expect("response head");
    assert_eq!(response.status(), StatusCode::OK);
    let upgraded = hyper::upgrade::on(response).await.expect("upgraded stream");
    let mut socket =
        WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Client, None).await;
    socket.send(Message::text("over h2")).await.expect("send");
    assert_eq!(next(&mut socket).await, Message::text("over h2"));
    // The same connection still serves ordinary requests beside the socket.
    assert_eq!(h2.get("/hello").await.status, StatusCode::OK);
    socket
        .send(Message::Close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "done".into(),
        })))
        .await
        .expect("close");
    gateway.wait_for_log("ws-echo: closed with 1000 done");
}
