//! The checker: raw values → typed, validated values, every problem
//! collected with its key path and nothing returned early.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytesize::ByteSize;

mod cluster;
mod compose;
mod deploy;
mod edge;
mod profile;
mod resident;
mod tls;

use compose::{Section, parse_invoke_path};

use super::raw;
use super::{
    AccessLog, Config, DEFAULT_ADMIN, DEFAULT_GRACE_PERIOD, DEFAULT_HANDLERS_DIR,
    DEFAULT_MAX_INSTANCES, DEFAULT_PREWARM, DEFAULT_STREAM_KEEP_ALIVE,
    DEFAULT_TLS_HANDSHAKE_TIMEOUT, EnvGrant, GatewaySettings, HandlerConfig, HandlerDeploy,
    HandlerLimits, HandlerName, HandlerWorld, HttpsRedirect, IpNet, ListenerConfig, ListenerLimits,
    OutboundRule, ProblemList, Reuse, RouteAction, RouteConfig, RoutePath, SlowConsumer,
    StreamLimits,
};

pub(super) struct Checker<'a> {
    base: &'a Path,
    problems: &'a mut ProblemList,
    /// `[profile.NAME]` tables, for the handlers that name them.
    profiles: BTreeMap<String, raw::RawProfile>,
}

/// The longest duration any key takes: a deadline is a clock reading plus
/// it, which must not overflow.
const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);
/// The largest size any key takes (a wasm32 guest addresses 4 GiB).
const MAX_SIZE: u64 = 16 << 30;
/// The largest count any key takes: every count becomes a semaphore or a
/// queue, which must stay far from their own limits.
const MAX_COUNT: usize = 1_000_000;
/// The most guest instances the pooling allocator is asked to reserve.
const MAX_INSTANCES: u32 = 100_000;
/// The most requests one instance serves at once: all of them share its
/// one store, its memory cap and its deadline, so a few hundred is already
/// a lot.
const MAX_CONCURRENT_PER_INSTANCE: u32 = 1024;

impl<'a> Checker<'a> {
    pub(super) fn new(base: &'a Path, problems: &'a mut ProblemList) -> Self {
        Self {
            base,
            problems,
            profiles: BTreeMap::new(),
        }
    }

    pub(super) fn check(mut self, path: &Path, raw: raw::RawConfig) -> Config {
        let gateway = self.gateway(raw.gateway);
        let listeners = self.listeners(raw.listener);
        let deploy = self.deploy(raw.deploy);
        self.profiles(raw.profile);
        let profiles = self.typed_profiles(&gateway);
        let (mut handlers, mut handler_deploy) =
            self.handlers(&gateway, raw.handler, Section::Handler);
        let (components, component_deploy) =
            self.handlers(&gateway, raw.component, Section::Component);
        for (name, component) in components {
            if handlers.contains_key(&name) {
                self.problems.push(
                    format!("component.{name}"),
                    format!("[handler.{name}] has the same name; handlers and components share one namespace"),
                );
                continue;
            }
            handlers.insert(name, component);
        }
        for (name, deploy) in component_deploy {
            handler_deploy.entry(name).or_insert(deploy);
        }
        self.composition(&handlers);
        let prewarmed = handlers
            .values()
            .map(|handler| handler.prewarm)
            .fold(0, usize::saturating_add);
        if prewarmed > gateway.max_instances as usize {
            self.problems.push(
                "gateway.max_instances",
                format!(
                    "{} is less than the {prewarmed} instances the handlers' pool.prewarm settings keep ready",
                    gateway.max_instances
                ),
            );
        }
        let routes = self.routes(&handlers, raw.route);
        let clustered = raw.cluster.is_some();
        let cluster = raw.cluster.and_then(|cluster| self.cluster(cluster));
        if clustered && deploy.state_dir.is_none() {
            self.problems.push(
                "deploy.state_dir",
                "a cluster's nodes keep the versions they share on disk: set [deploy] state_dir",
            );
        }
        let acme = raw.acme.map(|acme| self.acme(acme, &listeners));
        if acme.is_none() {
            for (index, listener) in listeners.iter().enumerate() {
                if listener
                    .tls
                    .as_ref()
                    .is_some_and(|tls| !tls.acme.is_empty())
                {
                    self.problems.push(
                        format!("listener[{index}].tls.acme"),
                        "needs an [acme] section (the CA's directory, an email, where to keep certificates)",
                    );
                }
            }
        }
        let admin_token = raw
            .admin
            .as_ref()
            .and_then(|admin| admin.token_file.clone())
            .map(|path| self.resolve(path));
        let admin = match raw.admin {
            None => Some(DEFAULT_ADMIN),
            Some(admin) if admin.enabled == Some(false) => None,
            Some(admin) => match admin.addr {
                None => Some(DEFAULT_ADMIN),
                Some(addr) => self.admin(&addr, &listeners),
            },
        };
        if let Some(addr) = admin.filter(|addr| !addr.ip().is_loopback())
            && admin_token.is_none()
        {
            self.problems.push(
                "admin.addr",
                format!(
                    "{addr} is not a loopback address: set admin.token_file (the bearer \
                     token its reload endpoint will require), or listen on 127.0.0.1"
                ),
            );
        }
        Config {
            source: path.to_path_buf(),
            includes: Vec::new(),
            origins: super::Origins::default(),
            gateway,
            listeners,
            handlers,
            routes,
            admin,
            admin_token,
            acme,
            deploy,
            handler_deploy,
            profiles,
            cluster,
        }
    }

