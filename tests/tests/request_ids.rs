//! Request ids: made here (or taken from a trusted proxy), passed to the
//! guest, returned on the response, in the access log and in the guest's
//! own log lines (the request's tracing span); credentials never reach a
//! log line.

use http::header;
use wasmgate_tests::client::{Client, empty};
use wasmgate_tests::{TestGateway, hello_and_echo};

/// `extra` in the echo/hello config, with the chatty fixture at `/chatty`
/// and the listener trusting `trusted` as proxies.
fn config(trusted: &str) -> String {
    hello_and_echo("\n[handler.chatty]\n\n[[route]]\npath = \"/chatty\"\nhandler = \"chatty\"\n")
        .replace(
            "addr = \"127.0.0.1:0\"",
            &format!("addr = \"127.0.0.1:0\"\ntrusted_proxies = [{trusted}]"),
        )
}

async fn echo_with(client: &mut Client, id: Option<&str>) -> (String, String) {
    let mut request = client.request("GET", "/echo/x");
    if let Some(id) = id {
        request = request.header("x-request-id", id);
    }
    let reply = client
        .send(request.body(empty()).expect("request"))
        .await
        .expect("answered");
    let returned = reply.headers["x-request-id"]
        .to_str()
        .expect("text")
        .to_string();
    (returned, reply.text())
}

#[tokio::test]
async fn each_request_gets_an_id_the_guest_the_client_and_the_logs_share() {
    let gateway = TestGateway::start(&config(""));
    let mut client = Client::http1(gateway.http()).await;
    let (id, echoed) = echo_with(&mut client, None).await;
    assert_eq!(id.len(), 36, "a UUID: {id}");
    assert!(echoed.contains(&id), "the guest saw it: {echoed}");
    gateway.wait_for_log("\"GET /echo/x\"");
    gateway.wait_for_log(&format!("id={id}"));
    let (second, _) = echo_with(&mut client, None).await;
    assert_ne!(second, id);
    // A client that is not a trusted proxy cannot choose its id.
    let (replaced, echoed) = echo_with(&mut client, Some("chosen-by-client")).await;
    assert_ne!(replaced, "chosen-by-client");
    assert!(!echoed.contains("chosen-by-client"), "{echoed}");

    // The guest's own log lines carry the request's span: id, route, handler.
    let reply = client.get("/chatty").await;
    let id = reply.headers["x-request-id"]
        .to_str()
        .expect("text")
        .to_string();
    let line = gateway.wait_for_log("one line in six pieces");
    assert!(
        line.contains(&format!("id={id}")) && line.contains("handler=chatty"),
        "{line}"
    );
}

#[tokio::test]
async fn a_trusted_proxy_passes_its_id_through() {
    let gateway = TestGateway::start(&config("\"127.0.0.0/8\""));
    let mut client = Client::http1(gateway.http()).await;
    let (id, echoed) = echo_with(&mut client, Some("edge-4711")).await;
    assert_eq!(id, "edge-4711");
    assert!(echoed.contains("edge-4711"), "{echoed}");
    // Too long or empty: replaced even from a proxy.
    let long = "x".repeat(200);
    let (id, _) = echo_with(&mut client, Some(&long)).await;
    assert_eq!(id.len(), 36);
}

#[tokio::test]
async fn credentials_never_reach_a_log_line() {
    let gateway = TestGateway::start(&config(""));
    let mut client = Client::http1(gateway.http()).await;
    for path in ["/echo/x", "/nowhere", "/hello"] {
        let request = client
            .request("GET", path)
            .header(header::AUTHORIZATION, "Bearer SECRET-TOKEN-1234")
            .header(header::COOKIE, "session=SECRET-COOKIE-5678")
            .header(header::PROXY_AUTHORIZATION, "Basic SECRET-PROXY-9999")
            .body(empty())
            .expect("request");
        client.send(request).await.expect("answered");
    }
    gateway.wait_for_log("\"GET /hello\"");
    let log = gateway.log();
    for secret in ["SECRET-TOKEN", "SECRET-COOKIE", "SECRET-PROXY"] {
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
    }
}
