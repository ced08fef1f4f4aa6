//! Checks of the certificate settings: a listener's `tls` table and the
//! `[acme]` section that obtains certificates for its `acme` names.
//!
//! Invariant: every TLS listener ends up with something to serve (a default
//! pair or at least one ACME name), and no server name is claimed twice on a
//! listener.

use std::collections::HashSet;
use std::path::PathBuf;

use super::{Checker, check_host, check_server_name, raw};
use crate::config::{
    AcmeChallenge, AcmeSettings, CertPair, LETS_ENCRYPT, ListenerConfig, SniCert, TlsFiles,
};

impl Checker<'_> {
    pub(super) fn tls(&mut self, index: usize, raw: raw::RawTls) -> TlsFiles {
        let key = |name: &str| format!("listener[{index}].tls.{name}");
        let mut seen = HashSet::new();
        let sni = raw
            .sni
            .into_iter()
            .enumerate()
            .map(|(position, site)| {
                let names = site
                    .names
                    .iter()
                    .enumerate()
                    .filter_map(|(number, name)| {
                        let key = key(&format!("sni[{position}].names[{number}]"));
                        self.claim(&mut seen, key, check_server_name(name))
                    })
                    .collect::<Vec<_>>();
                if site.names.is_empty() {
                    self.problems.push(
                        key(&format!("sni[{position}].names")),
                        "list the server names this certificate serves",
                    );
                }
                SniCert {
                    names,
                    cert: self.resolve(site.cert),
                    key: self.resolve(site.key),
                }
            })
            .collect();
        let acme = raw
            .acme
            .iter()
            .enumerate()
            .filter_map(|(number, name)| {
                self.claim(&mut seen, key(&format!("acme[{number}]")), acme_name(name))
            })
            .collect::<Vec<_>>();
        let default = match (raw.cert, raw.key) {
            (Some(cert), Some(key)) => Some(CertPair {
                cert: self.resolve(cert),
                key: self.resolve(key),
            }),
            (Some(_), None) => {
                self.problems
                    .push(key("key"), "the certificate needs its private key");
                None
            }
            (None, Some(_)) => {
                self.problems
                    .push(key("cert"), "the private key needs its certificate");
                None
            }
            (None, None) => {
                if raw.acme.is_empty() {
                    self.problems.push(
                        format!("listener[{index}].tls"),
                        "give a certificate (cert and key) or names to obtain one for (acme = [\"example.com\"])",
                    );
                }
                None
            }
        };
        TlsFiles { default, sni, acme }
    }

    /// Records `name` as served by this listener, refusing it if another
    /// entry already serves it.
    fn claim(
        &mut self,
        seen: &mut HashSet<String>,
        key: String,
        checked: Result<String, String>,
    ) -> Option<String> {
        match checked {
            Err(reason) => {
                self.problems.push(key, reason);
                None
            }
            Ok(name) if !seen.insert(name.clone()) => {
                self.problems.push(
                    key,
                    format!("`{name}` is already served by another entry of this listener"),
                );
                None
            }
            Ok(name) => Some(name),
        }
    }

    pub(super) fn acme(&mut self, raw: raw::RawAcme, listeners: &[ListenerConfig]) -> AcmeSettings {
        let directory = raw.directory.unwrap_or_else(|| LETS_ENCRYPT.to_string());
        match directory.parse::<http::Uri>() {
            Ok(uri) if uri.scheme() == Some(&http::uri::Scheme::HTTPS) && uri.host().is_some() => {}
            _ => self.problems.push(
                "acme.directory",
                format!("`{directory}` is not an https:// URL of an ACME directory"),
            ),
        }
        let contact = match raw.email {
            Some(email) if email.contains('@') && !email.contains(char::is_whitespace) => {
                vec![format!("mailto:{email}")]
            }
            Some(email) => {
                self.problems
                    .push("acme.email", format!("`{email}` is not an email address"));
                Vec::new()
            }
            None => Vec::new(),
        };
        let challenge = match raw.challenge.as_deref() {
            None | Some("tls-alpn-01") => AcmeChallenge::TlsAlpn01,
            Some("http-01") => AcmeChallenge::Http01,
            Some(other) => {
                self.problems.push(
                    "acme.challenge",
                    format!("`{other}` is not a challenge wasmgate answers; use \"tls-alpn-01\" or \"http-01\""),
                );
                AcmeChallenge::TlsAlpn01
            }
        };
        if challenge == AcmeChallenge::Http01 && listeners.iter().all(|l| l.tls.is_some()) {
            self.problems.push(
                "acme.challenge",
                "http-01 is answered on a plain listener (port 80); add one, or use \"tls-alpn-01\"",
            );
        }
        let renew_before = raw
            .renew_before
            .map(|text| self.duration("acme.renew_before", Some(text), std::time::Duration::ZERO));
        AcmeSettings {
            directory,
            contact,
            storage: self.resolve(raw.storage.unwrap_or_else(|| PathBuf::from("acme"))),
            challenge,
            renew_before,
            directory_ca: raw.directory_ca.map(|path| self.resolve(path)),
        }
    }
}

/// A name a public CA can issue for through the challenges wasmgate answers.
fn acme_name(name: &str) -> Result<String, String> {
    if name.starts_with("*.") {
        return Err(format!(
            "`{name}`: a wildcard certificate needs the dns-01 challenge, which wasmgate does not answer; list the names, or give a certificate with sni"
        ));
    }
    if name.parse::<std::net::IpAddr>().is_ok() {
        return Err(format!(
            "`{name}`: certificates are obtained for DNS names, not addresses"
        ));
    }
    check_host(name)
}