    fn resolve(&self, path: PathBuf) -> PathBuf {
        if path.is_absolute() {
            path
        } else {
            self.base.join(path)
        }
    }

    fn duration(&mut self, key: &str, text: Option<String>, default: Duration) -> Duration {
        let Some(text) = text else { return default };
        match humantime::parse_duration(&text) {
            Ok(duration) if duration > MAX_DURATION => {
                self.problems.push(
                    key,
                    format!("`{text}` is too long: at most 365 days (each is added to a clock)"),
                );
                default
            }
            Ok(duration) if !duration.is_zero() => duration,
            Ok(_) => {
                self.problems.push(key, "must be longer than zero");
                default
            }
            Err(error) => {
                self.problems.push(
                    key,
                    format!(
                        "`{text}` is not a duration ({error}); write e.g. \"250ms\" or \"10s\""
                    ),
                );
                default
            }
        }
    }

    /// A byte size of at least `minimum` (`minimum_words` in messages).
    fn size(
        &mut self,
        key: &str,
        text: Option<String>,
        minimum: u64,
        minimum_words: &str,
        default: u64,
    ) -> u64 {
        let Some(text) = text else { return default };
        match text.parse::<ByteSize>() {
            Ok(size) if size.as_u64() > MAX_SIZE => {
                self.problems
                    .push(key, format!("`{text}` is too large: at most 16GiB"));
                default
            }
            Ok(size) if size.as_u64() >= minimum => size.as_u64(),
            Ok(_) => {
                self.problems
                    .push(key, format!("must be at least {minimum_words}"));
                default
            }
            Err(error) => {
                self.problems.push(
                    key,
                    format!("`{text}` is not a size ({error}); write e.g. \"128MiB\""),
                );
                default
            }
        }
    }

    /// A count of at least one.
    fn count(&mut self, key: &str, value: Option<usize>, default: usize) -> usize {
        match value {
            None => default,
            Some(0) => {
                self.problems.push(key, "must be at least 1");
                default
            }
            Some(count) if count > MAX_COUNT => {
                self.problems
                    .push(key, format!("{count} is too many: at most {MAX_COUNT}"));
                default
            }
            Some(count) => count,
        }
    }

