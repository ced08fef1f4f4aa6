//! Automatic certificates (RFC 8555) for the names listed in the listeners'
//! `tls.acme`, from the CA of `[acme]`, through instant-acme.
//!
//! One manager task per gateway looks at every name: a certificate stored on
//! disk is served as soon as the gateway starts; a missing one is ordered, a
//! due one (a third of its lifetime left, or `renew_before`) is renewed, and
//! each new one is stored, then served to new handshakes. The domain is
//! proven with TLS-ALPN-01 on the TLS listener or HTTP-01 on a plain one
//! (answered before any redirect or route).
//!
//! Invariant: ACME never stands between a request and its answer. A failed
//! order is logged with the CA's reason and counted, the name keeps what it
//! had (an older certificate, a static one, or none), and the order is
//! retried with back-off, or at once on reload.

mod order;
mod state;
mod store;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

pub use state::{AcmeState, Issued};

use crate::config::{AcmeSettings, Config};
use crate::control::drain::Drain;
use crate::control::metrics::Metrics;
use store::Store;

/// First wait after a failed order; doubled after each further failure.
const FIRST_RETRY: Duration = Duration::from_secs(120);
/// Longest wait between attempts.
const LAST_RETRY: Duration = Duration::from_secs(3600);
/// Longest sleep before looking at every name again.
const LOOK_AGAIN: Duration = Duration::from_secs(3600);

/// Every name the listeners of `config` obtain certificates for, once each.
pub fn domains(config: &Config) -> Vec<String> {
    let mut domains: Vec<String> = Vec::new();
    for tls in config.listeners.iter().filter_map(|l| l.tls.as_ref()) {
        for name in &tls.acme {
            if !domains.contains(name) {
                domains.push(name.clone());
            }
        }
    }
    domains
}

/// What is wrong with the files `[acme]` names, keyed like the config.
pub fn file_problems(config: &Config) -> Vec<(&'static str, String)> {
    let ca = config
        .acme
        .as_ref()
        .and_then(|acme| acme.directory_ca.as_deref());
    ca.and_then(|path| order::directory_roots(path).err())
        .map(|reason| ("acme.directory_ca", reason))
        .into_iter()
        .collect()
}

/// Serves the stored certificates of `config`'s names that are still valid;
/// returns the names left without one.
pub fn load_stored(config: &Config, state: &AcmeState, metrics: &Metrics) -> Vec<String> {
    let Some(settings) = &config.acme else {
        return Vec::new();
    };
    let store = Store::new(&settings.storage, &settings.directory);
    domains(config)
        .into_iter()
        .filter(|domain| {
            if state.issued(domain).is_some() {
                return false;
            }
            match stored(&store, domain) {
                Ok(Some(issued)) if issued.not_after > SystemTime::now() => {
                    install(state, metrics, domain, issued);
                    false
                }
                Ok(_) => true,
                Err(error) => {
                    tracing::warn!(
                        domain,
                        path = %store.certificate_path(domain).display(),
                        "ignoring the stored certificate: {error}"
                    );
                    true
                }
            }
        })
        .collect()
}

fn stored(store: &Store, domain: &str) -> Result<Option<Issued>, String> {
    let Some(pem) = store
        .certificate(domain)
        .map_err(|error| error.to_string())?
    else {
        return Ok(None);
    };
    Issued::from_pem(&pem).map(Some)
}

fn install(state: &AcmeState, metrics: &Metrics, domain: &str, issued: Issued) {
    let expiry = issued
        .not_after
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    metrics
        .certificate_expiry
        .with_label_values(&[domain])
        .set(i64::try_from(expiry.as_secs()).unwrap_or(i64::MAX));
    state.serve(domain, issued);
}

/// A name whose last order failed.
struct Failed {
    retry_at: Instant,
    delay: Duration,
}

/// What the manager works with, handed over by start-up (the manager knows
/// nothing of the rest of the gateway).
pub struct Manager {
    /// Where issued certificates and challenge answers are published.
    pub acme: Arc<AcmeState>,
    /// Where orders and expiry times are counted.
    pub metrics: Arc<Metrics>,
    /// Ends the manager.
    pub drain: Drain,
    /// The configuration in force, read anew before each look at the names.
    pub config: Box<dyn Fn() -> Arc<Config> + Send + Sync>,
}

