//! TLS and hosts, the gateway as the front door of a site: several
//! certificates on one TLS listener chosen by SNI, host routes, the HTTPS
//! redirect, HSTS, certificates replaced on disk while the gateway runs, and
//! `wasmgate check` on these settings (the shipped production config too).

use http::{StatusCode, header};
use wasmgate_tests::certs::{TestCerts, leaf_of};
use wasmgate_tests::client::Client;
use wasmgate_tests::{TestGateway, hello_and_echo};

/// A plain listener that redirects to HTTPS on 8443, and a TLS listener
/// with HSTS, a default pair and two SNI entries (exact and wildcard).
fn edge_config(certs: &TestCerts) -> String {
    let config = hello_and_echo(
        "[[route]]\nhost = \"*.apps.example.test\"\npath = \"/*\"\nhandler = \"echo\"\n",
    );
    let tls_listener = format!(
        r#"addr = "127.0.0.1:0"
redirect = "https"
redirect_port = 8443

[[listener]]
addr = "127.0.0.1:0"
hsts = {{ max_age = "365d", include_subdomains = true }}
tls = {{ cert = "{cert}", key = "{key}", sni = [
  {{ names = ["api.example.test"], cert = "{{dir}}/api-cert.pem", key = "{{dir}}/api-key.pem" }},
  {{ names = ["*.apps.example.test"], cert = "{{dir}}/apps-cert.pem", key = "{{dir}}/apps-key.pem" }},
] }}
"#,
        cert = certs.cert.display(),
        key = certs.key.display(),
    );
    config.replacen("addr = \"127.0.0.1:0\"\n", &tls_listener, 1)
}

fn start() -> (TestGateway, TestCerts) {
    let dir = tempfile::tempdir().expect("temp dir");
    let certs = TestCerts::generate(dir.path());
    certs.issue("api-", &["api.example.test"]);
    certs.issue("apps-", &["*.apps.example.test"]);
    let gateway = TestGateway::start_in(dir, &edge_config(&certs));
    (gateway, certs)
}

#[tokio::test]
async fn sni_picks_the_exact_name_then_the_wildcard_then_the_default() {
    let (gateway, certs) = start();
    let https = gateway.https();
    let dir = gateway.dir();
    let served = |name: &'static str| certs.served_leaf(https, name);
    assert_eq!(
        served("api.example.test").await.expect("api handshake"),
        leaf_of(&dir.join("api-cert.pem"))
    );
    assert_eq!(
        served("tenant1.apps.example.test")
            .await
            .expect("wildcard handshake"),
        leaf_of(&dir.join("apps-cert.pem"))
    );
    // No SNI at all (an IP address) and an unknown name get the default pair.
    assert_eq!(
        served("127.0.0.1").await.expect("no-SNI handshake"),
        leaf_of(&certs.cert)
    );
    assert_eq!(
        served("localhost").await.expect("default handshake"),
        leaf_of(&certs.cert)
    );
    // One label only: a.b.apps.example.test is not covered by the wildcard.
    assert!(served("a.b.apps.example.test").await.is_err());
}

#[tokio::test]
async fn routes_match_exact_and_wildcard_hosts() {
    let (gateway, certs) = start();
    let config = certs.client_config(&[b"h2"]);
    let mut tenant = Client::tls(gateway.https(), config)
        .await
        .with_authority("tenant1.apps.example.test");
    let reply = tenant.get("/anything").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(
        reply.text().contains("\"path\":\"/anything\""),
        "echo answered: {}",
        reply.text()
    );
    let mut other = Client::tls(gateway.https(), certs.client_config(&[b"h2"])).await;
    assert_eq!(other.get("/anything").await.status, StatusCode::NOT_FOUND);
    assert_eq!(other.get("/hello").await.status, StatusCode::OK);
}

#[tokio::test]
async fn the_plain_listener_redirects_with_308_and_tls_responses_carry_hsts() {
    let (gateway, certs) = start();
    let mut plain = Client::http1(gateway.http())
        .await
        .with_authority("www.example.test");
    for method in ["GET", "POST"] {
        let request = plain
            .request(method, "/hello/there?a=1&b=2")
            .body(wasmgate_tests::client::empty())
            .expect("request");
        let reply = plain.send(request).await.expect("response");
        assert_eq!(reply.status, StatusCode::PERMANENT_REDIRECT);
        assert_eq!(
            reply.headers[header::LOCATION],
            "https://www.example.test:8443/hello/there?a=1&b=2"
        );
        assert!(
            !reply
                .headers
                .contains_key(header::STRICT_TRANSPORT_SECURITY)
        );
    }
    let mut tls = Client::tls(gateway.https(), certs.client_config(&[b"h2"])).await;
    let reply = tls.get("/hello").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.headers[header::STRICT_TRANSPORT_SECURITY],
        "max-age=31536000; includeSubDomains"
    );
}

