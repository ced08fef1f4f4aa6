//! What a listener does to a request before and after routing, as the front
//! door of a site: ACME HTTP-01 answers and the HTTPS redirect of a plain
//! listener, HSTS on a TLS one, and the `Forwarded` / `X-Forwarded-*`
//! headers guests see.
//!
//! Invariant: a guest's forwarding headers describe the client as far as
//! wasmgate can vouch for it. Incoming ones survive only from a configured
//! trusted proxy (and get this hop appended); from anyone else they are
//! replaced by what the connection itself says.

use std::net::{IpAddr, SocketAddr};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode, Uri};

use crate::config::{HttpsRedirect, IpNet};
use crate::edge::acme::AcmeState;
use crate::http::body::{ResponseBody, full};

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Where RFC 8555 §8.3 puts HTTP-01 tokens.
const ACME_CHALLENGE: &str = "/.well-known/acme-challenge/";

/// The answer to an HTTP-01 challenge in flight, if `path` asks for one;
/// checked before the redirect, which the CA would not follow to port 443.
pub fn acme_http01(acme: &AcmeState, path: &str) -> Option<Response<ResponseBody>> {
    let token = path.strip_prefix(ACME_CHALLENGE)?;
    let answer = acme.http_answer(token)?;
    let mut response = Response::new(full(answer));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    Some(response)
}

/// The 308 that sends a plain-HTTP request to the same host, path and query
/// over HTTPS (308 keeps the method and body, unlike 301).
pub fn https_redirect(
    redirect: HttpsRedirect,
    host: Option<&str>,
    local: SocketAddr,
    uri: &Uri,
) -> Response<ResponseBody> {
    let host = host.map_or_else(|| bracketed(local.ip()), str::to_string);
    let port = match redirect.port {
        443 => String::new(),
        port => format!(":{port}"),
    };
    let target = uri.path_and_query().map_or("/", |path| path.as_str());
    let location = format!("https://{host}{port}{target}");
    let mut response = Response::new(full(format!("308 Permanent Redirect: {location}\n")));
    *response.status_mut() = StatusCode::PERMANENT_REDIRECT;
    // The host was parsed as an authority and the path by hyper: both are
    // valid header text, so this holds for every request that got here.
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Adds `Strict-Transport-Security` unless the guest chose its own.
pub fn add_hsts<B>(response: &mut Response<B>, value: &HeaderValue) {
    response
        .headers_mut()
        .entry(header::STRICT_TRANSPORT_SECURITY)
        .or_insert_with(|| value.clone());
}

/// The hop a request took to reach wasmgate.
pub struct Hop<'a> {
    /// The client (from the PROXY header when the listener takes one).
    pub client: SocketAddr,
    /// `http` or `https`.
    pub proto: &'static str,
    /// The host the client asked for.
    pub host: Option<&'a str>,
    /// Whether the client is a proxy whose forwarding headers are believed
    /// ([`from_trusted_proxy`]).
    pub from_proxy: bool,
}

/// Whether `client` is one of the `trusted` proxies, whose forwarding
/// headers and request ids are believed.
pub fn from_trusted_proxy(trusted: &[IpNet], client: IpAddr) -> bool {
    trusted.iter().any(|net| net.contains(client))
}

/// Sets the forwarding headers of a request that arrived through `hop`.
pub fn forwarding_headers(headers: &mut HeaderMap, hop: &Hop<'_>) {
    let client = hop.client.ip();
    if !hop.from_proxy {
        for name in [
            header::FORWARDED,
            X_FORWARDED_FOR,
            X_FORWARDED_PROTO,
            X_FORWARDED_HOST,
        ] {
            headers.remove(name);
        }
    }
    let mut element = String::with_capacity(64);
    element.push_str("for=");
    forwarded_node(&mut element, client);
    element.push_str(";proto=");
    element.push_str(hop.proto);
    if let Some(host) = hop.host {
        element.push_str(";host=");
        quoted(&mut element, host);
    }
    append(headers, header::FORWARDED, &element);
    append(headers, X_FORWARDED_FOR, &client.to_string());
    // A trusted proxy's view of the original scheme and host wins over ours.
    if !headers.contains_key(&X_FORWARDED_PROTO) {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(hop.proto));
    }
    if let Some(host) = hop
        .host
        .filter(|_| !headers.contains_key(&X_FORWARDED_HOST))
        && let Ok(value) = HeaderValue::from_str(host)
    {
        headers.insert(X_FORWARDED_HOST, value);
    }
}