/// Runs the manager until the gateway drains.
pub async fn run(manager: Manager) {
    let mut failed: HashMap<String, Failed> = HashMap::new();
    let mut account: Option<(AcmeSettings, instant_acme::Account)> = None;
    loop {
        let config = (manager.config)();
        let mut next = Instant::now() + LOOK_AGAIN;
        if let Some(settings) = &config.acme {
            load_stored(&config, &manager.acme, &manager.metrics);
            let store = Store::new(&settings.storage, &settings.directory);
            for domain in domains(&config) {
                let current = manager.acme.issued(&domain);
                if let Some(due) = due_in(current.as_ref(), settings) {
                    next = next.min(Instant::now() + due);
                    continue;
                }
                if let Some(failure) = failed.get(&domain).filter(|f| f.retry_at > Instant::now()) {
                    next = next.min(failure.retry_at);
                    continue;
                }
                let outcome = obtain(&manager, settings, &store, &mut account, &domain).await;
                match outcome {
                    Ok(issued) => {
                        failed.remove(&domain);
                        next = next.min(
                            Instant::now() + due_in(Some(&issued), settings).unwrap_or_default(),
                        );
                        let expires = issued.not_after;
                        install(&manager.acme, &manager.metrics, &domain, issued);
                        // Said once it is served, so the line means that.
                        tracing::info!(
                            domain,
                            expires = %humantime::format_rfc3339_seconds(expires),
                            "obtained a certificate"
                        );
                    }
                    Err(error) => {
                        let delay = failed
                            .get(&domain)
                            .map_or(FIRST_RETRY, |f| (f.delay * 2).min(LAST_RETRY));
                        tracing::error!(
                            domain,
                            directory = %settings.directory,
                            "could not obtain a certificate: {error:#}; {}, next attempt in {}",
                            keeps(current.as_ref()),
                            humantime::format_duration(delay),
                        );
                        let retry_at = Instant::now() + delay;
                        failed.insert(domain, Failed { retry_at, delay });
                        next = next.min(retry_at);
                    }
                }
            }
        }
        tokio::select! {
            () = manager.drain.signaled() => return,
            () = tokio::time::sleep_until(next) => {}
            () = manager.acme.wake.notified() => failed.clear(),
        }
    }
}

/// How long until `current` is due for renewal; `None` when it is due now
/// (or there is no certificate).
fn due_in(current: Option<&Issued>, settings: &AcmeSettings) -> Option<Duration> {
    let renew_at = current?.renew_at(settings.renew_before);
    renew_at.duration_since(SystemTime::now()).ok()
}

fn keeps(current: Option<&Issued>) -> String {
    match current {
        Some(issued) => format!(
            "the current certificate stays in use until it expires at {}",
            humantime::format_rfc3339_seconds(issued.not_after)
        ),
        None => "the name has no certificate meanwhile".to_string(),
    }
}

/// One order for `domain`, stored before it is returned.
async fn obtain(
    manager: &Manager,
    settings: &AcmeSettings,
    store: &Store,
    account: &mut Option<(AcmeSettings, instant_acme::Account)>,
    domain: &str,
) -> anyhow::Result<Issued> {
    let outcome = async {
        let current = match account.take() {
            Some((used, current)) if used == *settings => current,
            _ => order::account(settings, store).await?,
        };
        *account = Some((settings.clone(), current.clone()));
        let pem = order::issue(&current, domain, settings.challenge, &manager.acme).await?;
        let issued = Issued::from_pem(pem.as_bytes())
            .map_err(anyhow::Error::msg)?;
        if let Err(error) = store.save_certificate(domain, pem.as_bytes()) {
            tracing::error!(
                domain,
                path = %store.certificate_path(domain).display(),
                "could not store the new certificate ({error}); it is served, but a restart will order another"
            );
        }
        Ok(issued)
    }
    .await;
    let label = if outcome.is_ok() { "issued" } else { "failed" };
    manager
        .metrics
        .acme_orders
        .with_label_values(&[domain, label])
        .inc();
    outcome
}
