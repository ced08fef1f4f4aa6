//! The configuration file: raw TOML ([`raw`]) checked ([`check`]) into a typed [`Config`].
//!
//! Invariant: [`Config::load`] either returns a config whose every value is
//! usable as is, or reports *every* problem it found at once, each naming the
//! file, the key and the reason. It reads only the config file itself; the
//! files the config points to are loaded (and reported on) by `live`.
//!
//! Relative paths in the file are relative to the directory holding it, so the
//! gateway behaves the same whatever its working directory.

mod check;
pub mod compose;
pub mod deploy;
mod include;
mod raw;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use compose::{Capability, ConfigValue, Grants};
pub use deploy::{DeploySettings, HandlerDeploy};
pub use include::Origins;

/// A validated gateway configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this configuration was read from.
    pub source: PathBuf,
    /// The files it includes (`include = [...]`, followed), in the order read.
    pub includes: Vec<PathBuf>,
    /// Which file each key came from (empty for a configuration in one file).
    pub origins: Origins,
    /// Gateway-wide settings.
    pub gateway: GatewaySettings,
    /// Sockets to accept connections on, in file order.
    pub listeners: Vec<ListenerConfig>,
    /// Guest components by name: `[handler.NAME]` and `[component.NAME]`
    /// (world [`HandlerWorld::Component`]) share one namespace.
    pub handlers: BTreeMap<HandlerName, HandlerConfig>,
    /// Routes in file order; the router decides precedence.
    pub routes: Vec<RouteConfig>,
    /// The admin listener's address (`[admin] addr`, by default
    /// 127.0.0.1:9090); `None` with `[admin] enabled = false`.
    pub admin: Option<SocketAddr>,
    /// `[admin] token_file`: the file holding the bearer token that the
    /// admin API's mutating endpoints require (required off loopback).
    pub admin_token: Option<PathBuf>,
    /// `[acme]`: how certificates for the listeners' `tls.acme` names are
    /// obtained; `None` when the file has no such section.
    pub acme: Option<AcmeSettings>,
    /// `[deploy]`: versions, audit trail, trusted keys.
    pub deploy: DeploySettings,
    /// Each configured handler's split and rollout policy.
    pub handler_deploy: BTreeMap<HandlerName, HandlerDeploy>,
    /// `[profile.NAME]`s, typed (for `wasmgate run --profile`; handlers
    /// have theirs applied already).
    pub profiles: BTreeMap<String, Profile>,
    /// `[cluster]`: the NATS server this gateway joins others through;
    /// `None` for a gateway on its own.
    pub cluster: Option<ClusterSettings>,
}

/// `[cluster]`: several gateways as one, over NATS. Read at start; a
/// reload that changes it is refused (a node leaves and joins by restart).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    /// `nats`: the server's URL (`nats://host:port`).
    pub nats: String,
    /// `name`: the cluster's name, the first token of every subject it
    /// uses, so clusters can share a NATS server.
    pub name: String,
    /// `node`: this node's name in logs, `/status` and metrics (by default
    /// the host's name and the process id).
    pub node: String,
}

impl ClusterSettings {
    /// The longest cluster or node name.
    pub const MAX_NAME: usize = 64;

    /// Whether `node` is a node name: 1 to [`Self::MAX_NAME`] visible ASCII
    /// characters (the config's rule, and the rule for a node named in the
    /// shared deployment state).
    pub fn is_node_name(node: &str) -> bool {
        !node.is_empty()
            && node.len() <= Self::MAX_NAME
            && node.chars().all(|c| c.is_ascii_graphic())
    }
}

/// What a `[profile.NAME]` grants a program run with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// The environment variables it may read.
    pub env: EnvGrant,
    /// Its limits (the gateway's defaults where the profile sets none).
    pub limits: HandlerLimits,
    /// Host directories mapped into it.
    pub files: Vec<FileGrant>,
}

