//! Let's Encrypt's ACME test server, Debian's `pebble`, with its companion
//! `pebble-challtestsrv` as the only DNS server it asks: every name resolves
//! to 127.0.0.1 (unless a test says otherwise), so validation reaches the
//! gateway under test and no name leaves the machine.
//!
//! Pebble cannot report a port it picked itself, so its ports are taken free
//! just before it starts; the ports it validates against (the gateway's) are
//! the gateway's real, already bound ones.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;

use crate::certs::TestCerts;
use crate::client::Client;
use crate::free_port;

/// A running pebble and its DNS server; both stop when this is dropped.
pub struct Pebble {
    pebble: Child,
    dns: Child,
    management: SocketAddr,
    dns_management: SocketAddr,
    certs: Arc<TestCerts>,
    _dir: tempfile::TempDir,
}

/// Where pebble will listen, known before the gateway's config is written.
pub struct PebbleAddrs {
    /// The ACME API.
    pub api: SocketAddr,
    management: SocketAddr,
}

impl PebbleAddrs {
    /// Free ports for pebble's API and management interface.
    pub fn pick() -> Self {
        Self {
            api: SocketAddr::from(([127, 0, 0, 1], free_port())),
            management: SocketAddr::from(([127, 0, 0, 1], free_port())),
        }
    }

    /// The directory URL for `[acme] directory`.
    pub fn directory(&self) -> String {
        format!("https://{}/dir", self.api)
    }
}

fn binary(name: &str, variable: &str) -> PathBuf {
    std::env::var_os(variable)
        .map(PathBuf::from)
        .or_else(|| Some(Path::new("/usr/bin").join(name)).filter(|path| path.exists()))
        .unwrap_or_else(|| panic!("{name} is installed (scripts/test.sh installs Debian's pebble)"))
}

impl Pebble {
    /// Starts pebble on `addrs`, serving its API with a certificate from
    /// `certs` (whose CA the gateway trusts through `directory_ca`), and
    /// validating names on `http_port` (HTTP-01) and `tls_port` (TLS-ALPN-01).
    pub async fn start(
        addrs: PebbleAddrs,
        certs: Arc<TestCerts>,
        http_port: u16,
        tls_port: u16,
    ) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let dns = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let dns_management = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let config = serde_json::json!({
            "pebble": {
                "listenAddress": addrs.api.to_string(),
                "managementListenAddress": addrs.management.to_string(),
                "certificate": certs.cert,
                "privateKey": certs.key,
                "httpPort": http_port,
                "tlsPort": tls_port,
            }
        });
        let path = dir.path().join("pebble.json");
        std::fs::write(&path, config.to_string()).expect("write pebble.json");
        let log = |name: &str| std::fs::File::create(dir.path().join(name)).expect("log file");
        let dns_server = Command::new(binary("pebble-challtestsrv", "WASMGATE_CHALLTESTSRV"))
            .args([
                "-dns01",
                &dns.to_string(),
                "-management",
                &dns_management.to_string(),
            ])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .stdout(log("challtestsrv.log"))
            .stderr(Stdio::null())
            .spawn()
            .expect("pebble-challtestsrv starts");
        let pebble = Command::new(binary("pebble", "WASMGATE_PEBBLE"))
            .arg("-config")
            .arg(&path)
            .args(["-dnsserver", &dns.to_string()])
            // Validate at once, and never refuse a good nonce: the tests
            // are about the gateway, not about pebble's chaos settings.
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .stdout(log("pebble.log"))
            .stderr(Stdio::null())
            .spawn()
            .expect("pebble starts");
        let pebble = Self {
            pebble,
            dns: dns_server,
            management: addrs.management,
            dns_management,
            certs,
            _dir: dir,
        };
        pebble.wait_ready(addrs.api).await;
        pebble
    }

    /// Pebble logs "listening" before it binds; ready is when the directory
    /// and the DNS server's management interface answer.
    async fn wait_ready(&self, api: SocketAddr) {
        let deadline = Instant::now() + Duration::from_secs(20);
        for addr in [api, self.management, self.dns_management] {
            while tokio::net::TcpStream::connect(addr).await.is_err() {
                assert!(Instant::now() < deadline, "pebble did not listen on {addr}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    /// A client configuration trusting only pebble's (random) root, which
    /// signs every certificate it issues.
    pub async fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut management =
            Client::tls(self.management, self.certs.client_config(&[b"http/1.1"])).await;
        let reply = management.get("/roots/0").await;
        assert!(reply.status.is_success(), "pebble's root: {}", reply.status);
        let root = CertificateDer::from_pem_slice(&reply.body).expect("a PEM root");
        let mut roots = RootCertStore::empty();
        roots.add(root).expect("a valid anchor");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("default versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }

    /// Makes `host` resolve to `ip` (instead of 127.0.0.1) for pebble.
    pub async fn resolve(&self, host: &str, ip: &str) {
        let mut dns = Client::http1(self.dns_management).await;
        let body = serde_json::json!({ "host": format!("{host}."), "addresses": [ip] });
        let request = dns
            .request("POST", "/add-a")
            .body(crate::client::full(body.to_string()))
            .expect("request");
        let reply = dns.send(request).await.expect("challtestsrv answers");
        assert!(reply.status.is_success(), "add-a: {}", reply.status);
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for child in [&mut self.pebble, &mut self.dns] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