#[tokio::test]
async fn replaced_certificates_serve_new_handshakes_and_a_bad_pair_keeps_the_old() {
    let (gateway, certs) = start();
    let https = gateway.https();
    let dir = gateway.dir().to_path_buf();
    let first = leaf_of(&dir.join("api-cert.pem"));
    let mut open = Client::tls(https, certs.client_config(&[b"h2"])).await;
    assert_eq!(open.get("/hello").await.status, StatusCode::OK);

    // Renewal the way tools do it: new files renamed over the old ones.
    let (cert, key) = certs.issue("renewed-", &["api.example.test"]);
    std::fs::rename(&key, dir.join("api-key.pem")).expect("rename key");
    std::fs::rename(&cert, dir.join("api-cert.pem")).expect("rename cert");
    // The two renames may land in two reloads; the first can see a new key
    // with the old certificate (and keep the old pair). Within two
    // generations the new pair serves.
    let renewed = leaf_of(&dir.join("api-cert.pem"));
    let mut generation = 1;
    let second = loop {
        generation += 1;
        gateway.wait_for_generation(generation);
        let served = certs
            .served_leaf(https, "api.example.test")
            .await
            .expect("handshake after the renewal");
        if served == renewed || generation == 3 {
            break served;
        }
    };
    assert_ne!(second, first);
    assert_eq!(second, leaf_of(&dir.join("api-cert.pem")));
    assert_eq!(
        open.get("/hello").await.status,
        StatusCode::OK,
        "a connection opened before the renewal carries on"
    );

    // A key that does not match its certificate: the renewed pair stays.
    let (_, stray_key) = certs.issue("stray-", &["api.example.test"]);
    std::fs::rename(&stray_key, dir.join("api-key.pem")).expect("rename key");
    gateway.wait_for_generation(generation + 1);
    let log = gateway.wait_for_log("listener[1].tls.sni[0].key");
    assert!(
        log.contains("the previous certificate stays in use"),
        "{log}"
    );
    assert_eq!(
        certs
            .served_leaf(https, "api.example.test")
            .await
            .expect("handshake with the kept pair"),
        second
    );
}

#[test]
fn edge_settings_are_checked_before_anything_binds() {
    let dir = tempfile::tempdir().expect("temp dir");
    let certs = TestCerts::generate(dir.path());
    certs.issue("api-", &["api.example.test"]);
    let config = format!(
        r#"[[listener]]
addr = "127.0.0.1:0"
hsts = {{ max_age = "1d" }}
redirect_port = 8443
trusted_proxies = ["10.0.0.0/8", "10.0.0.0/99"]

[[listener]]
addr = "127.0.0.1:0"
redirect = "https"
tls = {{ cert = "{cert}", key = "{key}", sni = [
  {{ names = ["www.example.test", "*.com"], cert = "api-cert.pem", key = "api-key.pem" }},
] }}

[[listener]]
addr = "127.0.0.1:0"
tls = {{ acme = ["*.example.test"] }}

[acme]
directory_ca = "pebble-ca.pem"
challenge = "dns-01"
"#,
        cert = certs.cert.display(),
        key = certs.key.display(),
    );
    let path = dir.path().join("gw.toml");
    std::fs::write(&path, config).expect("write config");
    let output = wasmgate_tests::run_cli(&["check", "--config", "gw.toml"], dir.path());
    let stderr =
        String::from_utf8_lossy(&output.stderr).replace(&dir.path().display().to_string(), "{dir}");
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    for expected in [
        "listener[0].hsts: HSTS is only honoured over HTTPS",
        "listener[0].redirect_port: only means something with redirect = \"https\"",
        "listener[0].trusted_proxies[1]: `10.0.0.0/99` is not an address or block",
        "listener[1].redirect: a TLS listener cannot redirect to HTTPS",
        "listener[1].tls.sni[0].names[1]: `*.com` is too wide",
        "listener[1].tls.sni[0].names[0]: api-cert.pem does not cover www.example.test",
        "listener[2].tls.acme[0]: `*.example.test`: a wildcard certificate needs the dns-01 challenge",
        "acme.challenge: `dns-01` is not a challenge wasmgate answers",
        "acme.directory_ca: cannot read certificates from pebble-ca.pem: ",
    ] {
        assert!(
            stderr.contains(expected),
            "expected {expected:?} in:\n{stderr}"
        );
    }
}

/// `config/deploy/wasmgate.toml` is valid as shipped: with its certificate,
/// component and runtime paths pointed at real files, `wasmgate check`
/// passes (ports 80/443 are not bound, and the CA is not contacted, by a check).
#[test]
fn the_production_config_checks() {
    let shipped = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/deploy/wasmgate.toml"),
    )
    .expect("the production config");
    let dir = tempfile::tempdir().expect("temp dir");
    let certs = TestCerts::generate(dir.path());
    let (apps_cert, apps_key) = certs.issue("apps-", &["*.apps.example.com"]);
    let handlers = dir.path().join("handlers");
    std::fs::create_dir(&handlers).expect("handlers dir");
    for name in ["site", "tenant"] {
        std::fs::copy(
            wasmgate_tests::handlers_dir().join("hello.wasm"),
            handlers.join(format!("{name}.wasm")),
        )
        .expect("install a component");
    }
    let show = |path: &std::path::Path| path.display().to_string();
    let config = [
        ("/var/lib/wasmgate/handlers", show(&handlers)),
        (
            "/run/wasmgate/handover.sock",
            show(&dir.path().join("h.sock")),
        ),
        ("/var/lib/wasmgate/acme", show(&dir.path().join("acme"))),
        ("/etc/wasmgate/tls/apps.pem", show(&apps_cert)),
        ("/etc/wasmgate/tls/apps.key", show(&apps_key)),
    ]
    .iter()
    .fold(shipped, |text, (from, to)| {
        assert!(text.contains(from), "{from} is in the shipped config");
        text.replace(from, to)
    });
    std::fs::write(dir.path().join("wasmgate.toml"), config).expect("write config");
    let output = wasmgate_tests::run_cli(&["check", "--config", "wasmgate.toml"], dir.path());
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