/// The `[acme]` section: one ACME account and where its certificates live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeSettings {
    /// The CA's directory URL (HTTPS).
    pub directory: String,
    /// Account contacts (`mailto:` URLs).
    pub contact: Vec<String>,
    /// Where the account key and the certificates are kept.
    pub storage: PathBuf,
    /// How domains are proven.
    pub challenge: AcmeChallenge,
    /// Renew this long before expiry; `None`: when a third of the
    /// certificate's lifetime is left.
    pub renew_before: Option<Duration>,
    /// A PEM bundle of roots trusted for the directory instead of the
    /// public ones (a private or test CA).
    pub directory_ca: Option<PathBuf>,
}

/// The Let's Encrypt production directory, used when `[acme]` names none.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// How a domain is proven to the CA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcmeChallenge {
    /// RFC 8737: a special certificate on the TLS port (only 443 needed).
    TlsAlpn01,
    /// A token under `/.well-known/acme-challenge/` on a plain listener.
    Http01,
}

/// The `[gateway]` section.
#[derive(Debug, Clone)]
pub struct GatewaySettings {
    /// Where `<name>.wasm` files live.
    pub handlers_dir: PathBuf,
    /// How long in-flight requests may take to finish after a shutdown signal.
    pub grace_period: Duration,
    /// How long a client may take to complete its TLS handshake.
    pub tls_handshake_timeout: Duration,
    /// How many guest instances may exist at once, across all handlers; sizes
    /// the pooling allocator.
    pub max_instances: u32,
    /// Of `max_instances`, how many stream connections (each holding an
    /// instance for its life) can never take: plain HTTP requests' share.
    pub http_reserve: u32,
    /// Serve every `<name>.wasm` without a `[handler.NAME]` at `/<name>` and below.
    pub auto_routes: bool,
    /// Reload when the handlers directory or the config file changes.
    pub watch: bool,
    /// Where compiled components are cached; `None` disables the cache.
    pub cache_dir: Option<PathBuf>,
    /// A Unix socket through which a new wasmgate process takes this one's
    /// listening sockets (zero-downtime restarts); `None` turns it off.
    pub handover_socket: Option<PathBuf>,
    /// How often an idle event stream gets a keep-alive comment (which is
    /// also how a departed client is noticed).
    pub stream_keep_alive: Duration,
    /// How each request is logged.
    pub access_log: AccessLog,
    /// The header carrying each request's id (taken from a trusted proxy,
    /// else made here), passed to the guest and returned on the response.
    pub request_id_header: http::HeaderName,
    /// `[gateway.limits]`: what a handler gets when it sets no limit itself.
    pub limits: HandlerLimits,
}

impl GatewaySettings {
    /// How many instances stream connections may hold at once, together.
    pub fn stream_instances(&self) -> usize {
        self.max_instances.saturating_sub(self.http_reserve) as usize
    }
}

/// The limits a handler's requests run under (`limits` of a handler, or
/// `[gateway.limits]` for every handler that does not set one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandlerLimits {
    /// Wall-clock limit of one request (→ 504).
    pub timeout: Duration,
    /// Cap on the guest's linear memory (→ 500, out of memory).
    pub memory: u64,
    /// Largest request body, counted as it streams (→ 413).
    pub body: u64,
    /// Requests served at once; past it, a short wait, then 503 + Retry-After.
    pub concurrency: usize,
    /// CPU budget of one request (one stream callback, one call into a
    /// component), in fuel units (about one per wasm instruction); out of
    /// it → 504. `None`: only the wall-clock `timeout` applies. Setting it
    /// anywhere turns fuel metering on for the process (at start).
    pub fuel: Option<u64>,
}

impl Default for HandlerLimits {
    fn default() -> Self {
        Self {
            timeout: DEFAULT_TIMEOUT,
            memory: DEFAULT_MEMORY,
            body: DEFAULT_BODY,
            concurrency: DEFAULT_CONCURRENCY,
            fuel: None,
        }
    }
}

/// `[gateway] access_log`: one line per request, or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessLog {
    /// `client "METHOD path" host=… status=… bytes=… ms=… route=… handler=… generation=…`
    Text,
    /// One JSON object per line.
    Json,
    /// No access log.
    Off,
}

