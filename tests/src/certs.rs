//! A throw-away CA and a localhost certificate it signed, for TLS tests.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::RootCertStore;

/// Files for a TLS listener, and the CA a client must trust.
pub struct TestCerts {
    /// The leaf certificate (PEM file).
    pub cert: PathBuf,
    /// Its private key (PEM file).
    pub key: PathBuf,
    /// The CA certificate (PEM file), for curl's `--cacert`.
    pub ca: PathBuf,
    roots: Arc<RootCertStore>,
    issuer: CertifiedIssuer<'static, KeyPair>,
    dir: PathBuf,
}

impl TestCerts {
    /// Makes a CA and a certificate for localhost/127.0.0.1 in `dir`.
    pub fn generate(dir: &Path) -> Self {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("empty SAN list");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_key = KeyPair::generate().expect("key generation");
        let ca = CertifiedIssuer::self_signed(ca_params, ca_key).expect("self-signed CA");
        let ca_path = dir.join("ca.pem");
        std::fs::write(&ca_path, ca.pem()).expect("write CA");
        let mut certs = Self {
            cert: PathBuf::new(),
            key: PathBuf::new(),
            ca: ca_path,
            roots: Arc::new({
                let mut roots = RootCertStore::empty();
                roots.add(ca.der().clone()).expect("CA is a valid anchor");
                roots
            }),
            issuer: ca,
            dir: dir.to_path_buf(),
        };
        (certs.cert, certs.key) = certs.issue("", &["localhost", "127.0.0.1"]);
        certs
    }

    /// Signs a new certificate for `names` with a new key, written to
    /// `{stem}cert.pem` and `{stem}key.pem`; returns their paths.
    pub fn issue(&self, stem: &str, names: &[&str]) -> (PathBuf, PathBuf) {
        let names: Vec<String> = names.iter().map(|name| name.to_string()).collect();
        let params = CertificateParams::new(names).expect("valid names");
        let key = KeyPair::generate().expect("key generation");
        let leaf = params.signed_by(&key, &self.issuer).expect("signed leaf");
        let (cert_path, key_path) = (
            self.dir.join(format!("{stem}cert.pem")),
            self.dir.join(format!("{stem}key.pem")),
        );
        std::fs::write(&cert_path, leaf.pem()).expect("write cert");
        std::fs::write(&key_path, key.serialize_pem()).expect("write key");
        (cert_path, key_path)
    }

    /// The leaf certificate the server at `addr` presents for `server_name`
    /// (an IP address sends no SNI), verified against the CA.
    pub async fn served_leaf(
        &self,
        addr: std::net::SocketAddr,
        server_name: &str,
    ) -> std::io::Result<rustls::pki_types::CertificateDer<'static>> {
        served_leaf_with(addr, server_name, self.client_config(&[b"http/1.1"])).await
    }

    /// Signs a certificate for `names` valid from `not_before` to
    /// `not_after`; returns its key and chain in one PEM (key first).
    pub fn issue_pem(
        &self,
        names: &[&str],
        not_before: std::time::SystemTime,
        not_after: std::time::SystemTime,
    ) -> String {
        let names: Vec<String> = names.iter().map(|name| name.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("valid names");
        params.not_before = not_before.into();
        params.not_after = not_after.into();
        let key = KeyPair::generate().expect("key generation");
        let leaf = params.signed_by(&key, &self.issuer).expect("signed leaf");
        format!("{}{}", key.serialize_pem(), leaf.pem())
    }
}

/// The leaf certificate the server at `addr` presents for `server_name`,
/// verified with `config`.
pub async fn served_leaf_with(
    addr: std::net::SocketAddr,
    server_name: &str,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<rustls::pki_types::CertificateDer<'static>> {
    let name = rustls::pki_types::ServerName::try_from(server_name.to_string())
        .expect("a valid server name");
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await?;
    let (_, session) = tls.get_ref();
    session
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|leaf| leaf.clone().into_owned())
        .ok_or_else(|| std::io::Error::other("no certificate"))
}

/// The DER of the first certificate in a PEM file.
pub fn leaf_of(path: &Path) -> rustls::pki_types::CertificateDer<'static> {
    use rustls::pki_types::pem::PemObject as _;
    rustls::pki_types::CertificateDer::from_pem_file(path).expect("a PEM certificate")
}

impl TestCerts {
    /// A client configuration trusting the CA and offering `alpn`.
    pub fn client_config(&self, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("default versions")
            .with_root_certificates(Arc::clone(&self.roots))
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
        Arc::new(config)
    }
}
