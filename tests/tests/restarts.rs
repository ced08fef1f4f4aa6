//! Restarts that refuse no connection: a new process takes over the
//! listening sockets through the handover socket, and under systemd socket
//! activation a connection made while no gateway runs waits and is served.

use std::time::Duration;

use http::StatusCode;
use wasmgate_tests::client::{self, Client};
use wasmgate_tests::{TestGateway, slow_config};

/// Requests on fresh connections (so each one goes through the listening
/// socket's accept queue) until `stop`; returns (successes, failures).
async fn request_loop(
    addr: std::net::SocketAddr,
    stop: std::sync::Arc<tokio::sync::Notify>,
) -> (usize, Vec<String>) {
    let (mut ok, mut failed) = (0, Vec::new());
    let stopped = stop.notified();
    tokio::pin!(stopped);
    loop {
        let attempt = async {
            let stream = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(|error| format!("connect: {error}"))?;
            let mut client = Client::over_tcp(stream, addr).await;
            let request = client
                .request("GET", "/slow?chunks=1&pause_ms=0")
                .body(client::empty())
                .map_err(|error| error.to_string())?;
            let reply = client
                .send(request)
                .await
                .map_err(|error| format!("request: {error}"))?;
            if reply.status == StatusCode::OK {
                Ok(())
            } else {
                Err(format!("status {}", reply.status))
            }
        };
        tokio::select! {
            () = &mut stopped => return (ok, failed),
            result = attempt => match result {
                Ok(()) => ok += 1,
                Err(error) => failed.push(error),
            },
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_process_takes_over_the_sockets_and_no_request_fails() {
    let shared = tempfile::tempdir().expect("temp dir");
    let socket = shared.path().join("handover.sock");
    let config = slow_config(
        "10s",
        &format!("handover_socket = \"{}\"", socket.display()),
    );
    let mut old = TestGateway::start(&config);
    let addr = old.http();
    let stop = std::sync::Arc::new(tokio::sync::Notify::new());
    let loops: Vec<_> = (0..4)
        .map(|_| tokio::spawn(request_loop(addr, std::sync::Arc::clone(&stop))))
        .collect();

    let new = TestGateway::start(&config);
    assert_eq!(new.http(), addr, "the new process serves the same port");
    assert_eq!(new.admin(), old.admin(), "and the same admin port");
    old.wait_for_log("handed the listening sockets to a new process");
    new.wait_for_log("took over the listening sockets");
    old.signal("TERM");
    assert!(old.wait_exit(Duration::from_secs(15)).success());
    // The old process is gone: whatever answers now is the new one.
    let mut after = Client::http1(addr).await;
    assert_eq!(
        after.get("/slow?chunks=1&pause_ms=0").await.status,
        StatusCode::OK
    );
    stop.notify_waiters();
    let mut total = 0;
    for handle in loops {
        let (ok, failed) = handle.await.expect("loop task");
        assert!(failed.is_empty(), "failed requests: {failed:?}");
        total += ok;
    }
    assert!(total > 0, "the loops made requests");
}

/// Under systemd socket activation (`config/deploy/wasmgate.socket`) the
/// ports are bound before wasmgate runs, and stay bound across restarts: a
/// connection made while no gateway process exists waits in the queue and
/// is served once one starts, instead of being refused.
#[tokio::test]
async fn socket_activation_serves_a_connection_made_before_the_gateway_ran() {
    let public = std::net::SocketAddr::from(([127, 0, 0, 1], wasmgate_tests::free_port()));
    let admin = std::net::SocketAddr::from(([127, 0, 0, 1], wasmgate_tests::free_port()));
    let config = slow_config("5s", "").replace("127.0.0.1:0", &public.to_string())
        + &format!("\n[admin]\naddr = \"{admin}\"\n");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut gateway = TestGateway::start_socket_activated(dir, &config, &[public, admin]);
    // systemd-socket-activate starts the gateway on this first connection.
    let mut client = Client::http1(public).await;
    let reply = client.get("/slow?chunks=1&pause_ms=0").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    gateway.wait_listening();
    assert_eq!((gateway.http(), gateway.admin()), (public, admin));
    gateway.wait_for_log("listening on the sockets systemd passed sockets=2");
    gateway.signal("TERM");
    assert!(gateway.wait_exit(Duration::from_secs(10)).success());
}