/// One `[[listener]]`.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    /// Address to bind; port 0 picks a free port.
    pub addr: SocketAddr,
    /// Certificate and key for HTTPS; plain HTTP (and h2c) when absent.
    pub tls: Option<TlsFiles>,
    /// What one client may do on this listener.
    pub limits: ListenerLimits,
    /// Plain listeners only: answer every request (but ACME HTTP-01
    /// challenges) with a 308 to the same host and path over HTTPS.
    pub redirect: Option<HttpsRedirect>,
    /// TLS listeners only: the `Strict-Transport-Security` value added to
    /// every response that does not set its own.
    pub hsts: Option<http::HeaderValue>,
    /// Every connection starts with a PROXY protocol (v1 or v2) header, which
    /// gives the client's address; a connection without one is refused.
    pub proxy_protocol: bool,
    /// With `proxy_protocol`: the only peers (the balancers) whose PROXY
    /// header is believed; a connection from anywhere else is refused.
    pub proxy_from: Vec<IpNet>,
    /// Peers whose `Forwarded` / `X-Forwarded-*` headers are believed; from
    /// anyone else, those headers are replaced.
    pub trusted_proxies: Vec<IpNet>,
}

/// Where a plain listener sends its clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpsRedirect {
    /// The HTTPS port (left out of the location when it is 443).
    pub port: u16,
}

/// An address block (`10.0.0.0/8`, `::1/128`; a bare address is a /32 or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet(ipnet::IpNet);

impl IpNet {
    /// Parses `10.0.0.0/8`, `fd00::/8`, or a bare address.
    pub fn parse(text: &str) -> Option<Self> {
        let net = text.parse::<ipnet::IpNet>().ok().or_else(|| {
            text.parse::<std::net::IpAddr>()
                .ok()
                .map(ipnet::IpNet::from)
        })?;
        Some(Self(net))
    }

    /// Whether `ip` is in this block (an IPv4-mapped IPv6 address counts as
    /// IPv4, as dual-stack sockets report IPv4 clients).
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        self.0.contains(&ip.to_canonical())
    }
}

/// Per-listener protection against clients that hold resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerLimits {
    /// Open connections at once; past it the listener stops accepting until
    /// one closes (the kernel's backlog holds the rest).
    pub max_connections: usize,
    /// Time to send a request's headers (slowloris), which on HTTP/1.1 also
    /// bounds how long a keep-alive connection may sit idle.
    pub header_timeout: Duration,
    /// Largest request head (HTTP/1.1) or header list (HTTP/2) (→ 431).
    pub max_header_size: usize,
    /// Most header fields in a request (→ 431).
    pub max_headers: usize,
    /// Concurrent streams per HTTP/2 connection.
    pub h2_max_streams: u32,
    /// How long a connection with no request in progress stays open (HTTP/2
    /// with no open stream; HTTP/1.1 between requests is also bounded by
    /// `header_timeout`).
    pub idle_timeout: Duration,
    /// How long a request body may go without a byte while the guest waits
    /// for one (a slow upload: 408, the guest stopped).
    pub body_timeout: Duration,
    /// How long a response may wait for the client to read anything before
    /// the connection is dropped (a reader that stops reading).
    pub write_timeout: Duration,
    /// How often an HTTP/2 connection is PINGed; one that does not answer
    /// within the same time is closed, whatever its streams are doing.
    pub h2_keep_alive: Duration,
}

impl Default for ListenerLimits {
    fn default() -> Self {
        Self {
            max_connections: 25_000,
            header_timeout: Duration::from_secs(15),
            max_header_size: 64 * 1024,
            max_headers: 100,
            h2_max_streams: 256,
            idle_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(30),
            h2_keep_alive: Duration::from_secs(30),
        }
    }
}

