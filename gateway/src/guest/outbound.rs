//! Outbound HTTP from guests: the per-handler allowlist, enforced in
//! wasi:http's send hook, and the pooled clients allowed requests share.
//!
//! Invariant: a request to a destination no rule of its handler allows never
//! leaves the host (no DNS lookup, no connection): the guest gets
//! `HTTP-request-denied`. An allowed name reaches only public addresses:
//! what it resolves to is checked at connect time, and loopback, private,
//! link-local and other internal addresses are dropped (the guest gets
//! `destination-IP-prohibited` when none is left), unless the handler says
//! `allow_private` or the rule names the address itself. One guest instance
//! has at most [`MAX_IN_FLIGHT`] requests out at once. Allowed requests
//! reuse pooled connections and are bounded by connect and first-byte
//! timeouts.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::BodyExt as _;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::{GaiResolver, Name};
use hyper_util::rt::TokioExecutor;
use tokio::sync::Semaphore;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use crate::config::OutboundRule;

/// Connection setup limit when the guest sets none.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Wait for the response head when the guest sets none.
const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(30);

/// Requests one guest instance may have out at once.
pub(super) const MAX_IN_FLIGHT: usize = 16;

type Pooled<R> = Client<hyper_rustls::HttpsConnector<HttpConnector<R>>, WasiBody>;

/// The process's clients for guests' outbound requests (HTTP and HTTPS with
/// the webpki roots, HTTP/1.1 and HTTP/2), pooling connections per host:
/// one that connects to public addresses only, one for handlers allowed
/// inside. Two pools, so a connection one handler may make is never lent to
/// one that may not.
pub struct OutboundClient {
    public: Pooled<PublicOnly>,
    any: Pooled<GaiResolver>,
}

impl OutboundClient {
    /// Clients with empty pools.
    pub fn new() -> Self {
        Self {
            public: pooled(HttpConnector::new_with_resolver(PublicOnly(
                GaiResolver::new(),
            ))),
            any: pooled(HttpConnector::new()),
        }
    }
}

fn pooled<R>(mut http: HttpConnector<R>) -> Pooled<R>
where
    R: tower_service::Service<Name> + Clone + Send + Sync + 'static,
    R::Response: Iterator<Item = SocketAddr>,
    R::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    R::Future: Send,
{
    http.enforce_http(false);
    http.set_connect_timeout(Some(CONNECT_TIMEOUT));
    http.set_nodelay(true);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new()).build(https)
}

/// Name resolution that keeps public addresses only: the check happens on
/// the addresses actually connected to, so a name that resolves inside
/// (now, or after the allowlist let it through) gets nowhere.
#[derive(Clone)]
struct PublicOnly(GaiResolver);

/// A name that resolved to internal addresses only.
#[derive(Debug, thiserror::Error)]
#[error("{0} resolves only to internal addresses")]
struct Prohibited(String);

impl tower_service::Service<Name> for PublicOnly {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let shown = name.as_str().to_string();
        let lookup = self.0.call(name);
        Box::pin(async move {
            let public: Vec<SocketAddr> =
                lookup.await?.filter(|addr| is_public(addr.ip())).collect();
            if public.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    Prohibited(shown),
                ));
            }
            Ok(public.into_iter())
        })
    }
}

/// Whether `ip` is on the public internet: not loopback, private (RFC
/// 1918, fc00::/7), link-local (169.254/16 with the cloud metadata
/// address, fe80::/10), shared (100.64/10), unspecified, broadcast or
/// multicast; an IPv4-mapped address is judged by its IPv4 part.
pub(super) fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            let shared = a == 100 && (64..128).contains(&b);
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || shared
                || a == 0)
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public(IpAddr::V4(v4)),
            None => {
                !(v6.is_loopback()
                    || v6.is_unspecified()
                    || v6.is_multicast()
                    || v6.is_unique_local()
                    || v6.is_unicast_link_local())
            }
        },
    }
}

impl Default for OutboundClient {
    fn default() -> Self {
        Self::new()
    }
}

/// One guest instance's outbound policy: its handler's rules, whether it
/// may reach inside, the shared clients, and its own count of requests out.
pub(super) struct Outbound {
    handler: Arc<str>,
    rules: Arc<[OutboundRule]>,
    allow_private: bool,
    client: Arc<OutboundClient>,
    /// Made at the first request out: most guests never send one, and a
    /// store is made per request.
    in_flight: Option<Arc<Semaphore>>,
    /// For a middleware serving a request: the rest of its route's chain,
    /// which a request to [`NEXT_HOP`] goes to instead of the network.
    pub(super) next: Option<Arc<dyn NextHop>>,
}