    /// `raw` limits at `key`, each unset one from `defaults`.
    /// `env = [...]` or `env = "all"`.
    fn env_grant(&mut self, key: &str, raw: raw::RawEnv) -> EnvGrant {
        match raw {
            raw::RawEnv::Word(word) if word == "all" => EnvGrant::All,
            raw::RawEnv::Word(word) => {
                self.problems.push(
                    format!("{key}.env"),
                    format!("`{word}` is neither a list of keys nor \"all\""),
                );
                EnvGrant::Keys(Vec::new())
            }
            raw::RawEnv::Keys(keys) => {
                for (index, variable) in keys.iter().enumerate() {
                    if variable.is_empty() || variable.contains('=') || variable.contains('\0') {
                        self.problems.push(
                            format!("{key}.env[{index}]"),
                            format!("`{variable}` is not an environment variable name"),
                        );
                    }
                }
                EnvGrant::Keys(keys)
            }
        }
    }

    fn limits(
        &mut self,
        key: &str,
        raw: raw::RawLimits,
        defaults: &HandlerLimits,
    ) -> HandlerLimits {
        HandlerLimits {
            timeout: self.duration(&format!("{key}.timeout"), raw.timeout, defaults.timeout),
            memory: self.size(
                &format!("{key}.memory"),
                raw.memory,
                64 * 1024,
                "one wasm page (64KiB)",
                defaults.memory,
            ),
            body: self.size(&format!("{key}.body"), raw.body, 0, "0B", defaults.body),
            concurrency: self.count(
                &format!("{key}.concurrency"),
                raw.concurrency,
                defaults.concurrency,
            ),
            fuel: match raw.fuel {
                Some(0) => {
                    self.problems.push(
                        format!("{key}.fuel"),
                        "0 leaves no instruction to run; leave it out for no CPU budget",
                    );
                    defaults.fuel
                }
                Some(fuel) => Some(fuel),
                None => defaults.fuel,
            },
        }
    }

    fn stream(&mut self, key: &str, raw: raw::RawStream) -> StreamLimits {
        let defaults = StreamLimits::default();
        let max_message = self.size(
            &format!("{key}.max_message"),
            raw.max_message,
            128,
            "128B",
            defaults.max_message as u64,
        );
        let slow_consumer = match raw.slow_consumer.as_deref() {
            None | Some("close") => SlowConsumer::Close,
            Some("drop") => SlowConsumer::Drop,
            Some(other) => {
                self.problems.push(
                    format!("{key}.slow_consumer"),
                    format!("`{other}` is not a policy; write \"close\" (default) or \"drop\""),
                );
                SlowConsumer::Close
            }
        };
        StreamLimits {
            max_message: usize::try_from(max_message).unwrap_or(usize::MAX),
            max_connections: self.count(
                &format!("{key}.max_connections"),
                raw.max_connections,
                defaults.max_connections,
            ),
            idle_timeout: self.duration(
                &format!("{key}.idle_timeout"),
                raw.idle_timeout,
                defaults.idle_timeout,
            ),
            send_queue: self.count(
                &format!("{key}.send_queue"),
                raw.send_queue,
                defaults.send_queue,
            ),
            slow_consumer,
        }
    }