/// The certificates of a TLS listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The pair served for names nothing else serves and to clients that
    /// send none; without it, the first `acme` name's certificate is.
    pub default: Option<CertPair>,
    /// More certificates, chosen by the name the client asks for (SNI).
    pub sni: Vec<SniCert>,
    /// Lowercase DNS names whose certificates are obtained through `[acme]`,
    /// one certificate per name.
    pub acme: Vec<String>,
}

/// A certificate chain and its private key, as PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertPair {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// Private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// A certificate served for some server names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SniCert {
    /// Lowercase DNS names; `*.example.com` covers one label under example.com.
    pub names: Vec<String>,
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// Private key.
    pub key: PathBuf,
}

/// A handler's name: the key in `[handler.NAME]`, also its default file name.
/// Shared text: every request's logs and metrics carry it, by a clone.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HandlerName(std::sync::Arc<str>);

impl HandlerName {
    /// Checks `name`: lowercase letters, digits, `-` and `_`, starting with a letter.
    pub fn parse(name: &str) -> Option<Self> {
        let mut chars = name.chars();
        let valid = chars.next().is_some_and(|first| first.is_ascii_lowercase())
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        valid.then(|| Self(name.into()))
    }

    /// The name as written in the config.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The label of a route that serves static files (not a handler name:
    /// it cannot clash with one).
    pub fn static_label() -> Self {
        Self("static:files".into())
    }

    /// The label of a route that publishes to `channel` (not a handler
    /// name: it cannot clash with one).
    pub fn channel_label(channel: &str) -> Self {
        Self(format!("channel:{channel}").into())
    }

    /// The name as logs and metrics labels carry it (no copy).
    pub fn label(&self) -> std::sync::Arc<str> {
        std::sync::Arc::clone(&self.0)
    }
}

