//! Capabilities are granted per handler, default deny: environment variables
//! (`env`, with a `.env` file as fallback) and outbound HTTP (`outbound`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::StatusCode;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use wasmgate_tests::TestGateway;
use wasmgate_tests::client::Client;

fn config(handlers: &str) -> String {
    format!(
        "[gateway]\nhandlers_dir = \"{{handlers}}\"\n\n[[listener]]\naddr = \"127.0.0.1:0\"\n\n{handlers}"
    )
}

async fn env_seen(gateway: &TestGateway, path: &str) -> serde_json::Value {
    let reply = Client::http1(gateway.http()).await.get(path).await;
    assert_eq!(reply.status, StatusCode::OK);
    serde_json::from_slice(&reply.body).expect("JSON")
}

#[tokio::test]
async fn guests_see_granted_keys_only_with_the_dotenv_file_as_fallback() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join(".env"),
        "WG_FROM_FILE=file\nWG_BOTH=file\nWG_UNGRANTED=file\n",
    )
    .expect("write .env");
    let handlers = "[handler.granted]\npath = \"{handlers}/env-dump.wasm\"\n\
                    env = [\"WG_REAL\", \"WG_FROM_FILE\", \"WG_BOTH\", \"WG_MISSING\"]\n\n\
                    [handler.all]\npath = \"{handlers}/env-dump.wasm\"\nenv = \"all\"\n\n\
                    [handler.none]\npath = \"{handlers}/env-dump.wasm\"\n\n\
                    [[route]]\npath = \"/granted\"\nhandler = \"granted\"\n\n\
                    [[route]]\npath = \"/all\"\nhandler = \"all\"\n\n\
                    [[route]]\npath = \"/none\"\nhandler = \"none\"\n";
    let gateway = TestGateway::start_with_env(
        dir,
        &config(handlers),
        &[
            ("WG_REAL", "real"),
            ("WG_BOTH", "process"),
            ("WG_SECRET", "hidden"),
        ],
    );
    assert_eq!(
        env_seen(&gateway, "/granted").await,
        serde_json::json!({ "WG_REAL": "real", "WG_FROM_FILE": "file", "WG_BOTH": "process" })
    );
    assert_eq!(env_seen(&gateway, "/none").await, serde_json::json!({}));
    let all = env_seen(&gateway, "/all").await;
    assert_eq!(all["WG_SECRET"], "hidden");
    assert_eq!(all["WG_UNGRANTED"], "file");
    assert_eq!(all["WG_BOTH"], "process");
}

/// A local upstream that answers `hello from upstream` and counts the
/// connections it accepts.
async fn upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    let socket = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = socket.local_addr().expect("addr");
    let connections = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&connections);
    tokio::spawn(async move {
        while let Ok((stream, _)) = socket.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let service = service_fn(|_request| async {
                    Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                        Bytes::from_static(b"hello from upstream"),
                    )))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, connections)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_requests_reach_allowed_hosts_only_and_reuse_connections() {
    let (allowed, allowed_connections) = upstream().await;
    let (denied, denied_connections) = upstream().await;
    let handlers = format!(
        "[handler.fetch]\noutbound = [\"127.0.0.1:{}\"]\n\n[handler.closed]\npath = \"{{handlers}}/fetch.wasm\"\n\n\
         [[route]]\npath = \"/fetch\"\nhandler = \"fetch\"\n\n[[route]]\npath = \"/closed\"\nhandler = \"closed\"\n",
        allowed.port()
    );
    let gateway = TestGateway::start(&config(&handlers));
    let mut client = Client::http1(gateway.http()).await;
    for _ in 0..3 {
        let reply = client.get(&format!("/fetch?url=http://{allowed}/x")).await;
        assert_eq!(
            (reply.status, reply.text()),
            (StatusCode::OK, "200\nhello from upstream".into())
        );
    }
    assert_eq!(
        allowed_connections.load(Ordering::SeqCst),
        1,
        "three requests, one pooled connection"
    );

    let reply = client.get(&format!("/fetch?url=http://{denied}/x")).await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert!(
        reply.text().contains("HttpRequestDenied"),
        "{}",
        reply.text()
    );
    // A handler with no `outbound` may reach nothing, not even the allowed host.
    let reply = client.get(&format!("/closed?url=http://{allowed}/x")).await;
    assert!(
        reply.text().contains("HttpRequestDenied"),
        "{}",
        reply.text()
    );
    assert_eq!(denied_connections.load(Ordering::SeqCst), 0);
    gateway.wait_for_log("outbound HTTP request denied");
}

