//! TLS termination: rustls server configurations from PEM files, and the
//! handshake of one connection.
//!
//! Invariant: a listener's configuration is built whole or not at all (every
//! pair loads and covers its names), so a bad file never half-applies. The
//! handshake runs in the connection's own task under a
//! timeout, never in the accept loop, so a slow or silent client delays only
//! itself. ALPN offers `h2` first, then `http/1.1` (and `acme-tls/1` on a
//! listener with ACME names, for TLS-ALPN-01 validation only).

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
use crate::edge::acme::AcmeState;

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

/// The ALPN protocol of RFC 8737 (TLS-ALPN-01): its handshakes get the
/// challenge certificate and no HTTP.
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// Loads `files` into a server configuration (TLS 1.2 and 1.3) that picks
/// the certificate by the client's server name: an exact name first, then a
/// name's ACME certificate, then a wildcard one label up, then the default
/// pair (or, without one, the first ACME name's certificate).
pub fn server_config(
    files: &TlsFiles,
    acme: &Arc<AcmeState>,
) -> Result<Arc<ServerConfig>, Vec<TlsProblem>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut problems = Vec::new();
    let default = files
        .default
        .as_ref()
        .and_then(|pair| certified_key(&pair.cert, &pair.key, "", &provider, &mut problems));
    let mut resolver = SniResolver {
        default: default.map(Arc::new),
        exact: HashMap::new(),
        wildcard: HashMap::new(),
        acme_names: files.acme.clone(),
        acme: Arc::clone(acme),
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
    if !files.acme.is_empty() {
        config.alpn_protocols.push(ACME_TLS_ALPN.to_vec());
    }
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
    /// This listener's ACME names, in config order.
    acme_names: Vec<String>,
    acme: Arc<AcmeState>,
}

impl SniResolver {
    fn acme_certificate(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        if self.acme_names.iter().any(|listed| listed == name) {
            self.acme.certificate(name)
        } else {
            None
        }
    }

    /// The default pair, else the first ACME name that has a certificate.
    fn fallback(&self) -> Option<Arc<CertifiedKey>> {
        self.default.clone().or_else(|| {
            self.acme_names
                .iter()
                .find_map(|name| self.acme.certificate(name))
        })
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name().map(str::to_ascii_lowercase);
        let validating = hello
            .alpn()
            .is_some_and(|mut offered| offered.any(|protocol| protocol == ACME_TLS_ALPN));
        if validating {
            // Only the challenge certificate may answer a validation
            // handshake; without one in flight the handshake fails.
            return self.acme.challenge_certificate(name.as_deref()?);
        }
        let Some(name) = name else {
            return self.fallback();
        };
        self.exact
            .get(&name)
            .cloned()
            .or_else(|| self.acme_certificate(&name))
            .or_else(|| {
                let (_, parent) = name.split_once('.')?;
                self.wildcard.get(parent).cloned()
            })
            .or_else(|| self.fallback())
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
