//! Pub/sub cannot be used to amplify memory: a publication too large for a
//! subscriber's stream limit never reaches it (one shared copy at most,
//! never one per subscriber), and topics are scoped per handler unless the
//! configuration gives handlers one `topic_scope`.

use eventsource_stream::Eventsource as _;
use futures::{SinkExt as _, StreamExt as _};
use http_body_util::BodyDataStream;
use tokio_tungstenite::tungstenite::Message;
use wasmgate_tests::client::Client;
use wasmgate_tests::ws::connect;
use wasmgate_tests::{TestGateway, hello_and_echo, metric};

const SUBSCRIBERS: usize = 200;

/// A publisher that may send 8 MiB, subscribers that take 4 MiB (the
/// default), and an SSE handler outside their scope.
fn gateway() -> TestGateway {
    TestGateway::start(&hello_and_echo(
        "[handler.ws-echo]\nworld = \"websocket\"\ntopic_scope = \"rooms\"\n\
         stream = { max_message = \"8MiB\" }\n\n\
         [handler.sse-room]\nworld = \"sse\"\ntopic_scope = \"rooms\"\n\n\
         [handler.outsider]\npath = \"{handlers}/sse-room.wasm\"\nworld = \"sse\"\n\n\
         [[route]]\npath = \"/ws/*\"\nhandler = \"ws-echo\"\n\n\
         [[route]]\npath = \"/sse/*\"\nhandler = \"sse-room\"\n\n\
         [[route]]\npath = \"/outside/*\"\nhandler = \"outsider\"\n",
    ))
}

async fn refused(gateway: &TestGateway, handler: &str) -> f64 {
    let series =
        format!("wasmgate_stream_messages_total{{direction=\"refused\",handler=\"{handler}\"}}");
    metric(gateway, &series).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_publications_to_many_subscribers_cost_no_memory() {
    let gateway = gateway();
    let mut subscribers = Vec::new();
    for _ in 0..SUBSCRIBERS {
        let mut client = Client::http1(gateway.http()).await;
        let response = client.get_streaming("/sse/lobby").await;
        let mut events = BodyDataStream::new(response.into_body()).eventsource();
        let joined = events.next().await.expect("an event").expect("well formed");
        assert_eq!(joined.event, "joined");
        subscribers.push((client, events));
    }
    let before = gateway.rss_kib();
    let mut publisher = connect(&gateway, "/ws/publisher").await.expect("upgrade");
    let big = "x".repeat(4 * 1024 * 1024 + 1024);
    for _ in 0..10 {
        publisher
            .send(Message::text(format!("publish:lobby:{big}")))
            .await
            .expect("send");
    }
    // A small one after them: once it arrives, the big ones were dealt with.
    publisher
        .send(Message::text("publish:lobby:small"))
        .await
        .expect("send");
    for (_, events) in &mut subscribers {
        let event = events.next().await.expect("an event").expect("well formed");
        assert_eq!(event.data, "small", "the big ones never arrive");
    }
    let after = gateway.rss_kib();
    assert_eq!(
        refused(&gateway, "sse-room").await,
        (10 * SUBSCRIBERS) as f64
    );
    // Ten 4 MiB messages to 200 subscribers would be 8 GiB as copies; the
    // bound leaves room for allocator noise and the publisher's own frames.
    let grown_mib = after.saturating_sub(before) / 1024;
    assert!(
        grown_mib < 96,
        "RSS grew by {grown_mib} MiB ({before} → {after} KiB)"
    );
}

#[tokio::test]
async fn topics_are_scoped_per_handler_unless_configured_to_share() {
    let gateway = gateway();
    let mut client = Client::http1(gateway.http()).await;
    let response = client.get_streaming("/outside/lobby").await;
    let mut outside = BodyDataStream::new(response.into_body()).eventsource();
    assert_eq!(
        outside.next().await.expect("event").expect("ok").event,
        "joined"
    );
    let mut inside_client = Client::http1(gateway.http()).await;
    let response = inside_client.get_streaming("/sse/lobby").await;
    let mut inside = BodyDataStream::new(response.into_body()).eventsource();
    assert_eq!(
        inside.next().await.expect("event").expect("ok").event,
        "joined"
    );

    let mut publisher = connect(&gateway, "/ws/publisher").await.expect("upgrade");
    publisher
        .send(Message::text("publish:lobby:for rooms only"))
        .await
        .expect("send");
    let event = inside.next().await.expect("event").expect("ok");
    assert_eq!(event.data, "for rooms only");
    // The outsider's `lobby` is another topic: nothing came, only keep-alives.
    let nothing = tokio::time::timeout(std::time::Duration::from_millis(300), outside.next()).await;
    assert!(nothing.is_err(), "{nothing:?}");
}
