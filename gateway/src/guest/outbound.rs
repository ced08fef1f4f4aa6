//! Outbound HTTP from guests: the per-handler allowlist, enforced in
//! wasi:http's send hook, and the one pooled client allowed requests share.
//!
//! Invariant: a request to a destination no rule of its handler allows never
//! leaves the host (no DNS lookup, no connection): the guest gets
//! `HTTP-request-denied`. Allowed requests reuse pooled connections and are
//! bounded by connect and first-byte timeouts.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt as _;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use crate::config::OutboundRule;

/// Connection setup limit when the guest sets none.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Wait for the response head when the guest sets none.
const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(30);

/// The process's client for guests' outbound requests (HTTP and HTTPS with
/// the webpki roots, HTTP/1.1 and HTTP/2), pooling connections per host.
pub struct OutboundClient {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, WasiBody>,
}

impl OutboundClient {
    /// A client with an empty pool.
    pub fn new() -> Self {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        http.set_nodelay(true);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        Self {
            client: Client::builder(TokioExecutor::new()).build(https),
        }
    }
}

impl Default for OutboundClient {
    fn default() -> Self {
        Self::new()
    }
}

/// One guest's outbound policy: its handler's rules and the shared client.
pub(super) struct Outbound {
    pub(super) handler: Arc<str>,
    pub(super) rules: Arc<[OutboundRule]>,
    pub(super) client: Arc<OutboundClient>,
}

impl Outbound {
    fn allows(&self, uri: &http::Uri) -> bool {
        let Some(host) = uri.host() else {
            return false;
        };
        let https = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        self.rules.iter().any(|rule| rule.allows(host, port))
    }
}

type SendFuture = Box<dyn Future<Output = Result<(), Error>> + Send>;

impl WasiHttpHooks for Outbound {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _response_errors: SendFuture,
    ) -> Box<dyn Future<Output = Result<(http::Response<WasiBody>, SendFuture), Error>> + Send>
    {
        if !self.allows(request.uri()) {
            tracing::warn!(
                handler = &*self.handler,
                authority = request.uri().authority().map(|a| a.as_str()),
                "outbound HTTP request denied: no `outbound` rule of the handler allows it"
            );
            return Box::new(async { Err(Error::HttpRequestDenied) });
        }
        let client = self.client.client.clone();
        let first_byte = options
            .and_then(|options| options.first_byte_timeout)
            .unwrap_or(FIRST_BYTE_TIMEOUT);
        Box::new(async move {
            let response = tokio::time::timeout(first_byte, client.request(request))
                .await
                .map_err(|_elapsed| Error::ConnectionReadTimeout)?
                .map_err(|error| {
                    if error.is_connect() {
                        Error::ConnectionRefused
                    } else {
                        Error::HttpProtocolError
                    }
                })?;
            let response = response.map(|body| body.map_err(Error::from).boxed_unsync());
            let done: SendFuture = Box::new(async { Ok(()) });
            Ok((response, done))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(rules: &[&str]) -> Outbound {
        Outbound {
            handler: Arc::from("test"),
            rules: rules
                .iter()
                .map(|rule| OutboundRule::parse(rule).expect("valid rule"))
                .collect(),
            client: Arc::new(OutboundClient::new()),
        }
    }

    fn allowed(policy: &Outbound, uri: &str) -> bool {
        policy.allows(&uri.parse().expect("uri"))
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
