//! SSE routes: a `wasmgate:streaming/sse-service` guest per event stream,
//! fed through the same pub/sub as WebSocket connections.

use std::time::Duration;

use eventsource_stream::Eventsource as _;
use futures::{SinkExt as _, StreamExt as _};
use http::{StatusCode, header};
use http_body_util::BodyDataStream;
use tokio::net::TcpStream;
use tokio_tungstenite::client_async;
use tokio_tungstenite::tungstenite::Message;
use wasmgate_tests::client::Client;
use wasmgate_tests::sse::next_event;
use wasmgate_tests::{TestGateway, hello_and_echo};

fn gateway() -> TestGateway {
    // A short keep-alive, so the gateway notices a departed client quickly.
    let config = hello_and_echo(
        "[handler.ws-echo]\nworld = \"websocket\"\ntopic_scope = \"rooms\"\n\n\
         [handler.sse-room]\nworld = \"sse\"\ntopic_scope = \"rooms\"\n\n\
         [[route]]\npath = \"/ws/*\"\nhandler = \"ws-echo\"\n\n\
         [[route]]\npath = \"/sse/*\"\nhandler = \"sse-room\"\n",
    )
    .replace("[gateway]\n", "[gateway]\nstream_keep_alive = \"100ms\"\n");
    TestGateway::start(&config)
}

// Multi-threaded: the client's connection task must run (to close its
// socket) while the test thread blocks waiting for the gateway's log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_subscribers_receive_what_websocket_clients_publish() {
    let gateway = gateway();
    let mut sse = Client::http1(gateway.http()).await;
    let response = sse.get_streaming("/sse/lobby").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "text/event-stream"
    );
    let mut events = BodyDataStream::new(response.into_body()).eventsource();
    let joined = next_event(&mut events).await;
    assert_eq!(
        (joined.event.as_str(), joined.data.as_str()),
        ("joined", "lobby")
    );

    let stream = TcpStream::connect(gateway.http()).await.expect("connect");
    let (mut publisher, _) = client_async(format!("ws://{}/ws/publisher", gateway.http()), stream)
        .await
        .expect("upgrade");
    for text in ["hello", "multi\nline"] {
        publisher
            .send(Message::text(format!("publish:lobby:{text}")))
            .await
            .expect("send");
        let event = next_event(&mut events).await;
        assert_eq!((event.event.as_str(), event.data.as_str()), ("lobby", text));
    }

    // The client leaves (closes its connection): the guest's on-close runs
    // and the instance goes.
    drop(events);
    drop(sse);
    gateway.wait_for_log("sse-room: client gone");
}

#[tokio::test]
async fn the_guest_can_refuse_a_subscription() {
    let gateway = gateway();
    let mut client = Client::http1(gateway.http()).await;
    let reply = client.get("/sse/").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.text(), "no room in the path\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_ends_event_streams_cleanly() {
    let mut gateway = gateway();
    let mut sse = Client::http1(gateway.http()).await;
    let response = sse.get_streaming("/sse/lobby").await;
    let mut events = BodyDataStream::new(response.into_body()).eventsource();
    assert_eq!(next_event(&mut events).await.event, "joined");
    gateway.signal("TERM");
    // The body ends (no error: the chunked stream is terminated properly)
    // well within the grace period, and the guest's on-close ran.
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(event) = events.next().await {
            event.expect("a clean stream");
        }
    })
    .await;
    assert!(end.is_ok(), "the stream did not end");
    gateway.wait_for_log("sse-room: client gone");
    assert_eq!(gateway.wait_exit(Duration::from_secs(10)).code(), Some(0));
}

// A lone CR ends a line for an SSE parser (a browser's too), so guest data
// split only on LF could forge fields: here, an `id`.
#[tokio::test]
async fn a_carriage_return_in_guest_data_cannot_forge_a_field() {
    let gateway = gateway();
    let mut sse = Client::http1(gateway.http()).await;
    let response = sse.get_streaming("/sse/lobby").await;
    let mut events = BodyDataStream::new(response.into_body()).eventsource();
    assert_eq!(next_event(&mut events).await.event, "joined");
    let stream = TcpStream::connect(gateway.http()).await.expect("connect");
    let (mut publisher, _) = client_async(format!("ws://{}/ws/publisher", gateway.http()), stream)
        .await
        .expect("upgrade");
    publisher
        .send(Message::text(
            "publish:lobby:a\rid: 666\r\nevent: forged\rb",
        ))
        .await
        .expect("send");
    let event = next_event(&mut events).await;
    assert_eq!(event.event, "lobby");
    assert_eq!(event.id, "", "a forged id got through");
    assert_eq!(event.data, "a\nid: 666\nevent: forged\nb");
}
