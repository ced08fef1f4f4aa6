//! Plain wasi:http streaming (no stream route): request and response bodies
//! pass through the guest chunk by chunk, never buffered whole, and a
//! `text/event-stream` response reaches the client event by event, as the
//! guest writes it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use eventsource_stream::Eventsource as _;
use http::{StatusCode, header};
use http_body_util::{BodyDataStream, BodyExt, StreamBody};
use wasmgate_tests::client::{self, Client};
use wasmgate_tests::{TestGateway, hello_and_echo};

#[tokio::test]
async fn a_16_mib_body_streams_through_the_guest_and_back_intact() {
    let gateway = TestGateway::start(&hello_and_echo(""));
    const CHUNK: usize = 64 * 1024;
    const CHUNKS: usize = 256;
    // A pattern that differs per chunk, so a reordered or repeated chunk shows.
    let payload: Vec<u8> = (0..CHUNK * CHUNKS)
        .map(|i| (i % 251) as u8 ^ (i / CHUNK) as u8)
        .collect();
    let payload = Bytes::from(payload);
    for mut client in [
        Client::http1(gateway.http()).await,
        Client::h2c(gateway.http()).await,
    ] {
        let chunks: Vec<Result<hyper::body::Frame<Bytes>, std::convert::Infallible>> = (0..CHUNKS)
            .map(|index| {
                Ok(hyper::body::Frame::data(
                    payload.slice(index * CHUNK..(index + 1) * CHUNK),
                ))
            })
            .collect();
        let body = StreamBody::new(futures::stream::iter(chunks)).boxed();
        let request = client
            .request("POST", "/echo/upload?body")
            .body(body)
            .expect("valid");
        let reply = client.send(request).await.expect("upload");
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.body.len(), payload.len());
        assert!(
            reply.body == payload,
            "the echoed body differs from what was sent"
        );
    }
}

/// The guest echoes each chunk before the next one is sent: neither the
/// request nor the response body can be buffered whole anywhere on the way.
#[tokio::test]
async fn bodies_stream_through_the_guest_in_both_directions_at_once() {
    let gateway = TestGateway::start(&hello_and_echo(""));
    for mut client in [
        Client::http1(gateway.http()).await,
        Client::h2c(gateway.http()).await,
    ] {
        let (chunks, receiver) = tokio::sync::mpsc::channel::<Bytes>(1);
        let frames = futures::stream::unfold(receiver, |mut receiver| async move {
            let chunk = receiver.recv().await?;
            Some((
                Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(chunk)),
                receiver,
            ))
        });
        let request = client
            .request("POST", "/echo/duplex?body")
            .body(StreamBody::new(frames).boxed())
            .expect("valid");
        let first = Bytes::from(vec![b'a'; 1000]);
        chunks.send(first.clone()).await.expect("body accepts");
        let response = client.send_streaming(request).await.expect("response head");
        assert_eq!(response.status(), StatusCode::OK);
        let mut body = response.into_body();
        for round in 0u8..5 {
            let expected = Bytes::from(vec![b'a' + round; 1000]);
            let mut echoed = Vec::new();
            while echoed.len() < expected.len() {
                let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
                    .await
                    .expect("the chunk comes back before the next is sent")
                    .expect("body continues")
                    .expect("readable");
                echoed.extend_from_slice(frame.data_ref().expect("data frame"));
            }
            assert_eq!(echoed, expected);
            if round < 4 {
                chunks
                    .send(Bytes::from(vec![b'a' + round + 1; 1000]))
                    .await
                    .expect("send");
            }
        }
        drop(chunks);
        let rest = body.collect().await.expect("body ends").to_bytes();
        assert!(rest.is_empty());
    }
}

const INTERVAL: Duration = Duration::from_millis(400);

#[tokio::test]
async fn server_sent_events_arrive_one_at_a_time_as_written() {
    let gateway = TestGateway::start(&hello_and_echo(
        "[handler.clock]\n\n[[route]]\npath = \"/clock\"\nhandler = \"clock\"\n",
    ));
    for mut client in [
        Client::http1(gateway.http()).await,
        Client::h2c(gateway.http()).await,
    ] {
        let path = format!("/clock?count=3&interval_ms={}", INTERVAL.as_millis());
        let request = client
            .request("GET", &path)
            .body(client::empty())
            .expect("valid");
        let response = client.send_streaming(request).await.expect("response head");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "text/event-stream"
        );
        assert!(
            response.headers().get(header::CONTENT_ENCODING).is_none(),
            "streams are not compressed"
        );
        let mut events = BodyDataStream::new(response.into_body()).eventsource();
        let mut arrivals = Vec::new();
        while let Some(event) = futures::StreamExt::next(&mut events).await {
            arrivals.push((unix_ms(), event.expect("a well-formed event")));
        }
        assert_eq!(arrivals.len(), 3, "{arrivals:?}");
        for (index, (_, event)) in arrivals.iter().enumerate() {
            assert_eq!(
                (event.id.as_str(), event.event.as_str()),
                (index.to_string().as_str(), "tick")
            );
            let data: serde_json::Value = serde_json::from_str(&event.data).expect("JSON data");
            assert_eq!(data["tick"], index);
        }
        assert_eq!(arrivals[0].1.retry, Some(INTERVAL));
        // Each event reaches the client before the guest even writes the
        // next one (the guest stamps each with its write time): nothing on
        // the way waits for more of the body.
        for pair in arrivals.windows(2) {
            let arrived = pair[0].0;
            let next_written: serde_json::Value =
                serde_json::from_str(&pair[1].1.data).expect("JSON");
            let next_written = next_written["unix_ms"].as_u64().expect("a timestamp");
            assert!(
                arrived <= next_written,
                "event {:?} arrived only with the next one",
                pair[0].1.id
            );
        }
    }
}

fn unix_ms() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970");
    u64::try_from(since.as_millis()).expect("fits")
}