impl fmt::Display for HandlerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One `[handler.NAME]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerConfig {
    /// The component file.
    pub path: PathBuf,
    /// Instances kept instantiated and ready for the next request.
    pub prewarm: usize,
    /// Environment variables the guest may read; nothing else is visible.
    pub env: EnvGrant,
    /// Hosts the guest may send HTTP requests to; none by default.
    pub outbound: Vec<OutboundRule>,
    /// Whether an allowed name may lead to a loopback, private or
    /// link-local address (refused by default: a name can resolve anywhere).
    pub allow_private: bool,
    /// The pub/sub namespace its guests' topics live in; `None`: its own
    /// name. Handlers share topics only when they name the same scope.
    pub topic_scope: Option<std::sync::Arc<str>>,
    /// What one request may take (time, memory, body, concurrency).
    pub limits: HandlerLimits,
    /// Which world the component implements, hence how it is served.
    pub world: HandlerWorld,
    /// Limits of each stream (WebSocket and SSE handlers only).
    pub stream: StreamLimits,
    /// Serve more than one request per instance (opt-in; HTTP handlers only).
    pub reuse: Option<Reuse>,
    /// `[component]`s whose exports satisfy its imports, wired at load.
    pub imports: Vec<HandlerName>,
    /// `[component]`s exporting `wasmgate:interceptor/advice`, called around
    /// every call into this component's exports (in order).
    pub interceptors: Vec<HandlerName>,
    /// The host capabilities it may import.
    pub capabilities: Grants,
    /// Its `wasi:config/store` values (`config.KEY`), resolved at load.
    pub config: BTreeMap<String, ConfigValue>,
    /// The channel whose messages invoke it, once each (`[component]`s only).
    pub subscription: Option<Subscription>,
    /// Host directories mapped into the guest (none by default).
    pub files: Vec<FileGrant>,
    /// `resident = true` (`[component]`s only): one long-lived instance
    /// from boot, supervised.
    pub resident: Option<Resident>,
}

/// How a resident component is supervised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resident {
    /// Whether `/readyz` waits for it (and fails while it has failed).
    pub required: bool,
    /// It is marked failed, and no longer restarted, after `max_restarts`
    /// restarts within `within`.
    pub max_restarts: u32,
    /// The crash-loop window.
    pub within: std::time::Duration,
    /// The first restart's delay; each further one in the window doubles it
    /// (at most [`Resident::MAX_BACKOFF`]).
    pub backoff: std::time::Duration,
}

impl Resident {
    /// The longest wait between two restarts.
    pub const MAX_BACKOFF: std::time::Duration = std::time::Duration::from_secs(30);

    /// The wait before the restart that follows `recent` restarts in the window.
    pub fn delay(&self, recent: u32) -> std::time::Duration {
        self.backoff
            .saturating_mul(1u32 << recent.min(16))
            .min(Self::MAX_BACKOFF)
    }
}

/// One `files` entry: a host directory the guest sees at `at`, read-only
/// unless `write`. Paths inside it cannot lead out of it (`..`, symlinks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileGrant {
    /// The host directory.
    pub dir: PathBuf,
    /// Where the guest sees it (absolute).
    pub at: String,
    /// Whether the guest may create, change and delete files in it.
    pub write: bool,
}

/// `subscription = "names"`: each message published to the channel invokes
/// the component's `function` (by default its one exported function that
/// takes one string) with the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// The channel.
    pub channel: std::sync::Arc<str>,
    /// The function called per message.
    pub function: Option<std::sync::Arc<str>>,
}

/// What a route does with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteAction {
    /// `handler = "NAME"`: serves it on the handler (through its middleware).
    Handler,
    /// `publish = "CHANNEL"`: publishes its body to the channel, answers 202.
    Publish(std::sync::Arc<str>),
    /// `invoke = "COMPONENT.FUNCTION"`: calls the function with the path's
    /// `{name}` segments as the arguments of the same names; its result is
    /// the response body.
    Invoke {
        /// The function's name.
        function: std::sync::Arc<str>,
    },
    /// `static = "DIR"`: serves the files under DIR (a `/prefix/*` route:
    /// the path after the prefix is the file's path in DIR).
    Static(std::sync::Arc<std::path::Path>),
}

/// `reuse = { max_requests, max_concurrent, idle }`: an instance whose
/// request ended well serves the next one (a WASI 0.3 instance, up to
/// `max_concurrent` at once). What a guest keeps in memory then survives
/// between requests; an instance that trapped, timed out or ran out of
/// memory is never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reuse {
    /// Requests one instance serves before it is dropped.
    pub max_requests: u32,
    /// Requests one WASI 0.3 instance serves at once (a 0.2 instance serves
    /// one at a time whatever this says).
    pub max_concurrent: u32,
    /// How long an instance may wait for its next request.
    pub idle: Duration,
}

impl Default for Reuse {
    fn default() -> Self {
        Self {
            max_requests: 128,
            max_concurrent: 1,
            idle: Duration::from_secs(1),
        }
    }
}

/// `[handler.NAME.stream]`: what one WebSocket connection or SSE stream may
/// use. The handler's `limits.timeout` bounds each guest call (open, each
/// message, each publication, close), not the stream's life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamLimits {
    /// Largest message (or SSE event) either way; a client that sends more is
    /// closed with 1009, a guest that sends more gets `too-large`.
    pub max_message: usize,
    /// Open streams per route serving this handler; past it the upgrade or
    /// subscription is refused with 503.
    pub max_connections: usize,
    /// A stream with no message either way for this long is closed.
    pub idle_timeout: Duration,
    /// Messages that may wait for a slow client, per connection.
    pub send_queue: usize,
    /// What happens when that queue is full.
    pub slow_consumer: SlowConsumer,
}

/// The policy for a client that reads slower than messages arrive for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlowConsumer {
    /// Close the connection (WebSocket 1008; an SSE stream ends) so the
    /// client reconnects and never sees a gap.
    Close,
    /// Drop what does not fit: the guest's send answers `queue-full`, a
    /// publication to a full inbox is skipped for that connection.
    Drop,
}

impl Default for StreamLimits {
    fn default() -> Self {
        Self {
            max_message: DEFAULT_MAX_MESSAGE,
            max_connections: DEFAULT_MAX_STREAMS,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            send_queue: DEFAULT_SEND_QUEUE,
            slow_consumer: SlowConsumer::Close,
        }
    }
}

/// Which environment variables a guest sees (values from the process
/// environment, else from the `.env` file beside the config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvGrant {
    /// Only these keys.
    Keys(Vec<String>),
    /// Every variable (`env = "all"`): an explicit choice, never a default.
    All,
}

/// One `outbound` entry: `host`, `host:port` or `*.domain` (any subdomain,
/// not the domain itself). Hosts are lowercase; no port means any port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundRule {
    /// The host, or the domain after `*.`.
    pub host: String,
    /// Whether subdomains of `host` match (and `host` itself does not).
    pub wildcard: bool,
    /// The only port allowed, if given.
    pub port: Option<u16>,
}

impl OutboundRule {
    /// Parses `host`, `host:port` or `*.domain[:port]`.
    pub fn parse(text: &str) -> Option<Self> {
        let (host, port) = match text.rsplit_once(':') {
            Some((host, port)) if !host.contains(':') => (host, Some(port.parse().ok()?)),
            _ => (text, None),
        };
        let (host, wildcard) = match host.strip_prefix("*.") {
            Some(domain) => (domain, true),
            None => (host, false),
        };
        let valid = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
        valid.then(|| Self {
            host: host.to_ascii_lowercase(),
            wildcard,
            port,
        })
    }

    /// Whether a request to `host` on `port` is allowed by this rule.
    pub fn allows(&self, host: &str, port: u16) -> bool {
        let host = host.to_ascii_lowercase();
        let host_matches = if self.wildcard {
            host.strip_suffix(&self.host)
                .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.'))
        } else {
            host == self.host
        };
        host_matches && self.port.is_none_or(|allowed| allowed == port)
    }

    /// Whether this rule names `host` itself (not through a wildcard).
    pub fn names(&self, host: &str) -> bool {
        !self.wildcard && host.eq_ignore_ascii_case(&self.host)
    }
}

/// The world a handler's component implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandlerWorld {
    /// `wasi:http/proxy`: one instance per request.
    Http,
    /// `wasmgate:streaming/websocket-service`: one instance per WebSocket connection.
    Websocket,
    /// `wasmgate:streaming/sse-service`: one instance per event stream.
    Sse,
    /// A `[component.NAME]`: no route of its own; its exports serve the
    /// imports of whoever lists it (an instance per importing instance).
    Component,
}

impl HandlerConfig {
    /// The configuration of a component that has no `[handler.NAME]`
    /// (served through automatic routes): every setting at its default.
    pub fn defaults(path: PathBuf, limits: &HandlerLimits) -> Self {
        Self {
            path,
            prewarm: DEFAULT_PREWARM,
            env: EnvGrant::Keys(Vec::new()),
            outbound: Vec::new(),
            allow_private: false,
            topic_scope: None,
            limits: *limits,
            world: HandlerWorld::Http,
            stream: StreamLimits::default(),
            reuse: None,
            imports: Vec::new(),
            interceptors: Vec::new(),
            capabilities: Grants::handler_default(),
            config: BTreeMap::new(),
            subscription: None,
            files: Vec::new(),
            resident: None,
        }
    }
}

/// One `[[route]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteConfig {
    /// Position in the file, used as the route's id in logs.
    pub index: usize,
    /// Matches only this host (lowercase, no port) when set.
    pub host: Option<String>,
    /// The path pattern.
    pub path: RoutePath,
    /// The handler serving it.
    pub handler: HandlerName,
    /// HTTP handlers the request passes through first, in order: each
    /// answers it or passes it on (to `http://next/`), the last to `handler`.
    pub middleware: Vec<HandlerName>,
    /// What it does: serve a handler, publish to a channel, invoke a
    /// function (then `handler` is the component; for a channel, a label).
    pub action: RouteAction,
    /// What the gateway adds around it: CORS, compression, decompression,
    /// response header rules.
    pub edge: RouteEdge,
}

/// The HTTP features a route gets from the gateway itself, whatever
/// serves it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteEdge {
    /// `cors`: answered by the gateway, preflights included.
    pub cors: Option<CorsPolicy>,
    /// `headers`: applied to every response of the route, in order.
    pub headers: Vec<HeaderRule>,
    /// `compress`: responses compressed as the client accepts.
    pub compress: Option<Compress>,
    /// `decompress`: request bodies decoded from their `Content-Encoding`
    /// before anything reads them (and capped after decoding).
    pub decompress: bool,
}

/// When a route's responses are compressed (gzip, br or zstd, as the
/// client's `Accept-Encoding` prefers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compress {
    /// Responses smaller than this (by `Content-Length`, or their size hint)
    /// go as they are.
    pub min_size: u64,
    /// Content types compressed: `type/subtype`, or `type/*`.
    pub types: Vec<String>,
}

impl Compress {
    /// Compressed unless a route says otherwise: text and the text-like
    /// formats web pages are made of.
    pub const DEFAULT_TYPES: [&str; 6] = [
        "text/*",
        "application/json",
        "application/javascript",
        "application/xml",
        "image/svg+xml",
        "application/wasm",
    ];
    /// The default minimum size.
    pub const DEFAULT_MIN_SIZE: u64 = 1024;
}

/// A route's CORS policy (every value checked to be a valid header value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorsPolicy {
    /// Allowed origins (`scheme://host[:port]`); `None`: any (`"*"`).
    pub origins: Option<Vec<http::HeaderValue>>,
    /// Allowed methods.
    pub methods: Vec<http::Method>,
    /// Allowed request headers; `None`: any (`"*"`).
    pub headers: Option<Vec<http::HeaderName>>,
    /// Response headers scripts may read.
    pub expose: Vec<http::HeaderName>,
    /// Whether credentials (cookies, `Authorization`) may be sent.
    pub credentials: bool,
    /// How long a preflight answer may be cached.
    pub max_age: Option<std::time::Duration>,
}

/// One response header rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderRule {
    /// Replaces the header (whatever the handler set).
    Set(http::HeaderName, http::HeaderValue),
    /// Adds a value.
    Append(http::HeaderName, http::HeaderValue),
    /// Removes it.
    Remove(http::HeaderName),
}

impl RouteConfig {
    /// Its stable, bounded id in logs and metrics: `route[N]`.
    pub fn id(&self) -> String {
        format!("route[{}]", self.index)
    }
}

/// A route's path pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RoutePath {
    /// `/a/b`: exactly this path.
    Exact(String),
    /// `/a/*`: `/a` and everything below it; `/*` is everything. The string is
    /// the prefix without the trailing `/*` (empty for `/*`).
    Prefix(String),
}

impl fmt::Display for RoutePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(path) => f.write_str(path),
            Self::Prefix(prefix) => write!(f, "{prefix}/*"),
        }
    }
}

/// One thing wrong with the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file the problem is in.
    pub file: PathBuf,
    /// Dotted key path, e.g. `listener[1].tls.cert`.
    pub key: String,
    /// What is wrong, in words.
    pub reason: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.file.display(), self.key, self.reason)
    }
}

/// Every problem found in one configuration; never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, problem) in self.0.iter().enumerate() {
            if index > 0 {
                writeln!(f)?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

/// A configuration that failed validation.
#[derive(Debug)]
pub struct Invalid {
    /// Everything wrong with it.
    pub problems: Problems,
    /// The parts that were valid (without the invalid listeners, handlers and
    /// routes), when the file parsed at all: the files they name can still be
    /// checked, so that every problem is reported in one go.
    pub partial: Option<Box<Config>>,
}

/// Collects problems for one file.
pub(crate) struct ProblemList {
    file: PathBuf,
    problems: Vec<Problem>,
}

impl ProblemList {
    pub(crate) fn new(file: &Path) -> Self {
        Self {
            file: file.to_path_buf(),
            problems: Vec::new(),
        }
    }

    pub(crate) fn push(&mut self, key: impl Into<String>, reason: impl Into<String>) {
        self.problems.push(Problem {
            file: self.file.clone(),
            key: key.into(),
            reason: reason.into(),
        });
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.problems.is_empty()
    }

    /// Takes over `other`'s problems (each keeps its own file).
    pub(crate) fn extend(&mut self, other: Self) {
        self.problems.extend(other.problems);
    }

    fn invalid(self, partial: Option<Box<Config>>) -> Invalid {
        Invalid {
            problems: Problems(self.problems),
            partial,
        }
    }

    /// The same problems, each moved to the file its key came from.
    fn located(mut self, origins: &Origins) -> Self {
        for problem in &mut self.problems {
            if let Some(file) = origins.file_of(&problem.key) {
                file.clone_into(&mut problem.file);
            }
        }
        self
    }

    /// Everything reported.
    pub(crate) fn into_problems(self) -> Vec<Problem> {
        self.problems
    }
}

const DEFAULT_HANDLERS_DIR: &str = "handlers";
const DEFAULT_ADMIN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9090);
const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(10);
const DEFAULT_TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_MAX_INSTANCES: u32 = 1000;
const DEFAULT_PREWARM: usize = 4;
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_MEMORY: u64 = 128 * 1024 * 1024;
const DEFAULT_BODY: u64 = 64 * 1024 * 1024;
const DEFAULT_CONCURRENCY: usize = 1000;
const DEFAULT_STREAM_KEEP_ALIVE: Duration = Duration::from_secs(15);
const DEFAULT_MAX_MESSAGE: usize = 4 * 1024 * 1024;
const DEFAULT_MAX_STREAMS: usize = 10_000;
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(600);
const DEFAULT_SEND_QUEUE: usize = 64;

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Self, Invalid> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(path, &text),
            Err(error) => {
                let mut problems = ProblemList::new(path);
                problems.push("(file)", format!("cannot read the config file: {error}"));
                Err(problems.invalid(None))
            }
        }
    }

    /// Validates `text` as if read from `path` (with the files it includes).
    pub fn parse(path: &Path, text: &str) -> Result<Self, Invalid> {
        let mut problems = ProblemList::new(path);
        let included = text
            .parse::<toml::Table>()
            .ok()
            .filter(|table| table.contains_key("include"));
        let (parsed, gathered) = match included {
            // One file: its own text locates a wrong value by line and column.
            None => (raw::parse(text), None),
            Some(table) => {
                let gathered = include::gather(path, table, &mut problems);
                (
                    raw::parse_table(gathered.table.clone()),
                    Some((gathered.origins, gathered.files)),
                )
            }
        };
        let (origins, includes) = gathered.unwrap_or_default();
        let mut checked = ProblemList::new(path);
        let (raw, unknown_keys) = match parsed {
            Ok(parsed) => parsed,
            Err(error) => {
                checked.push(error.key, error.reason);
                problems.extend(checked.located(&origins));
                return Err(problems.invalid(None));
            }
        };
        for key in unknown_keys {
            checked.push(key, "unknown key");
        }
        let base = path.parent().unwrap_or(Path::new("")).to_path_buf();
        let mut config = check::Checker::new(&base, &mut checked).check(path, raw);
        config.includes = includes;
        config.origins = origins;
        problems.extend(checked.located(&config.origins));
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(problems.invalid(Some(Box::new(config))))
        }
    }

    /// Whether any handler or component has a CPU budget (`limits.fuel`), so
    /// the engine must meter fuel.
    pub fn meters_fuel(&self) -> bool {
        self.gateway.limits.fuel.is_some()
            || self
                .handlers
                .values()
                .any(|handler| handler.limits.fuel.is_some())
    }

    /// `problems` (found in this configuration, under its main file) each
    /// under the file its key came from.
    pub fn locate(&self, problems: Vec<Problem>) -> Vec<Problem> {
        let mut list = ProblemList::new(&self.source);
        list.problems = problems;
        list.located(&self.origins).problems
    }
}

#[cfg(test)]
mod tests;
