//! Automatic certificates from a real ACME server: Debian's pebble, on
//! loopback, with its own DNS server answering 127.0.0.1 for every name, so
//! it validates against the gateway under test (TLS-ALPN-01 on the TLS
//! listener, HTTP-01 on the plain one, ahead of its HTTPS redirect).
//!
//! Pebble starts after the gateway, because it must be told the gateway's
//! bound ports; the gateway's first order therefore fails (the CA is not up),
//! which is the "CA unreachable" case, and a reload retries at once.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::StatusCode;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use wasmgate_tests::TestGateway;
use wasmgate_tests::certs::{TestCerts, served_leaf_with};
use wasmgate_tests::client::{Client, empty};
use wasmgate_tests::pebble::{Pebble, PebbleAddrs};

/// A plain listener redirecting to HTTPS and a TLS listener whose only
/// certificates come from ACME.
fn config(
    addrs: &PebbleAddrs,
    ca: &Path,
    storage: &Path,
    challenge: &str,
    names: &[&str],
) -> String {
    let names = names
        .iter()
        .map(|name| format!("\"{name}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"
[gateway]
handlers_dir = "{{handlers}}"

[[listener]]
addr = "127.0.0.1:0"
redirect = "https"

[[listener]]
addr = "127.0.0.1:0"
tls = {{ acme = [{names}] }}

[acme]
directory = "{directory}"
directory_ca = "{ca}"
email = "ops@example.test"
storage = "{storage}"
challenge = "{challenge}"

[handler.hello]

[[route]]
path = "/"
handler = "hello"
"#,
        directory = addrs.directory(),
        ca = ca.display(),
        storage = storage.display(),
    )
}

/// Where the gateway keeps what it got from the CA at `addrs`.
fn ca_dir(storage: &Path, addrs: &PebbleAddrs) -> PathBuf {
    storage.join(format!("127.0.0.1_{}_dir", addrs.api.port()))
}

fn first_cert(pem: &[u8]) -> CertificateDer<'static> {
    CertificateDer::pem_slice_iter(pem)
        .next()
        .expect("a certificate")
        .expect("a PEM certificate")
}