    fn gateway(&mut self, raw: raw::RawGateway) -> GatewaySettings {
        let handlers_dir = self.resolve(
            raw.handlers_dir
                .unwrap_or_else(|| PathBuf::from(DEFAULT_HANDLERS_DIR)),
        );
        let grace_period = self.duration(
            "gateway.grace_period",
            raw.grace_period,
            DEFAULT_GRACE_PERIOD,
        );
        let tls_handshake_timeout = self.duration(
            "gateway.tls_handshake_timeout",
            raw.tls_handshake_timeout,
            DEFAULT_TLS_HANDSHAKE_TIMEOUT,
        );
        let mut max_instances = raw.max_instances.unwrap_or(DEFAULT_MAX_INSTANCES);
        if max_instances == 0 {
            self.problems
                .push("gateway.max_instances", "must be at least 1");
        }
        if max_instances > MAX_INSTANCES {
            // The pooling allocator reserves address space for each up front.
            self.problems.push(
                "gateway.max_instances",
                format!("{max_instances} is too many: at most {MAX_INSTANCES}"),
            );
            max_instances = DEFAULT_MAX_INSTANCES;
        }
        // A quarter, so a site's WebSockets never take its last HTTP instance.
        let http_reserve = raw.http_reserve.unwrap_or(max_instances / 4);
        if http_reserve > max_instances {
            self.problems.push(
                "gateway.http_reserve",
                format!("{http_reserve} is more than gateway.max_instances ({max_instances})"),
            );
        }
        let cache_dir = match raw.cache_dir {
            Some(dir) if dir.as_os_str().is_empty() => None,
            Some(dir) => Some(self.resolve(dir)),
            None => default_cache_dir(),
        };
        GatewaySettings {
            handlers_dir,
            grace_period,
            tls_handshake_timeout,
            max_instances,
            http_reserve: http_reserve.min(max_instances),
            auto_routes: raw.auto_routes.unwrap_or(false),
            watch: raw.watch.unwrap_or(true),
            cache_dir,
            handover_socket: raw
                .handover_socket
                .filter(|path| !path.as_os_str().is_empty())
                .map(|path| self.resolve(path)),
            stream_keep_alive: self.duration(
                "gateway.stream_keep_alive",
                raw.stream_keep_alive,
                DEFAULT_STREAM_KEEP_ALIVE,
            ),
            limits: self.limits("gateway.limits", raw.limits, &HandlerLimits::default()),
            request_id_header: match raw.request_id_header.as_deref() {
                None => http::HeaderName::from_static("x-request-id"),
                Some(name) => http::HeaderName::from_bytes(name.as_bytes()).unwrap_or_else(|_| {
                    self.problems.push(
                        "gateway.request_id_header",
                        format!("`{name}` is not a header name"),
                    );
                    http::HeaderName::from_static("x-request-id")
                }),
            },
            access_log: match raw.access_log.as_deref() {
                None | Some("text") => AccessLog::Text,
                Some("json") => AccessLog::Json,
                Some("off") => AccessLog::Off,
                Some(other) => {
                    self.problems.push(
                        "gateway.access_log",
                        format!("`{other}` is not a format; write \"text\" (default), \"json\" or \"off\""),
                    );
                    AccessLog::Text
                }
            },
        }
    }

    fn listeners(&mut self, raw: Vec<raw::RawListener>) -> Vec<ListenerConfig> {
        if raw.is_empty() {
            self.problems
                .push("listener", "at least one [[listener]] is required");
        }
        let mut seen = HashSet::new();
        let mut listeners = Vec::new();
        for (index, listener) in raw.into_iter().enumerate() {
            let key = format!("listener[{index}].addr");
            let addr = match listener.addr.parse::<SocketAddr>() {
                Ok(addr) => addr,
                Err(error) => {
                    self.problems.push(
                        key,
                        format!(
                            "`{}` is not a socket address ({error}); write e.g. \"127.0.0.1:8080\" or \"[::]:443\"",
                            listener.addr
                        ),
                    );
                    continue;
                }
            };
            if addr.port() != 0 && !seen.insert(addr) {
                self.problems.push(
                    key,
                    format!("{addr} is already used by an earlier listener"),
                );
            }
            let limits = self.listener_limits(index, &listener);
            let redirect = self.redirect(index, &listener);
            let hsts = self.hsts(index, &listener);
            let trusted_proxies = self.trusted_proxies(index, &listener.trusted_proxies);
            let proxy_protocol = listener.proxy_protocol.unwrap_or(false);
            let proxy_from = self.networks(
                &format!("listener[{index}].proxy_from"),
                &listener.proxy_from,
            );
            if proxy_protocol && listener.proxy_from.is_empty() {
                self.problems.push(
                    format!("listener[{index}].proxy_from"),
                    "required with proxy_protocol = true: the balancers allowed to say who the \
                     client is, e.g. [\"10.0.0.0/8\"]",
                );
            } else if !proxy_protocol && !listener.proxy_from.is_empty() {
                self.problems.push(
                    format!("listener[{index}].proxy_from"),
                    "applies only with proxy_protocol = true",
                );
            }
            let tls = listener.tls.map(|tls| self.tls(index, tls));
            listeners.push(ListenerConfig {
                addr,
                tls,
                limits,
                redirect,
                hsts,
                proxy_protocol,
                proxy_from,
                trusted_proxies,
            });
        }
        listeners
    }

