//! Guest output is bounded and readable: a line written in pieces (each
//! through a newly obtained stderr stream) is one log line, and a guest that
//! floods its output is capped at its handler's log rate, with what was
//! dropped counted, so it cannot push out the access log.

use http::StatusCode;
use wasmgate_tests::client::Client;
use wasmgate_tests::{TestGateway, hello_and_echo, metric};

fn gateway() -> TestGateway {
    TestGateway::start(&hello_and_echo(
        "[handler.chatty]\n\n[[route]]\npath = \"/chatty\"\nhandler = \"chatty\"\n",
    ))
}

#[tokio::test]
async fn a_line_written_in_six_pieces_is_one_log_line() {
    let gateway = gateway();
    let mut client = Client::http1(gateway.http()).await;
    assert_eq!(client.get("/chatty").await.status, StatusCode::OK);
    let line = gateway.wait_for_log("one line in six pieces");
    assert!(line.contains("handler=\"chatty\""), "{line}");
    let pieces = gateway
        .log()
        .lines()
        .filter(|line| line.contains("wasmgate::guest") && line.contains("handler=\"chatty\""))
        .count();
    assert_eq!(pieces, 1, "{}", gateway.log());
}

#[tokio::test]
async fn a_flooding_guest_is_capped_and_the_rest_counted() {
    let gateway = gateway();
    let mut client = Client::http1(gateway.http()).await;
    assert_eq!(
        client.get("/chatty?lines=5000").await.status,
        StatusCode::OK
    );
    // The access line of the flood's own request still makes it out.
    gateway.wait_for_log("\"GET /chatty\"");
    let logged = gateway
        .log()
        .lines()
        .filter(|line| line.contains("flood "))
        .count();
    assert!(logged < 1000, "{logged} of 5000 flood lines were logged");
    let dropped = metric(
        &gateway,
        "wasmgate_guest_log_lines_dropped_total{handler=\"chatty\"}",
    )
    .await;
    assert_eq!(dropped as usize + logged, 5000);
}
