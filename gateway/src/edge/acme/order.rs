//! One conversation with the CA: the account (loaded from the store or
//! registered), and one order for one domain, from challenge to chain.
//!
//! Invariant: a challenge answer is published only while its order is in
//! flight and withdrawn on every way out (success, failure, cancellation).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use bytes::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use instant_acme::{
    Account, AuthorizationStatus, BodyWrapper, BytesResponse, ChallengeType, HttpClient,
    Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
};
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use rustls::sign::CertifiedKey;

use super::state::AcmeState;
use super::store::Store;
use crate::config::{AcmeChallenge, AcmeSettings};

/// A request to the CA that takes longer than this has failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the CA may take to validate and to issue.
const ORDER_TIMEOUT: Duration = Duration::from_secs(90);

/// The account for `settings.directory`: the stored one, or a new one
/// (stored before it is used).
pub(super) async fn account(settings: &AcmeSettings, store: &Store) -> anyhow::Result<Account> {
    let http = || client(settings).map(|client| Account::builder_with_http(Box::new(client)));
    if let Some(credentials) = store.account().context("reading the stored ACME account")? {
        return http()?
            .from_credentials(credentials)
            .await
            .with_context(|| format!("reaching the ACME directory {}", settings.directory));
    }
    let contact: Vec<&str> = settings.contact.iter().map(String::as_str).collect();
    let (account, credentials) = http()?
        .create(
            &NewAccount {
                contact: &contact,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            settings.directory.clone(),
            None,
        )
        .await
        .with_context(|| format!("registering an account at {}", settings.directory))?;
    store
        .save_account(&credentials)
        .context("storing the new ACME account")?;
    tracing::info!(directory = %settings.directory, id = account.id(), "registered an ACME account");
    Ok(account)
}

/// Orders a certificate for `domain`; returns its PEM (key, then chain).
pub(super) async fn issue(
    account: &Account,
    domain: &str,
    challenge: AcmeChallenge,
    state: &AcmeState,
) -> anyhow::Result<String> {
    let identifiers = [Identifier::Dns(domain.to_string())];
    let mut order = account
        .new_order(&NewOrder::new(&identifiers))
        .await
        .context("creating the order")?;
    let mut answers = Answers {
        state,
        domain,
        tokens: Vec::new(),
    };
    let kind = match challenge {
        AcmeChallenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
        AcmeChallenge::Http01 => ChallengeType::Http01,
    };
    let mut authorizations = order.authorizations();
    while let Some(authorization) = authorizations.next().await {
        let mut authorization = authorization.context("fetching the authorization")?;
        match authorization.status {
            AuthorizationStatus::Pending => {}
            AuthorizationStatus::Valid => continue,
            other => bail!("the CA reports the authorization as {other:?}"),
        }
        let mut offered = authorization
            .challenge(kind.clone())
            .ok_or_else(|| anyhow!("the CA does not offer the {kind:?} challenge"))?;
        let key_authorization = offered.key_authorization();
        match challenge {
            AcmeChallenge::TlsAlpn01 => {
                answers
                    .alpn(key_authorization.digest().as_ref())
                    .context("making the TLS-ALPN-01 certificate")?;
            }
            AcmeChallenge::Http01 => {
                answers.http(&offered.token, key_authorization.as_str());
            }
        }
        offered
            .set_ready()
            .await
            .context("accepting the challenge")?;
    }
    let policy = RetryPolicy::new().timeout(ORDER_TIMEOUT);
    let status = order
        .poll_ready(&policy)
        .await
        .context("waiting for validation")?;
    if status != OrderStatus::Ready {
        return Err(validation_failure(&mut order).await);
    }
    drop(answers);
    let key = order.finalize().await.context("finalizing the order")?;
    let chain = order
        .poll_certificate(&policy)
        .await
        .context("fetching the certificate")?;
    Ok(format!("{key}{chain}"))
}

/// Why the CA refused the domain, in its own words.
async fn validation_failure(order: &mut instant_acme::Order) -> anyhow::Error {
    let mut authorizations = order.authorizations();
    while let Some(Ok(mut authorization)) = authorizations.next().await {
        let Ok(state) = authorization.refresh().await else {
            continue;
        };
        let problem = state
            .challenges
            .iter()
            .find_map(|challenge| challenge.error.as_ref());
        if let Some(problem) = problem {
            return anyhow!("validation failed: {problem}");
        }
    }
    anyhow!("validation failed (the CA gave no reason)")
}

/// The challenge answers of one order, withdrawn when it is dropped.
struct Answers<'a> {
    state: &'a AcmeState,
    domain: &'a str,
    tokens: Vec<String>,
}

impl Answers<'_> {
    /// RFC 8737: a self-signed certificate for the domain carrying the
    /// key authorization's digest.
    fn alpn(&mut self, digest: &[u8]) -> anyhow::Result<()> {
        let mut params = rcgen::CertificateParams::new(vec![self.domain.to_string()])?;
        params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
        let key = rcgen::KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        let private = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
        let provider = rustls::crypto::ring::default_provider();
        // Not `from_der`: its key check parses the certificate with webpki,
        // which refuses the critical acmeIdentifier extension.
        let signer = provider
            .key_provider
            .load_private_key(private)
            .context("loading the challenge key")?;
        let certified = CertifiedKey::new(vec![cert.der().clone()], signer);
        self.state
            .answer_alpn(self.domain, Some(Arc::new(certified)));
        Ok(())
    }

    fn http(&mut self, token: &str, key_authorization: &str) {
        self.state
            .answer_http(token, Some(key_authorization.to_string()));
        self.tokens.push(token.to_string());
    }
}

impl Drop for Answers<'_> {
    fn drop(&mut self) {
        self.state.answer_alpn(self.domain, None);
        for token in &self.tokens {
            self.state.answer_http(token, None);
        }
    }
}

/// instant-acme's HTTP client: the public web roots, or `directory_ca`'s.
struct CaClient(Client<hyper_rustls::HttpsConnector<HttpConnector>, BodyWrapper<Bytes>>);

fn client(settings: &AcmeSettings) -> anyhow::Result<CaClient> {
    let builder = hyper_rustls::HttpsConnectorBuilder::new();
    let builder = match &settings.directory_ca {
        None => builder.with_webpki_roots(),
        Some(path) => {
            let roots = directory_roots(path).map_err(anyhow::Error::msg)?;
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let tls = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()?
                .with_root_certificates(roots)
                .with_no_client_auth();
            builder.with_tls_config(tls)
        }
    };
    let connector = builder.https_only().enable_http1().enable_http2().build();
    Ok(CaClient(
        Client::builder(TokioExecutor::new()).build(connector),
    ))
}

/// The roots in the PEM bundle at `path` (`acme.directory_ca`).
pub(super) fn directory_roots(path: &std::path::Path) -> Result<RootCertStore, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|error| format!("cannot read certificates from {}: {error}", path.display()))?;
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(format!("{} holds no usable CA certificate", path.display()));
    }
    Ok(roots)
}

impl HttpClient for CaClient {
    fn request(
        &self,
        request: http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let response = self.0.request(request);
        Box::pin(async move {
            match tokio::time::timeout(REQUEST_TIMEOUT, response).await {
                Ok(Ok(response)) => Ok(BytesResponse::from(response)),
                Ok(Err(error)) => Err(instant_acme::Error::Other(Box::new(error))),
                Err(_elapsed) => Err(instant_acme::Error::Str("the CA did not answer in time")),
            }
        })
    }
}