async fn reload(gateway: &TestGateway) {
    let mut admin = Client::http1(gateway.admin()).await;
    let request = admin
        .request("POST", "/reload")
        .body(empty())
        .expect("request");
    let reply = admin.send(request).await.expect("admin answers");
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_are_obtained_with_tls_alpn_stored_and_reused_after_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let certs = Arc::new(TestCerts::generate(dir.path()));
    let storage = tempfile::tempdir().expect("storage");
    let addrs = PebbleAddrs::pick();
    let names = ["a.example.test", "broken.example.test"];
    let config = config(&addrs, &certs.ca, storage.path(), "tls-alpn-01", &names);
    let stored = ca_dir(storage.path(), &addrs);
    let mut gateway = TestGateway::start_in(dir, &config);
    let (http, https) = (gateway.http(), gateway.https());

    // The CA is not up yet: the order fails with a reason, nothing else does.
    let failed = gateway.wait_for_log("could not obtain a certificate");
    assert!(failed.contains(r#"domain="a.example.test""#), "{failed}");
    assert!(
        failed.contains(&format!("registering an account at {}", addrs.directory())),
        "{failed}"
    );
    assert!(
        failed.contains("the name has no certificate meanwhile"),
        "{failed}"
    );
    let redirect = Client::http1(http).await.get("/").await;
    assert_eq!(redirect.status, StatusCode::PERMANENT_REDIRECT);
    let without = served_leaf_with(https, "a.example.test", certs.client_config(&[])).await;
    assert!(without.is_err(), "no certificate to serve yet");

    let pebble = Pebble::start(addrs, Arc::clone(&certs), http.port(), https.port()).await;
    // Validation of this one reaches an address nothing listens on.
    pebble.resolve("broken.example.test", "127.0.0.3").await;
    let trust_pebble = pebble.client_config().await;
    reload(&gateway).await;
    gateway.wait_for_log(r#"obtained a certificate domain="a.example.test""#);
    let refused = gateway.wait_for_log("127.0.0.3");
    assert!(
        refused.contains(r#"domain="broken.example.test""#),
        "{refused}"
    );
    assert!(
        refused.contains("could not obtain a certificate"),
        "{refused}"
    );

    // Signed by pebble's root, for the name, and served with the site.
    let mut client = Client::tls_named(https, "a.example.test", Arc::clone(&trust_pebble)).await;
    let reply = client.get("/").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.text().contains("Hello"), "{}", reply.text());
    let metrics = Client::http1(gateway.admin())
        .await
        .get("/metrics")
        .await
        .text();
    for line in [
        r#"wasmgate_acme_orders_total{domain="a.example.test",outcome="issued"} 1"#,
        r#"wasmgate_acme_orders_total{domain="a.example.test",outcome="failed"} 1"#,
        r#"wasmgate_acme_orders_total{domain="broken.example.test",outcome="failed"} 2"#,
        r#"wasmgate_certificate_expiry_timestamp_seconds{domain="a.example.test"}"#,
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
    let pem_path = stored.join("a.example.test.pem");
    let mode = std::fs::metadata(&pem_path)
        .expect("stored")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the key is private");
    assert!(stored.join("account.json").exists());
    let leaf = served_leaf_with(https, "a.example.test", Arc::clone(&trust_pebble))
        .await
        .expect("served");
    assert_eq!(leaf, first_cert(&std::fs::read(&pem_path).expect("read")));

    // A restart with the CA gone: the stored certificate is served at once,
    // and neither the account nor the certificate is asked for again.
    gateway.signal("TERM");
    assert!(gateway.wait_exit(Duration::from_secs(10)).success());
    drop(pebble);
    let restarted = TestGateway::start_in(tempfile::tempdir().expect("temp dir"), &config);
    let again = served_leaf_with(restarted.https(), "a.example.test", trust_pebble)
        .await
        .expect("the stored certificate is served");
    assert_eq!(again, leaf);
    restarted.wait_for_log(r#"domain="broken.example.test""#);
    let log = restarted.log();
    assert!(!log.contains("registered an ACME account"), "{log}");
    assert!(
        !log.lines()
            .any(|line| line.contains("could not obtain") && line.contains("a.example.test")),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_due_certificate_keeps_serving_and_is_renewed_over_http01() {
    let dir = tempfile::tempdir().expect("temp dir");
    let certs = Arc::new(TestCerts::generate(dir.path()));
    let storage = tempfile::tempdir().expect("storage");
    let addrs = PebbleAddrs::pick();
    // Stored by an earlier run, with a day left of an eleven-day lifetime.
    let day = Duration::from_secs(86_400);
    let now = SystemTime::now();
    let old_pem = certs.issue_pem(&["b.example.test"], now - 10 * day, now + day);
    let stored = ca_dir(storage.path(), &addrs);
    std::fs::create_dir_all(&stored).expect("storage dir");
    std::fs::write(stored.join("b.example.test.pem"), &old_pem).expect("seed");
    let old_leaf = first_cert(old_pem.as_bytes());

    let config = config(
        &addrs,
        &certs.ca,
        storage.path(),
        "http-01",
        &["b.example.test"],
    );
    let gateway = TestGateway::start_in(dir, &config);
    let (http, https) = (gateway.http(), gateway.https());
    let served = served_leaf_with(https, "b.example.test", certs.client_config(&[]))
        .await
        .expect("the stored certificate is served at once");
    assert_eq!(served, old_leaf);
    let failed = gateway.wait_for_log("could not obtain a certificate");
    assert!(
        failed.contains("the current certificate stays in use until it expires at"),
        "{failed}"
    );

    let pebble = Pebble::start(addrs, Arc::clone(&certs), http.port(), https.port()).await;
    let trust_pebble = pebble.client_config().await;
    reload(&gateway).await;
    gateway.wait_for_log(r#"obtained a certificate domain="b.example.test""#);
    let challenge = gateway.wait_for_log("/.well-known/acme-challenge/");
    assert!(
        challenge.contains("status=200"),
        "answered, not redirected: {challenge}"
    );
    let renewed = served_leaf_with(https, "b.example.test", trust_pebble)
        .await
        .expect("the renewed certificate is served");
    assert_ne!(renewed, old_leaf);
    let on_disk = std::fs::read(stored.join("b.example.test.pem")).expect("stored");
    assert_eq!(first_cert(&on_disk), renewed);
    drop(pebble);
}
