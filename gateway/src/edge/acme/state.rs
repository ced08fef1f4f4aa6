//! What the ACME manager shares with the serving path: the certificates it
//! obtained (read by the TLS resolver on every handshake) and the answers to
//! the challenges in flight (read by the TLS resolver for `acme-tls/1`
//! handshakes and by the HTTP service for `/.well-known/acme-challenge/`).
//!
//! Invariant: the locks here are held for a map operation only, never
//! across an await or I/O, so a handshake never waits on an ACME order.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use tokio::sync::Notify;

/// A certificate obtained through ACME, ready to serve.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The chain and its key.
    pub key: Arc<CertifiedKey>,
    /// The leaf's validity.
    pub not_before: SystemTime,
    /// The leaf's expiry.
    pub not_after: SystemTime,
}

impl Issued {
    /// Parses a PEM holding a private key and a chain (leaf first).
    pub fn from_pem(pem: &[u8]) -> Result<Self, String> {
        let chain = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| format!("unreadable certificate: {error}"))?;
        let private = PrivateKeyDer::from_pem_slice(pem)
            .map_err(|error| format!("unreadable private key: {error}"))?;
        let leaf = chain.first().ok_or("no certificate in the file")?;
        let (_, parsed) = x509_parser::parse_x509_certificate(leaf)
            .map_err(|error| format!("unreadable certificate: {error}"))?;
        let time = |timestamp: i64| {
            UNIX_EPOCH + Duration::from_secs(u64::try_from(timestamp).unwrap_or_default())
        };
        let validity = parsed.validity();
        let (not_before, not_after) = (
            time(validity.not_before.timestamp()),
            time(validity.not_after.timestamp()),
        );
        let provider = rustls::crypto::ring::default_provider();
        let key = CertifiedKey::from_der(chain, private, &provider)
            .map_err(|error| format!("the key does not match the certificate: {error}"))?;
        Ok(Self {
            key: Arc::new(key),
            not_before,
            not_after,
        })
    }

    /// When to renew: `before` expiry, or with a third of the lifetime left.
    pub fn renew_at(&self, before: Option<Duration>) -> SystemTime {
        renewal_time(self.not_before, self.not_after, before)
    }
}

/// A `before` as long as the lifetime (`renew_before = "90d"` with 90-day
/// certificates) would make every new certificate due at once and the
/// manager order without pause; such a certificate renews at a third left.
fn renewal_time(
    not_before: SystemTime,
    not_after: SystemTime,
    before: Option<Duration>,
) -> SystemTime {
    let lifetime = not_after.duration_since(not_before).unwrap_or_default();
    let before = before
        .filter(|before| *before < lifetime)
        .unwrap_or(lifetime / 3);
    not_after.checked_sub(before).unwrap_or(not_before)
}

/// The ACME state shared by the manager, the TLS resolver and the HTTP service.
#[derive(Debug, Default)]
pub struct AcmeState {
    served: RwLock<HashMap<String, Issued>>,
    /// TLS-ALPN-01 certificates by domain.
    alpn: Mutex<HashMap<String, Arc<CertifiedKey>>>,
    /// HTTP-01 key authorizations by token.
    tokens: Mutex<HashMap<String, String>>,
    /// Wakes the manager: the configuration changed, or an operator asked
    /// for a retry.
    pub(super) wake: Notify,
}

impl AcmeState {
    /// The certificate obtained for `domain`, if any.
    pub fn certificate(&self, domain: &str) -> Option<Arc<CertifiedKey>> {
        let served = self.served.read().unwrap_or_else(PoisonError::into_inner);
        served.get(domain).map(|issued| Arc::clone(&issued.key))
    }

    /// The certificate answering a TLS-ALPN-01 challenge for `domain`.
    pub fn challenge_certificate(&self, domain: &str) -> Option<Arc<CertifiedKey>> {
        let alpn = self.alpn.lock().unwrap_or_else(PoisonError::into_inner);
        alpn.get(domain).cloned()
    }

    /// The key authorization answering the HTTP-01 challenge `token`.
    pub fn http_answer(&self, token: &str) -> Option<String> {
        let tokens = self.tokens.lock().unwrap_or_else(PoisonError::into_inner);
        tokens.get(token).cloned()
    }

    /// Asks the manager to look at every domain now: after a reload, and to
    /// retry failed orders without waiting out their back-off.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    pub(super) fn issued(&self, domain: &str) -> Option<Issued> {
        let served = self.served.read().unwrap_or_else(PoisonError::into_inner);
        served.get(domain).cloned()
    }

    pub(super) fn serve(&self, domain: &str, issued: Issued) {
        let mut served = self.served.write().unwrap_or_else(PoisonError::into_inner);
        served.insert(domain.to_string(), issued);
    }

    pub(super) fn answer_alpn(&self, domain: &str, key: Option<Arc<CertifiedKey>>) {
        let mut alpn = self.alpn.lock().unwrap_or_else(PoisonError::into_inner);
        match key {
            Some(key) => alpn.insert(domain.to_string(), key),
            None => alpn.remove(domain),
        };
    }

    pub(super) fn answer_http(&self, token: &str, answer: Option<String>) {
        let mut tokens = self.tokens.lock().unwrap_or_else(PoisonError::into_inner);
        match answer {
            Some(answer) => tokens.insert(token.to_string(), answer),
            None => tokens.remove(token),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_comes_before_expiry_and_never_at_issuance() {
        let day = Duration::from_secs(86_400);
        let issued = UNIX_EPOCH + 1000 * day;
        let expires = issued + 90 * day;
        assert_eq!(renewal_time(issued, expires, None), issued + 60 * day);
        let thirty = Some(30 * day);
        assert_eq!(renewal_time(issued, expires, thirty), issued + 60 * day);
        let ten = Some(10 * day);
        assert_eq!(renewal_time(issued, expires, ten), issued + 80 * day);
        let whole = Some(90 * day);
        assert_eq!(renewal_time(issued, expires, whole), issued + 60 * day);
    }
}