    fn redirect(&mut self, index: usize, raw: &raw::RawListener) -> Option<HttpsRedirect> {
        let key = |name: &str| format!("listener[{index}].{name}");
        let port = raw.redirect_port.unwrap_or(443);
        if raw.redirect_port == Some(0) {
            self.problems
                .push(key("redirect_port"), "must be a port, 1 to 65535");
        }
        match raw.redirect.as_deref() {
            None => {
                if raw.redirect_port.is_some() {
                    self.problems.push(
                        key("redirect_port"),
                        "only means something with redirect = \"https\"",
                    );
                }
                None
            }
            Some("https") if raw.tls.is_some() => {
                self.problems.push(
                    key("redirect"),
                    "a TLS listener cannot redirect to HTTPS; set it on the plain listener",
                );
                None
            }
            Some("https") => Some(HttpsRedirect { port }),
            Some(other) => {
                self.problems.push(
                    key("redirect"),
                    format!("`{other}` is not a redirect; the one there is, is \"https\""),
                );
                None
            }
        }
    }

    fn hsts(&mut self, index: usize, raw: &raw::RawListener) -> Option<http::HeaderValue> {
        let hsts = raw.hsts.as_ref()?;
        let key = format!("listener[{index}].hsts");
        if raw.tls.is_none() {
            self.problems.push(
                key,
                "HSTS is only honoured over HTTPS; set it on a listener with tls",
            );
            return None;
        }
        let max_age = self.duration(
            &format!("{key}.max_age"),
            Some(hsts.max_age.clone()),
            Duration::ZERO,
        );
        let mut value = format!("max-age={}", max_age.as_secs());
        if hsts.include_subdomains {
            value.push_str("; includeSubDomains");
        }
        if hsts.preload {
            value.push_str("; preload");
        }
        http::HeaderValue::from_str(&value).ok()
    }

    fn trusted_proxies(&mut self, index: usize, raw: &[String]) -> Vec<IpNet> {
        self.networks(&format!("listener[{index}].trusted_proxies"), raw)
    }

    /// Address blocks at `key`, one problem per entry that is not one.
    fn networks(&mut self, key: &str, raw: &[String]) -> Vec<IpNet> {
        raw.iter()
            .enumerate()
            .filter_map(|(number, text)| {
                let net = IpNet::parse(text);
                if net.is_none() {
                    self.problems.push(
                        format!("{key}[{number}]"),
                        format!("`{text}` is not an address or block; write e.g. \"10.0.0.0/8\" or \"127.0.0.1\""),
                    );
                }
                net
            })
            .collect()
    }

    fn listener_limits(&mut self, index: usize, raw: &raw::RawListener) -> ListenerLimits {
        let key = |name: &str| format!("listener[{index}].{name}");
        let defaults = ListenerLimits::default();
        let max_header_size = self.size(
            &key("max_header_size"),
            raw.max_header_size.clone(),
            8192,
            "8KiB",
            defaults.max_header_size as u64,
        );
        let h2_max_streams = match raw.h2_max_streams {
            Some(0) => {
                self.problems
                    .push(key("h2_max_streams"), "must be at least 1");
                defaults.h2_max_streams
            }
            other => other.unwrap_or(defaults.h2_max_streams),
        };
        ListenerLimits {
            max_connections: self.count(
                &key("max_connections"),
                raw.max_connections,
                defaults.max_connections,
            ),
            header_timeout: self.duration(
                &key("header_timeout"),
                raw.header_timeout.clone(),
                defaults.header_timeout,
            ),
            max_header_size: usize::try_from(max_header_size).unwrap_or(usize::MAX),
            max_headers: self.count(&key("max_headers"), raw.max_headers, defaults.max_headers),
            h2_max_streams,
            idle_timeout: self.duration(
                &key("idle_timeout"),
                raw.idle_timeout.clone(),
                defaults.idle_timeout,
            ),
            body_timeout: self.duration(
                &key("body_timeout"),
                raw.body_timeout.clone(),
                defaults.body_timeout,
            ),
            write_timeout: self.duration(
                &key("write_timeout"),
                raw.write_timeout.clone(),
                defaults.write_timeout,
            ),
            h2_keep_alive: self.duration(
                &key("h2_keep_alive"),
                raw.h2_keep_alive.clone(),
                defaults.h2_keep_alive,
            ),
        }
    }