// An allowlist checks names; `localhost` (like a name an attacker points at
// 127.0.0.1, 169.254.169.254 or the admin port) resolves to an internal
// address, which is refused at connect time unless the handler says
// `allow_private` or the rule names the address itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_that_resolves_inside_is_refused_unless_private_is_allowed() {
    let (upstream, connections) = upstream().await;
    let port = upstream.port();
    let handlers = format!(
        "[handler.fetch]\noutbound = [\"localhost:{port}\"]\n\n\
         [handler.inside]\npath = \"{{handlers}}/fetch.wasm\"\noutbound = [\"localhost:{port}\"]\nallow_private = true\n\n\
         [[route]]\npath = \"/fetch\"\nhandler = \"fetch\"\n\n[[route]]\npath = \"/inside\"\nhandler = \"inside\"\n"
    );
    let gateway = TestGateway::start(&config(&handlers));
    let mut client = Client::http1(gateway.http()).await;
    let reply = client
        .get(&format!("/fetch?url=http://localhost:{port}/x"))
        .await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{}", reply.text());
    assert!(
        reply.text().contains("DestinationIpProhibited"),
        "{}",
        reply.text()
    );
    assert_eq!(
        connections.load(Ordering::SeqCst),
        0,
        "nothing reached the inside"
    );
    gateway.wait_for_log(
        "outbound HTTP request refused: localhost resolves only to internal addresses",
    );

    let reply = client
        .get(&format!("/inside?url=http://localhost:{port}/x"))
        .await;
    assert_eq!(
        (reply.status, reply.text()),
        (StatusCode::OK, "200\nhello from upstream".into())
    );
}

/// `files` grants, through a profile: a read-only and a read-write
/// directory mapped into the guest; nothing else of the host is reachable,
/// and neither `..` nor a symlink leads out.
#[tokio::test]
async fn files_grants_map_directories_that_cannot_be_escaped() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    std::fs::create_dir(&data).expect("data dir");
    std::fs::create_dir(dir.path().join("rw")).expect("rw dir");
    std::fs::write(data.join("hello.txt"), "hi").expect("write");
    std::fs::write(dir.path().join("secret.txt"), "secret").expect("write");
    std::os::unix::fs::symlink(dir.path().join("secret.txt"), data.join("link")).expect("symlink");
    let handlers = "[profile.reader]\nfiles = [{ dir = \"data\", at = \"/data\" }]\n\n\
                    [handler.files]\nprofile = \"reader\"\nfiles = [{ dir = \"rw\", at = \"/rw\", write = true }]\n\n\
                    [[route]]\npath = \"/*\"\nhandler = \"files\"\n";
    let gateway = TestGateway::start_in(dir, &config(handlers));
    let ask = |path: &'static str| {
        let addr = gateway.http();
        async move {
            let reply = Client::http1(addr).await.get(path).await;
            (reply.status, reply.text())
        }
    };
    assert_eq!(
        ask("/read?path=/data/hello.txt").await,
        (StatusCode::OK, "hi".into())
    );
    for escape in [
        "/read?path=/data/../secret.txt",
        "/read?path=/data/link",
        "/read?path=/etc/hostname",
        "/read?path=../secret.txt",
    ] {
        let (status, text) = ask(escape).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{escape}: {text}");
        assert!(!text.contains("secret"), "{escape}: {text}");
    }
    let (status, _) = ask("/write?path=/data/new.txt").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "read-only");
    assert!(!gateway.dir().join("data/new.txt").exists());
    assert_eq!(
        ask("/write?path=/rw/new.txt").await,
        (StatusCode::OK, "written".into())
    );
    assert_eq!(
        std::fs::read_to_string(gateway.dir().join("rw/new.txt")).expect("written on the host"),
        "written"
    );
}
