//! TLS termination: rustls server configurations from PEM files, and the
//! handshake of one connection.
//!
//! Invariant: the handshake runs in the connection's own task under a
//! timeout, never in the accept loop, so a slow or silent client delays only
//! itself. ALPN offers `h2` first, then `http/1.1`.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::config::TlsFiles;

/// Which of the two files a problem is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFile {
    /// The certificate chain.
    Cert,
    /// The private key.
    Key,
}

/// Why a certificate/key pair cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsProblem {
    /// The file at fault.
    pub file: TlsFile,
    /// What is wrong with it.
    pub reason: String,
}

/// Protocols offered through ALPN, most preferred first.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Loads `files` into a server configuration (TLS 1.2 and 1.3).
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, Vec<TlsProblem>> {
    let mut problems = Vec::new();
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|error| {
            format!(
                "cannot load a certificate from {}: {error}",
                files.cert.display()
            )
        })
        .and_then(|certs| {
            if certs.is_empty() {
                Err(format!("{} holds no PEM certificate", files.cert.display()))
            } else {
                Ok(certs)
            }
        });
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|error| {
        format!(
            "cannot load a private key from {}: {error}",
            files.key.display()
        )
    });
    let (certs, key) = match (certs, key) {
        (Ok(certs), Ok(key)) => (certs, key),
        (certs, key) => {
            if let Err(reason) = certs {
                problems.push(TlsProblem {
                    file: TlsFile::Cert,
                    reason,
                });
            }
            if let Err(reason) = key {
                problems.push(TlsProblem {
                    file: TlsFile::Key,
                    reason,
                });
            }
            return Err(problems);
        }
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .and_then(|builder| builder.with_no_client_auth().with_single_cert(certs, key))
        .map_err(|error| {
            vec![TlsProblem {
                file: TlsFile::Key,
                reason: format!(
                    "{} and {} do not form a usable pair: {error}",
                    files.cert.display(),
                    files.key.display()
                ),
            }]
        })?;
    config.alpn_protocols = ALPN.iter().map(|protocol| protocol.to_vec()).collect();
    Ok(Arc::new(config))
}

/// Completes the server side of a TLS handshake within `timeout`.
pub async fn handshake(
    config: Arc<ServerConfig>,
    stream: TcpStream,
    timeout: Duration,
) -> io::Result<TlsStream<TcpStream>> {
    match tokio::time::timeout(timeout, TlsAcceptor::from(config).accept(stream)).await {
        Ok(result) => result,
        Err(_elapsed) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "TLS handshake timed out",
        )),
    }
}
