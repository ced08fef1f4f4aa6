//! Standard streaming: a plain wasi:http handler's `text/event-stream` body
//! reaches the client event by event, as the guest writes it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use eventsource_stream::Eventsource as _;
use futures::StreamExt as _;
use http::{StatusCode, header};
use http_body_util::BodyDataStream;
use wasmgate_tests::client::{self, Client};
use wasmgate_tests::{TestGateway, hello_and_echo};

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
        while let Some(event) = events.next().await {
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