    fn admin(&mut self, addr: &str, listeners: &[ListenerConfig]) -> Option<SocketAddr> {
        let key = "admin.addr";
        match addr.parse::<SocketAddr>() {
            Ok(addr)
                if addr.port() != 0 && listeners.iter().any(|listener| listener.addr == addr) =>
            {
                self.problems.push(
                    key,
                    format!("{addr} is also a [[listener]]: the admin API must not be public"),
                );
                None
            }
            Ok(addr) => Some(addr),
            Err(error) => {
                self.problems
                    .push(key, format!("`{addr}` is not a socket address ({error})"));
                None
            }
        }
    }

    fn handlers(
        &mut self,
        gateway: &GatewaySettings,
        raw: BTreeMap<String, raw::RawHandler>,
        section: Section,
    ) -> (
        BTreeMap<HandlerName, HandlerConfig>,
        BTreeMap<HandlerName, HandlerDeploy>,
    ) {
        let handlers_dir = &gateway.handlers_dir;
        let mut handlers = BTreeMap::new();
        let mut deploys = BTreeMap::new();
        for (name, mut handler) in raw {
            let key = format!("{}.{name}", section.key());
            let Some(handler_name) = HandlerName::parse(&name) else {
                self.problems.push(
                    &key,
                    format!(
                        "a {} name is lowercase letters, digits, `-` and `_`, starting with a letter",
                        section.key()
                    ),
                );
                continue;
            };
            if section == Section::Component {
                self.handler_only(&key, &mut handler);
            }
            self.apply_profile(&key, &mut handler);
            let files = self.files(&key, std::mem::take(&mut handler.files));
            let resident = self.resident(&key, &mut handler, section);
            let composed = self.composed(&key, &mut handler, section);
            let path = match handler.path {
                Some(path) => self.resolve(path),
                None => handlers_dir.join(format!("{name}.wasm")),
            };
            let deploy = self.handler_deploy(
                &key,
                handler.split.take(),
                handler.rollout.take(),
                handler.trusted_keys.take(),
            );
            deploys.insert(handler_name.clone(), deploy);
            let limits = self.limits(&format!("{key}.limits"), handler.limits, &gateway.limits);
            let env = self.env_grant(&key, handler.env);
            let outbound = handler
                .outbound
                .iter()
                .enumerate()
                .filter_map(|(index, entry)| {
                    let rule = OutboundRule::parse(entry);
                    if rule.is_none() {
                        self.problems.push(
                            format!("{key}.outbound[{index}]"),
                            format!("`{entry}` is not a host; write \"api.example.com\", \"api.example.com:8443\" or \"*.example.com\""),
                        );
                    }
                    rule
                })
                .collect();
            let world = match handler.world.as_deref() {
                _ if section == Section::Component => HandlerWorld::Component,
                None | Some("http") => HandlerWorld::Http,
                Some("websocket") => HandlerWorld::Websocket,
                Some("sse") => HandlerWorld::Sse,
                Some(other) => {
                    self.problems.push(
                        format!("{key}.world"),
                        format!(
                            "`{other}` is not a world; write \"http\" (default), \"websocket\" or \"sse\""
                        ),
                    );
                    HandlerWorld::Http
                }
            };
            let topic_scope = match handler.topic_scope.as_deref() {
                None => None,
                Some(scope) => match HandlerName::parse(scope) {
                    Some(_) => Some(std::sync::Arc::from(scope)),
                    None => {
                        self.problems.push(
                            format!("{key}.topic_scope"),
                            format!("`{scope}` is not a scope name (letters, digits, `-`, `_`)"),
                        );
                        None
                    }
                },
            };
            let explicit_streams = handler
                .stream
                .as_ref()
                .is_some_and(|stream| stream.max_connections.is_some());
            let mut stream = match handler.stream {
                None => StreamLimits::default(),
                Some(raw) => {
                    if world == HandlerWorld::Http {
                        self.problems.push(
                            format!("{key}.stream"),
                            "stream limits apply to handlers with world = \"websocket\" or \"sse\"",
                        );
                    }
                    self.stream(&format!("{key}.stream"), raw)
                }
            };
            if world != HandlerWorld::Http {
                // Each stream holds an instance: no cap may promise more than
                // the instances streams are allowed.
                let budget = gateway.stream_instances();
                if budget == 0 {
                    self.problems.push(
                        format!("{key}.world"),
                        "streams need instances, and gateway.http_reserve leaves none of gateway.max_instances",
                    );
                } else if explicit_streams && stream.max_connections > budget {
                    self.problems.push(
                        format!("{key}.stream.max_connections"),
                        format!(
                            "{} is more than the {budget} instances streams may hold \
                             (gateway.max_instances minus gateway.http_reserve)",
                            stream.max_connections
                        ),
                    );
                }
                stream.max_connections = stream.max_connections.min(budget);
            }
            let reuse = handler
                .reuse
                .take()
                .map(|raw| self.reuse(&format!("{key}.reuse"), raw, world, limits.fuel));
            let config = HandlerConfig {
                path,
                prewarm: match section {
                    Section::Handler => handler.pool.prewarm.unwrap_or(DEFAULT_PREWARM),
                    // Instantiated by whoever imports it, never pooled.
                    Section::Component => 0,
                },
                env,
                outbound,
                allow_private: handler.allow_private.unwrap_or(false),
                topic_scope,
                limits,
                world,
                stream,
                reuse,
                imports: composed.imports,
                interceptors: composed.interceptors,
                capabilities: composed.capabilities,
                config: composed.config,
                subscription: composed.subscription,
                files,
                resident,
            };
            self.grants_cover(&key, &config);
            handlers.insert(handler_name, config);
        }
        (handlers, deploys)
    }