/// The authority a middleware sends a request to in order to pass it on.
pub(super) const NEXT_HOP: &str = "next";

/// The rest of a route's chain, as a middleware's store sees it.
pub trait NextHop: Send + Sync {
    /// Serves `request` on the next link; an error becomes the response the
    /// client would have seen.
    fn call(
        &self,
        request: http::Request<WasiBody>,
    ) -> Pin<Box<dyn Future<Output = http::Response<WasiBody>> + Send>>;
}

/// Where an allowed request may connect.
#[derive(Debug, PartialEq, Eq)]
enum Reach {
    /// Public addresses only.
    Public,
    /// Anywhere the name leads (`allow_private`, or a rule naming the address).
    Anywhere,
}

impl Outbound {
    pub(super) fn new(
        handler: Arc<str>,
        rules: Arc<[OutboundRule]>,
        allow_private: bool,
        client: Arc<OutboundClient>,
    ) -> Self {
        Self {
            handler,
            rules,
            allow_private,
            client,
            in_flight: None,
            next: None,
        }
    }

    /// Where a request to `uri` may go, or why it may not.
    fn reach(&self, uri: &http::Uri) -> Result<Reach, Error> {
        let Some(host) = uri.host() else {
            return Err(Error::HttpRequestDenied);
        };
        let https = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        if !self.rules.iter().any(|rule| rule.allows(host, port)) {
            return Err(Error::HttpRequestDenied);
        }
        if self.allow_private {
            return Ok(Reach::Anywhere);
        }
        // An address written out is judged now (no lookup will happen): a
        // rule that names it exactly is the operator's say-so.
        match host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            Ok(ip) if is_public(ip) => Ok(Reach::Public),
            Ok(_) if self.rules.iter().any(|rule| rule.names(host)) => Ok(Reach::Anywhere),
            Ok(_) => Err(Error::DestinationIpProhibited),
            Err(_) => Ok(Reach::Public),
        }
    }
}

type SendFuture = Box<dyn Future<Output = Result<(), Error>> + Send>;

impl Outbound {
    /// One of the instance's [`MAX_IN_FLIGHT`] places for a request out
    /// (`what`, for the log line when there is none left).
    fn permit(&mut self, what: &str) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let in_flight = self
            .in_flight
            .get_or_insert_with(|| Arc::new(Semaphore::new(MAX_IN_FLIGHT)));
        let permit = Arc::clone(in_flight).try_acquire_owned().ok();
        if permit.is_none() {
            tracing::warn!(
                handler = &*self.handler,
                "{what} denied: {MAX_IN_FLIGHT} already out from this instance"
            );
        }
        permit
    }
}

/// `body`, holding `permit` (a request out) until it is done or dropped.
fn held_by<B>(body: B, permit: tokio::sync::OwnedSemaphorePermit) -> WasiBody
where
    B: http_body::Body<Data = bytes::Bytes, Error = Error> + Send + 'static,
{
    body.map_frame(move |frame| {
        let _out = &permit;
        frame
    })
    .boxed_unsync()
}

impl WasiHttpHooks for Outbound {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _response_errors: SendFuture,
    ) -> Box<dyn Future<Output = Result<(http::Response<WasiBody>, SendFuture), Error>> + Send>
    {
        if let Some(next) = self
            .next
            .clone()
            .filter(|_| request.uri().host() == Some(NEXT_HOP))
        {
            // Passed on in-process: no rule and no socket, but the same
            // bound on requests out at once (a middleware could otherwise
            // fan one request out without limit); the next link has its own
            // permits and deadline.
            let Some(permit) = self.permit("passing a request on") else {
                return Box::new(async { Err(Error::ConnectionLimitReached) });
            };
            let answered = next.call(request);
            return Box::new(async move {
                let response = answered.await.map(|body| held_by(body, permit));
                let done: SendFuture = Box::new(async { Ok(()) });
                Ok((response, done))
            });
        }
        let authority = request.uri().authority().map(ToString::to_string);
        let reach = match self.reach(request.uri()) {
            Ok(reach) => reach,
            Err(error) => {
                let why = match error {
                    Error::DestinationIpProhibited => {
                        "an internal address (the handler has no allow_private)"
                    }
                    _ => "no `outbound` rule of the handler allows it",
                };
                tracing::warn!(
                    handler = &*self.handler,
                    authority,
                    "outbound HTTP request denied: {why}"
                );
                return Box::new(async { Err(error) });
            }
        };
        let Some(permit) = self.permit("outbound HTTP request") else {
            return Box::new(async { Err(Error::ConnectionLimitReached) });
        };
        let first_byte = options
            .and_then(|options| options.first_byte_timeout)
            .unwrap_or(FIRST_BYTE_TIMEOUT);
        let handler = Arc::clone(&self.handler);
        let sent = match reach {
            Reach::Public => self.client.public.request(request),
            Reach::Anywhere => self.client.any.request(request),
        };
        Box::new(async move {
            let response = tokio::time::timeout(first_byte, sent)
                .await
                .map_err(|_elapsed| Error::ConnectionReadTimeout)?
                .map_err(|error| {
                    if let Some(prohibited) = find::<Prohibited>(&error) {
                        tracing::warn!(
                            handler = &*handler,
                            authority,
                            "outbound HTTP request refused: {prohibited}"
                        );
                        Error::DestinationIpProhibited
                    } else if error.is_connect() {
                        Error::ConnectionRefused
                    } else {
                        Error::HttpProtocolError
                    }
                })?;
            let response = response.map(|body| held_by(body.map_err(Error::from), permit));
            let done: SendFuture = Box::new(async { Ok(()) });
            Ok((response, done))
        })
    }
}

