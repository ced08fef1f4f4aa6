//! The admin API takes orders from operators only: `POST /reload` needs the
//! bearer token of `[admin] token_file` and is refused to anything shaped
//! like a browser (a foreign `Origin`, a form content type) even with it;
//! `/status` answers only when asked by address, not by a name a rebinding
//! DNS could point here; `/metrics` and the probes stay open. Its
//! connections are bounded in time, and a public admin address with no
//! token is a configuration error.

use std::time::Duration;

use http::StatusCode;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use wasmgate_tests::client::{self, Client, Reply};
use wasmgate_tests::{TestGateway, hello_and_echo};

const TOKEN: &str = "s3cret-admin-token";

/// Writes the token file as an operator would: readable by its owner only.
fn write_token(dir: &std::path::Path, text: &str) {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.join("admin.token");
    std::fs::write(&path, text).expect("token file");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

fn gateway() -> TestGateway {
    let dir = tempfile::tempdir().expect("temp dir");
    write_token(dir.path(), &format!("{TOKEN}\n"));
    let config = hello_and_echo("")
        + "\n[admin]\naddr = \"127.0.0.1:0\"\ntoken_file = \"{dir}/admin.token\"\n";
    TestGateway::start_in(dir, &config)
}

async fn reload(gateway: &TestGateway, headers: &[(&str, &str)]) -> Reply {
    let mut client = Client::http1(gateway.admin()).await;
    let mut request = client.request("POST", "/reload");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    client
        .send(request.body(client::empty()).expect("valid"))
        .await
        .expect("the admin listener answers")
}

const BEARER: (&str, &str) = ("authorization", "Bearer s3cret-admin-token");

#[tokio::test]
async fn reload_needs_the_token() {
    let gateway = gateway();
    assert_eq!(reload(&gateway, &[]).await.status, StatusCode::UNAUTHORIZED);
    let wrong = ("authorization", "Bearer guess");
    assert_eq!(
        reload(&gateway, &[wrong]).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(reload(&gateway, &[BEARER]).await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_cross_site_form_post_is_refused_even_with_the_token() {
    let gateway = gateway();
    let foreign = ("origin", "https://evil.example");
    let form = ("content-type", "text/plain");
    assert_eq!(
        reload(&gateway, &[foreign, form]).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        reload(&gateway, &[BEARER, foreign]).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        reload(
            &gateway,
            &[
                BEARER,
                ("content-type", "application/x-www-form-urlencoded")
            ]
        )
        .await
        .status,
        StatusCode::FORBIDDEN
    );
    // The admin's own origin is not foreign.
    let own = format!("http://{}", gateway.admin());
    assert_eq!(
        reload(&gateway, &[BEARER, ("origin", &own)]).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn status_is_not_served_to_a_rebound_name_but_metrics_are() {
    let gateway = gateway();
    let mut client = Client::http1(gateway.admin())
        .await
        .with_authority("evil.example:9090");
    assert_eq!(client.get("/status").await.status, StatusCode::FORBIDDEN);
    assert_eq!(client.get("/metrics").await.status, StatusCode::OK);
    assert_eq!(client.get("/readyz").await.status, StatusCode::OK);
    let mut by_address = Client::http1(gateway.admin()).await;
    assert_eq!(by_address.get("/status").await.status, StatusCode::OK);
    let mut by_localhost = Client::http1(gateway.admin())
        .await
        .with_authority(&format!("localhost:{}", gateway.admin().port()));
    assert_eq!(by_localhost.get("/status").await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_silent_admin_connection_is_closed() {
    let gateway = gateway();
    let mut silent = TcpStream::connect(gateway.admin()).await.expect("connect");
    let mut buffer = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(15), silent.read(&mut buffer))
        .await
        .expect("the admin listener closes a connection that says nothing");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
}

#[tokio::test]
async fn wasmgate_reload_sends_the_token_from_the_config() {
    let port = wasmgate_tests::free_port();
    let dir = tempfile::tempdir().expect("temp dir");
    write_token(dir.path(), TOKEN);
    let config = hello_and_echo("").replace("[gateway]\n", "[gateway]\nwatch = false\n")
        + &format!(
            "\n[admin]\naddr = \"127.0.0.1:{port}\"\ntoken_file = \"{{dir}}/admin.token\"\n"
        );
    let gateway = TestGateway::start_in(dir, &config);
    let config_file = gateway.dir().join("wasmgate.toml").display().to_string();
    let output = wasmgate_tests::run_cli(&["reload", "--config", &config_file], gateway.dir());
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "reloaded: generation 2\n"
    );
}

#[test]
fn a_public_admin_address_without_a_token_is_a_config_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = hello_and_echo("").replace("{handlers}", "handlers")
        + "\n[admin]\naddr = \"0.0.0.0:9999\"\n";
    std::fs::write(dir.path().join("wasmgate.toml"), config).expect("config");
    let output = wasmgate_tests::run_cli(&["check", "--config", "wasmgate.toml"], dir.path());
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("admin.addr: 0.0.0.0:9999 is not a loopback address: set admin.token_file"),
        "{stderr}"
    );
}