    fn reuse(
        &mut self,
        key: &str,
        raw: raw::RawReuse,
        world: HandlerWorld,
        fuel: Option<u64>,
    ) -> Reuse {
        let defaults = Reuse::default();
        if world != HandlerWorld::Http {
            self.problems.push(
                key,
                "applies to HTTP handlers: a WebSocket or SSE stream already keeps its instance",
            );
        }
        let max_requests = raw.max_requests.unwrap_or(defaults.max_requests);
        if max_requests == 0 || max_requests as usize > MAX_COUNT {
            self.problems.push(
                format!("{key}.max_requests"),
                format!("{max_requests} is not between 1 and {MAX_COUNT}"),
            );
        }
        let max_concurrent = raw.max_concurrent.unwrap_or(defaults.max_concurrent);
        if max_concurrent > 1 && fuel.is_some() {
            self.problems.push(
                format!("{key}.max_concurrent"),
                "a shared instance cannot give each of its requests its own limits.fuel: leave one of them out",
            );
        }
        if max_concurrent == 0 || max_concurrent > MAX_CONCURRENT_PER_INSTANCE {
            self.problems.push(
                format!("{key}.max_concurrent"),
                format!("{max_concurrent} is not between 1 and {MAX_CONCURRENT_PER_INSTANCE}"),
            );
        }
        Reuse {
            max_requests: max_requests.clamp(1, MAX_COUNT as u32),
            max_concurrent: max_concurrent.clamp(1, MAX_CONCURRENT_PER_INSTANCE),
            idle: self.duration(&format!("{key}.idle"), raw.idle, defaults.idle),
        }
    }