/// The first `T` in `error`'s chain of sources.
fn find<'a, T: std::error::Error + 'static>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(found) = error.downcast_ref::<T>() {
            return Some(found);
        }
        // An io::Error's source() skips the error it wraps.
        if let Some(found) = error
            .downcast_ref::<io::Error>()
            .and_then(io::Error::get_ref)
            .and_then(|inner| inner.downcast_ref::<T>())
        {
            return Some(found);
        }
        current = error.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(rules: &[&str]) -> Outbound {
        Outbound::new(
            Arc::from("test"),
            rules
                .iter()
                .map(|rule| OutboundRule::parse(rule).expect("valid rule"))
                .collect(),
            false,
            Arc::new(OutboundClient::new()),
        )
    }

    fn allowed(policy: &Outbound, uri: &str) -> bool {
        policy.reach(&uri.parse().expect("uri")).is_ok()
    }

    #[test]
    fn internal_addresses_are_not_public() {
        for internal in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
        ] {
            assert!(!is_public(internal.parse().expect("ip")), "{internal}");
        }
        for public in [
            "93.184.216.34",
            "1.1.1.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(is_public(public.parse().expect("ip")), "{public}");
        }
    }

    #[test]
    fn an_internal_address_needs_a_rule_naming_it_or_allow_private() {
        let named = policy(&["127.0.0.1:8080", "*.example.com"]);
        let reach = |policy: &Outbound, uri: &str| policy.reach(&uri.parse().expect("uri")).ok();
        assert_eq!(
            reach(&named, "http://127.0.0.1:8080/"),
            Some(Reach::Anywhere)
        );
        assert_eq!(reach(&named, "http://a.example.com/"), Some(Reach::Public));
        let metadata = policy(&["metadata.internal", "10.0.0.1"]);
        assert_eq!(
            reach(&metadata, "http://metadata.internal/"),
            Some(Reach::Public)
        );
        assert_eq!(reach(&metadata, "http://10.0.0.1/"), Some(Reach::Anywhere));
        assert_eq!(reach(&metadata, "http://169.254.169.254/"), None);
        let mut open = policy(&["localhost"]);
        assert_eq!(reach(&open, "http://localhost/"), Some(Reach::Public));
        open.allow_private = true;
        assert_eq!(reach(&open, "http://localhost/"), Some(Reach::Anywhere));
    }

    #[test]
    fn rules_match_host_port_and_subdomains_only() {
        let policy = policy(&["api.example.com", "localhost:8080", "*.example.org"]);
        assert!(allowed(&policy, "https://api.example.com/x"));
        assert!(allowed(&policy, "http://API.example.com:9000/"));
        assert!(allowed(&policy, "http://localhost:8080/"));
        assert!(!allowed(&policy, "http://localhost:8081/"));
        assert!(!allowed(&policy, "http://localhost/"));
        assert!(allowed(&policy, "https://a.example.org/"));
        assert!(allowed(&policy, "https://b.a.example.org/"));
        assert!(!allowed(&policy, "https://example.org/"));
        assert!(!allowed(&policy, "https://evilexample.org/"));
        assert!(!allowed(&policy, "https://api.example.com.evil.net/"));
        assert!(!allowed(&self::policy(&[]), "https://api.example.com/"));
    }
}
