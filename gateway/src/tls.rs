//! TLS termination: rustls server configurations from PEM files, and the
//! handshake of one connection.
//!
//! Invariant: a listener's configuration is built whole or not at all (every
//! pair loads and covers its names), so a bad file never half-applies. The
//! handshake runs in the connection's own task under a
//! timeout, never in the accept loop, so a slow or silent client delays only
//! itself. ALPN offers `h2` first, then `http/1.1`.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use std::collections::HashMap;
use std::path::Path;

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ParsedCertificate, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::config::TlsFiles;

/// Why a certificate/key pair cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsProblem {
    /// The key under the listener's `tls` at fault: `cert`, `key`,
    /// `sni[1].cert`, `sni[0].names[2]`...
    pub key: String,
    /// What is wrong with it.
    pub reason: String,
}

/// Protocols offered through ALPN, most preferred first.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Loads `files` into a server configuration (TLS 1.2 and 1.3) that picks
/// the certificate by the client's server name: an exact name first, then a
/// wildcard one label up, then the default pair.
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, Vec<TlsProblem>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut problems = Vec::new();
    let default = certified_key(&files.cert, &files.key, "", &provider, &mut problems);
    let mut resolver = SniResolver {
        default: default.map(Arc::new),
        exact: HashMap::new(),
        wildcard: HashMap::new(),
    };
    for (position, site) in files.sni.iter().enumerate() {
        let prefix = format!("sni[{position}].");
        let Some(key) = certified_key(&site.cert, &site.key, &prefix, &provider, &mut problems)
        else {
            continue;
        };
        let key = Arc::new(key);
        for (number, name) in site.names.iter().enumerate() {
            if let Err(reason) = covers(&key, name) {
                problems.push(TlsProblem {
                    key: format!("{prefix}names[{number}]"),
                    reason: format!("{} {reason}", site.cert.display()),
                });
            }
            match name.strip_prefix("*.") {
                Some(parent) => resolver
                    .wildcard
                    .insert(parent.to_string(), Arc::clone(&key)),
                None => resolver.exact.insert(name.clone(), Arc::clone(&key)),
            };
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|error| {
            vec![TlsProblem {
                key: "cert".into(),
                reason: format!("no usable TLS version: {error}"),
            }]
        })?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = ALPN.iter().map(|protocol| protocol.to_vec()).collect();
    Ok(Arc::new(config))
}

/// Reads a certificate chain and its private key and checks they belong
/// together; problems are keyed `{prefix}cert` / `{prefix}key`.
fn certified_key(
    cert: &Path,
    key: &Path,
    prefix: &str,
    provider: &CryptoProvider,
    problems: &mut Vec<TlsProblem>,
) -> Option<CertifiedKey> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|error| format!("cannot load a certificate from {}: {error}", cert.display()))
        .and_then(|certs| {
            if certs.is_empty() {
                Err(format!("{} holds no PEM certificate", cert.display()))
            } else {
                Ok(certs)
            }
        });
    let private = PrivateKeyDer::from_pem_file(key)
        .map_err(|error| format!("cannot load a private key from {}: {error}", key.display()));
    let (chain, private) = match (chain, private) {
        (Ok(chain), Ok(private)) => (chain, private),
        (chain, private) => {
            for (file, result) in [("cert", chain.err()), ("key", private.err())] {
                if let Some(reason) = result {
                    problems.push(TlsProblem {
                        key: format!("{prefix}{file}"),
                        reason,
                    });
                }
            }
            return None;
        }
    };
    CertifiedKey::from_der(chain, private, provider)
        .inspect_err(|error| {
            problems.push(TlsProblem {
                key: format!("{prefix}key"),
                reason: format!(
                    "{} and {} do not form a usable pair: {error}",
                    cert.display(),
                    key.display()
                ),
            });
        })
        .ok()
}

/// Whether `key`'s certificate is valid for `name` (a wildcard name is tried
/// with a label in front), so a mistyped name fails at load, not in browsers.
fn covers(key: &CertifiedKey, name: &str) -> Result<(), String> {
    let probe = match name.strip_prefix("*.") {
        Some(parent) => format!("wasmgate-sni-probe.{parent}"),
        None => name.to_string(),
    };
    let server_name = ServerName::try_from(probe).map_err(|error| format!("{name}: {error}"))?;
    key.end_entity_cert()
        .and_then(ParsedCertificate::try_from)
        .and_then(|cert| rustls::client::verify_server_name(&cert, &server_name))
        .map_err(|error| format!("does not cover {name}: {error}"))
}

/// Picks a certificate by the server name of the ClientHello.
#[derive(Debug)]
struct SniResolver {
    default: Option<Arc<CertifiedKey>>,
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// By the parent domain: `example.com` for `*.example.com`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = hello.server_name() else {
            return self.default.clone();
        };
        let name = name.to_ascii_lowercase();
        self.exact
            .get(&name)
            .or_else(|| {
                let (_, parent) = name.split_once('.')?;
                self.wildcard.get(parent)
            })
            .or(self.default.as_ref())
            .cloned()
    }
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
