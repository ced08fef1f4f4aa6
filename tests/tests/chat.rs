//! The chat example: WebSocket and SSE clients of one room, and HTTP POSTs,
//! all meeting in the gateway's pub/sub.

use std::collections::HashSet;
use std::time::Duration;

use eventsource_stream::Eventsource as _;
use futures::{SinkExt as _, StreamExt as _};
use http::StatusCode;
use http_body_util::BodyDataStream;
use tokio::net::TcpStream;
use tokio_tungstenite::client_async;
use tokio_tungstenite::tungstenite::Message;
use wasmgate_tests::browser::{Browser, Tab};
use wasmgate_tests::client::{self, Client};
use wasmgate_tests::{TestGateway, chat_config};

const CLIENTS: usize = 50;
const PER_PUBLISHER: usize = 20;

/// What one client saw: the messages' texts in arrival order.
type Seen = Vec<String>;

async fn websocket_client(gateway: &TestGateway, ready: tokio::sync::mpsc::Sender<()>) -> Seen {
    let tcp = TcpStream::connect(gateway.http()).await.expect("connect");
    let url = format!("ws://{}/chat/ws?room=fanout", gateway.http());
    let (mut socket, _) = client_async(url, tcp).await.expect("upgrade");
    // The guest subscribed in on-open, before the 101.
    ready.send(()).await.expect("test alive");
    let mut seen = Vec::new();
    while seen.len() < 2 * PER_PUBLISHER {
        match tokio::time::timeout(Duration::from_secs(20), socket.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => seen.push(text.to_string()),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
            other => panic!("WebSocket client: expected messages, got {other:?}"),
        }
    }
    seen
}