/// Appends `value` to the one comma-separated `name` header.
fn append(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    // Usually the first: no joining (this runs on every request).
    if !headers.contains_key(&name) {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
        return;
    }
    let mut joined: Vec<&str> = headers
        .get_all(&name)
        .iter()
        .filter_map(|earlier| earlier.to_str().ok())
        .collect();
    joined.push(value);
    if let Ok(value) = HeaderValue::from_str(&joined.join(", ")) {
        headers.insert(name, value);
    }
}

/// RFC 7239 node, onto `out`: IPv6 addresses are bracketed and quoted.
fn forwarded_node(out: &mut String, ip: IpAddr) {
    use std::fmt::Write as _;
    // Writing to a String cannot fail.
    let _ = match ip {
        IpAddr::V4(v4) => write!(out, "{v4}"),
        IpAddr::V6(v6) => write!(out, "\"[{v6}]\""),
    };
}

/// RFC 7239 value, onto `out`: a token as is, anything else (`:` of a
/// port) quoted.
fn quoted(out: &mut String, value: &str) {
    let token = value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c));
    if token {
        out.push_str(value);
    } else {
        out.push('"');
        out.extend(value.chars().filter(|c| !matches!(c, '\\' | '"')));
        out.push('"');
    }
}

fn bracketed(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

/// The longest request id taken from a proxy; a longer one is replaced.
const MAX_REQUEST_ID: usize = 128;

/// The request's id under `header`: a trusted proxy's (`from_proxy`), if it
/// sent a short printable one, else a new UUID (tower-http's
/// `MakeRequestUuid`); set on the request for the guest, and returned.
pub fn request_id(
    headers: &mut HeaderMap,
    header: &http::HeaderName,
    from_proxy: bool,
) -> HeaderValue {
    use tower_http::request_id::MakeRequestId as _;
    if from_proxy
        && let Some(given) = headers.get(header)
        && !given.is_empty()
        && given.len() <= MAX_REQUEST_ID
        && given.to_str().is_ok()
    {
        return given.clone();
    }
    let made = tower_http::request_id::MakeRequestUuid
        .make_request_id(&http::Request::new(()))
        .map(|id| id.header_value().clone())
        .unwrap_or_else(|| HeaderValue::from_static("-"));
    headers.insert(header.clone(), made.clone());
    made
}

/// Marks the request headers that carry credentials as sensitive, so no
/// debug output of the request shows their values (tower-http's
/// `SetSensitiveRequestHeaders` does the same as a layer).
pub fn hide_secrets(headers: &mut HeaderMap) {
    for name in [
        http::header::AUTHORIZATION,
        http::header::PROXY_AUTHORIZATION,
        http::header::COOKIE,
    ] {
        if let http::header::Entry::Occupied(mut entry) = headers.entry(name) {
            for value in entry.iter_mut() {
                value.set_sensitive(true);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hop<'a>(client: &str, trusted: &'a [IpNet]) -> Hop<'a> {
        Hop {
            client: client.parse().expect("address"),
            proto: "https",
            host: Some("example.com"),
            from_proxy: from_trusted_proxy(
                trusted,
                client.parse::<SocketAddr>().expect("address").ip(),
            ),
        }
    }

    #[test]
    fn redirect_keeps_host_path_and_query_and_names_a_custom_port() {
        let uri: Uri = "/a/b?c=d".parse().expect("uri");
        let local = "127.0.0.1:80".parse().expect("address");
        let to_443 = https_redirect(
            HttpsRedirect { port: 443 },
            Some("example.com"),
            local,
            &uri,
        );
        assert_eq!(to_443.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(
            to_443.headers()[header::LOCATION],
            "https://example.com/a/b?c=d"
        );
        let to_8443 = https_redirect(HttpsRedirect { port: 8443 }, None, local, &uri);
        assert_eq!(
            to_8443.headers()[header::LOCATION],
            "https://127.0.0.1:8443/a/b?c=d"
        );
    }

    #[test]
    fn untrusted_clients_lose_their_forwarding_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(X_FORWARDED_FOR, HeaderValue::from_static("6.6.6.6"));
        headers.insert(header::FORWARDED, HeaderValue::from_static("for=6.6.6.6"));
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
        forwarding_headers(&mut headers, &hop("203.0.113.7:5000", &[]));
        assert_eq!(headers[X_FORWARDED_FOR], "203.0.113.7");
        assert_eq!(headers[X_FORWARDED_PROTO], "https");
        assert_eq!(
            headers[header::FORWARDED],
            "for=203.0.113.7;proto=https;host=example.com"
        );
    }

    #[test]
    fn trusted_proxies_keep_the_chain_and_get_this_hop_appended() {
        let trusted = [IpNet::parse("10.0.0.0/8").expect("net")];
        let mut headers = HeaderMap::new();
        headers.insert(X_FORWARDED_FOR, HeaderValue::from_static("198.51.100.1"));
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
        forwarding_headers(&mut headers, &hop("10.1.2.3:4000", &trusted));
        assert_eq!(headers[X_FORWARDED_FOR], "198.51.100.1, 10.1.2.3");
        assert_eq!(headers[X_FORWARDED_PROTO], "http");
        assert_eq!(
            headers[header::FORWARDED],
            "for=10.1.2.3;proto=https;host=example.com"
        );
        // ::1 is not in 10/8: the chain starts over with it.
        forwarding_headers(&mut headers, &hop("[::1]:1", &trusted));
        assert_eq!(headers[X_FORWARDED_FOR], "::1");
        assert_eq!(
            headers[header::FORWARDED],
            "for=\"[::1]\";proto=https;host=example.com"
        );
    }

    #[test]
    fn ip_blocks_match_by_prefix_and_mapped_v4() {
        let net = IpNet::parse("192.168.0.0/16").expect("net");
        assert!(net.contains("192.168.4.5".parse().expect("ip")));
        assert!(!net.contains("192.169.0.1".parse().expect("ip")));
        assert!(net.contains("::ffff:192.168.1.1".parse().expect("ip")));
        let host = IpNet::parse("::1").expect("net");
        assert!(host.contains("::1".parse().expect("ip")));
        assert!(!host.contains("::2".parse().expect("ip")));
        assert!(IpNet::parse("10.0.0.0/33").is_none());
        assert!(IpNet::parse("example.com").is_none());
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        proptest! {
            /// Whatever an untrusted client sends as forwarding headers, the
            /// guest sees exactly the connection's view, as valid headers.
            #[test]
            fn untrusted_forwarding_headers_are_replaced_whatever_they_say(
                values in proptest::collection::vec("[ -~]{0,60}", 0..6),
                client in any::<[u8; 4]>(),
                host in proptest::option::of("[a-z0-9.-]{1,30}"),
            ) {
                let mut headers = HeaderMap::new();
                for (index, value) in values.iter().enumerate() {
                    let name = [header::FORWARDED, X_FORWARDED_FOR, X_FORWARDED_PROTO, X_FORWARDED_HOST][index % 4].clone();
                    if let Ok(value) = HeaderValue::from_str(value) {
                        headers.append(name, value);
                    }
                }
                let client = std::net::SocketAddr::from((client, 4000));
                let hop = Hop { client, proto: "https", host: host.as_deref(), from_proxy: false };
                forwarding_headers(&mut headers, &hop);
                prop_assert_eq!(headers.get_all(X_FORWARDED_FOR).iter().count(), 1);
                let shown = client.ip().to_string();
                prop_assert_eq!(&headers[X_FORWARDED_FOR], shown.as_str());
                prop_assert_eq!(&headers[X_FORWARDED_PROTO], "https");
                let forwarded = headers[header::FORWARDED].to_str().expect("text");
                let expected = format!("for={};proto=https", client.ip());
                prop_assert!(forwarded.starts_with(&expected), "{}", forwarded);
            }
        }
    }
}