    fn routes(
        &mut self,
        handlers: &BTreeMap<HandlerName, HandlerConfig>,
        raw: Vec<raw::RawRoute>,
    ) -> Vec<RouteConfig> {
        let mut seen = HashSet::new();
        let mut routes = Vec::new();
        for (index, route) in raw.into_iter().enumerate() {
            let key = format!("route[{index}]");
            let Some((handler, action)) = self.route_action(&key, handlers, &route) else {
                continue;
            };
            let host = route.host.and_then(|host| match check_server_name(&host) {
                Ok(host) => Some(host),
                Err(reason) => {
                    self.problems.push(format!("{key}.host"), reason);
                    None
                }
            });
            let parsed = match action {
                RouteAction::Invoke { .. } => parse_invoke_path(&route.path),
                _ => parse_route_path(&route.path),
            };
            let path = match parsed {
                Ok(path) => path,
                Err(reason) => {
                    self.problems.push(format!("{key}.path"), reason);
                    continue;
                }
            };
            if !seen.insert((host.clone(), path.clone())) {
                let on_host = host
                    .as_deref()
                    .map(|host| format!(" on host {host}"))
                    .unwrap_or_default();
                self.problems.push(
                    format!("{key}.path"),
                    format!("duplicate route: `{path}`{on_host} is already routed by an earlier [[route]]"),
                );
                continue;
            }
            let middleware = if action == RouteAction::Handler {
                self.middleware(&key, &handler, handlers, &route.middleware)
            } else {
                if !route.middleware.is_empty() {
                    self.problems.push(
                        format!("{key}.middleware"),
                        "middleware applies to routes that serve a handler",
                    );
                }
                Vec::new()
            };
            let reads_body = matches!(action, RouteAction::Handler | RouteAction::Publish(_));
            let edge = self.route_edge(
                &key,
                route.cors,
                route.headers,
                route.compress,
                route.decompress.then_some(reads_body),
            );
            routes.push(RouteConfig {
                index,
                host,
                path,
                handler,
                middleware,
                action,
                edge,
            });
        }
        routes
    }
}

/// systemd's `CacheDirectory=`, else the XDG cache, else none.
fn default_cache_dir() -> Option<PathBuf> {
    default_dir("CACHE_DIRECTORY", "XDG_CACHE_HOME", ".cache")
}

/// The directory systemd names in `systemd` (its `*Directory=` setting),
/// else `wasmgate` under the XDG directory in `xdg`, else under `home_dir`
/// in the home directory; none when none of them is set.
fn default_dir(systemd: &str, xdg: &str, home_dir: &str) -> Option<PathBuf> {
    let var = |name| {
        std::env::var_os(name)
            .filter(|value| !value.is_empty())
            .map(PathBuf::from)
    };
    var(systemd)
        .or_else(|| var(xdg).map(|dir| dir.join("wasmgate")))
        .or_else(|| var("HOME").map(|home| home.join(home_dir).join("wasmgate")))
}

/// A certificate name: a host name, or `*.` and a host name of at least two labels.
fn check_server_name(name: &str) -> Result<String, String> {
    let (wildcard, rest) = match name.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, name),
    };
    let host = check_host(rest).map_err(|_| {
        format!("`{name}` is not a server name; write e.g. \"example.com\" or \"*.example.com\"")
    })?;
    if wildcard && !host.contains('.') {
        return Err(format!(
            "`{name}` is too wide; a wildcard covers one label under a domain, e.g. \"*.example.com\""
        ));
    }
    Ok(if wildcard { format!("*.{host}") } else { host })
}

pub(super) fn check_host(host: &str) -> Result<String, String> {
    let lower = host.to_ascii_lowercase();
    let valid = !lower.is_empty()
        && lower.split('.').all(|label| {
            !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if valid {
        Ok(lower)
    } else {
        Err(format!(
            "`{host}` is not a host name; write the bare name, e.g. \"example.com\" (no scheme, port or path)"
        ))
    }
}

pub(super) fn parse_route_path(path: &str) -> Result<RoutePath, String> {
    if !path.starts_with('/') {
        return Err(format!("`{path}` must start with `/`"));
    }
    if path.contains(['?', '#']) {
        return Err(format!("`{path}` must not contain a query or fragment"));
    }
    let (pattern, prefix) = match path.strip_suffix("/*") {
        Some(prefix) => (prefix, true),
        None => (path, false),
    };
    if pattern.contains('*') {
        return Err(format!(
            "`{path}`: `*` is only allowed as a final `/*` segment (prefix match)"
        ));
    }
    Ok(if prefix {
        RoutePath::Prefix(pattern.to_string())
    } else {
        RoutePath::Exact(pattern.to_string())
    })
}