async fn sse_client(gateway: &TestGateway, ready: tokio::sync::mpsc::Sender<()>) -> Seen {
    let mut client = Client::http1(gateway.http()).await;
    let response = client.get_streaming("/chat/events?room=fanout").await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut events = BodyDataStream::new(response.into_body()).eventsource();
    let mut seen = Vec::new();
    let mut next_id = 1;
    while seen.len() < 2 * PER_PUBLISHER {
        let event = tokio::time::timeout(Duration::from_secs(20), events.next())
            .await
            .expect("an event in time")
            .expect("the stream is open")
            .expect("a well-formed event");
        match event.event.as_str() {
            "joined" => ready.send(()).await.expect("test alive"),
            "message" => {
                assert_eq!(event.id, next_id.to_string(), "ids count up with no gap");
                next_id += 1;
                seen.push(event.data);
            }
            other => panic!("unexpected event {other}"),
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_mixed_clients_receive_every_message_once_and_in_order() {
    let gateway = chat_config();
    let gateway = &TestGateway::start(&gateway);
    let (ready, mut joined) = tokio::sync::mpsc::channel(CLIENTS);
    let clients: Vec<_> = (0..CLIENTS)
        .map(|index| {
            let ready = ready.clone();
            async move {
                if index % 2 == 0 {
                    websocket_client(gateway, ready).await
                } else {
                    sse_client(gateway, ready).await
                }
            }
        })
        .collect();
    let publishers = async {
        for _ in 0..CLIENTS {
            joined.recv().await.expect("every client joins");
        }
        // Two publishers at once: one over a WebSocket, one with POSTs.
        let tcp = TcpStream::connect(gateway.http()).await.expect("connect");
        let url = format!("ws://{}/chat/ws?room=fanout", gateway.http());
        let (mut socket, _) = client_async(url, tcp).await.expect("upgrade");
        let over_websocket = async {
            for index in 0..PER_PUBLISHER {
                socket
                    .send(Message::text(format!("ws {index}")))
                    .await
                    .expect("send");
            }
        };
        let over_post = async {
            let mut poster = Client::http1(gateway.http()).await;
            for index in 0..PER_PUBLISHER {
                let request = poster
                    .request("POST", "/chat/send?room=fanout")
                    .body(client::full(format!("post {index}")))
                    .expect("valid");
                let reply = poster.send(request).await.expect("POST answered");
                assert_eq!(reply.status, StatusCode::NO_CONTENT);
            }
        };
        tokio::join!(over_websocket, over_post);
        socket
    };
    let (seen, _publisher) = tokio::join!(futures::future::join_all(clients), publishers);
    let first = &seen[0];
    let expected: HashSet<String> = (0..PER_PUBLISHER)
        .flat_map(|index| [format!("ws {index}"), format!("post {index}")])
        .collect();
    assert_eq!(
        first.iter().cloned().collect::<HashSet<_>>(),
        expected,
        "every message, once"
    );
    for prefix in ["ws ", "post "] {
        let order: Vec<&String> = first.iter().filter(|m| m.starts_with(prefix)).collect();
        let sent: Vec<String> = (0..PER_PUBLISHER)
            .map(|index| format!("{prefix}{index}"))
            .collect();
        assert_eq!(
            order,
            sent.iter().collect::<Vec<_>>(),
            "each publisher's order"
        );
    }
    for (index, client) in seen.iter().enumerate() {
        assert_eq!(client, first, "client {index} saw the same sequence");
    }
}

#[tokio::test]
async fn the_demo_page_is_served_and_bad_posts_are_refused() {
    let gateway = TestGateway::start(&chat_config());
    let mut client = Client::http1(gateway.http()).await;
    let page = client.get("/chat").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.text().contains("new WebSocket("), "{}", page.text());
    assert!(page.text().contains("new EventSource("));
    let empty = client
        .request("POST", "/chat/send?room=lobby")
        .body(client::empty())
        .expect("valid");
    assert_eq!(
        client.send(empty).await.expect("answered").status,
        StatusCode::BAD_REQUEST
    );
    let bad_room = client
        .request("POST", "/chat/send?room=../x")
        .body(client::full("hi"))
        .expect("valid");
    assert_eq!(
        client.send(bad_room).await.expect("answered").status,
        StatusCode::BAD_REQUEST
    );
}

/// JavaScript that resolves once the chat log of the page shows `text`
/// (watching the DOM, no polling), or rejects after 10 s.
fn shown(text: &str) -> String {
    format!(
        r#"new Promise((resolve, reject) => {{
            const log = document.getElementById("log");
            const seen = () => log.textContent.includes({text:?});
            if (seen()) return resolve(true);
            new MutationObserver(() => {{ if (seen()) resolve(true); }})
                .observe(log, {{ childList: true, subtree: true }});
            setTimeout(() => reject(new Error("not shown: " + log.textContent)), 10000);
        }})"#
    )
}

/// Focuses the message box of `tab`, types `text` like a person, presses Send.
async fn say(browser: &mut Browser, tab: &Tab, text: &str) {
    browser
        .eval(tab, "document.getElementById('text').focus()")
        .await;
    browser.type_text(tab, text).await;
    browser
        .eval(tab, "document.querySelector('#form button').click()")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_typed_in_one_browser_tab_shows_in_the_other() {
    let gateway = TestGateway::start(&chat_config());
    let mut browser = Browser::launch().await;
    let base = format!("http://{}/chat?room=browser", gateway.http());
    let over_websocket = browser.open(&format!("{base}&via=ws&name=alice")).await;
    let over_sse = browser.open(&format!("{base}&via=sse&name=bob")).await;
    for tab in [&over_websocket, &over_sse] {
        assert_eq!(
            browser.eval(tab, "window.chatReady.then(() => true)").await,
            true
        );
    }
    say(
        &mut browser,
        &over_websocket,
        "hello from the WebSocket tab",
    )
    .await;
    assert_eq!(
        browser
            .eval(&over_sse, &shown("hello from the WebSocket tab"))
            .await,
        true
    );
    say(&mut browser, &over_sse, "and back over SSE").await;
    assert_eq!(
        browser
            .eval(&over_websocket, &shown("and back over SSE"))
            .await,
        true
    );
    let names = browser
        .eval(
            &over_websocket,
            "[...document.querySelectorAll('#log .name')].map(n => n.textContent).join(',')",
        )
        .await;
    assert_eq!(names, "alice,bob");
}
