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
}

impl TestCerts {
    /// Makes a CA and a certificate for localhost/127.0.0.1 in `dir`.
    pub fn generate(dir: &Path) -> Self {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("empty SAN list");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_key = KeyPair::generate().expect("key generation");
        let ca = CertifiedIssuer::self_signed(ca_params, ca_key).expect("self-signed CA");
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let leaf_params = CertificateParams::new(names).expect("valid names");
        let leaf_key = KeyPair::generate().expect("key generation");
        let leaf = leaf_params.signed_by(&leaf_key, &ca).expect("signed leaf");
        let certs = Self {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            ca: dir.join("ca.pem"),
            roots: Arc::new({
                let mut roots = RootCertStore::empty();
                roots.add(ca.der().clone()).expect("CA is a valid anchor");
                roots
            }),
        };
        std::fs::write(&certs.cert, leaf.pem()).expect("write cert");
        std::fs::write(&certs.key, leaf_key.serialize_pem()).expect("write key");
        std::fs::write(&certs.ca, ca.pem()).expect("write CA");
        certs
    }

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
