use std::path::Path;

use super::check::{check_host, parse_route_path};
use super::*;

fn parse(text: &str) -> Result<Config, Invalid> {
    Config::parse(Path::new("/etc/wasmgate/gw.toml"), text)
}

fn problems(text: &str) -> Vec<String> {
    match parse(text) {
        Ok(_) => panic!("expected problems in:\n{text}"),
        Err(invalid) => invalid.problems.0.iter().map(ToString::to_string).collect(),
    }
}

const MINIMAL: &str = r#"
[[listener]]
addr = "127.0.0.1:8080"

[handler.hello]

[[route]]
path = "/"
handler = "hello"
"#;

#[test]
fn minimal_config_gets_defaults_and_paths_relative_to_the_file() {
    let config = parse(MINIMAL).expect("valid");
    assert_eq!(
        config.gateway.handlers_dir,
        Path::new("/etc/wasmgate/handlers")
    );
    assert_eq!(config.gateway.grace_period, Duration::from_secs(10));
    let hello = &config.handlers[&HandlerName::parse("hello").expect("name")];
    assert_eq!(hello.path, Path::new("/etc/wasmgate/handlers/hello.wasm"));
    assert_eq!(hello.prewarm, DEFAULT_PREWARM);
    assert_eq!(hello.limits.timeout, DEFAULT_TIMEOUT);
    assert_eq!(config.routes[0].path, RoutePath::Exact("/".into()));
}

#[test]
fn full_config_is_typed() {
    let config = parse(
        r#"
[gateway]
handlers_dir = "/srv/wasm"
grace_period = "250ms"
max_instances = 64

[[listener]]
addr = "[::1]:0"
tls = { cert = "certs/c.pem", key = "/k.pem" }

[handler.api]
path = "api/v2.wasm"
pool = { prewarm = 0 }
env = ["API_KEY"]
limits = { timeout = "2s", memory = "16MiB" }

[[route]]
host = "Example.COM"
path = "/api/*"
handler = "api"
"#,
    )
    .expect("valid");
    assert_eq!(config.gateway.grace_period, Duration::from_millis(250));
    assert_eq!(config.gateway.max_instances, 64);
    let tls = config.listeners[0].tls.as_ref().expect("tls");
    let pair = tls.default.as_ref().expect("default pair");
    assert_eq!(pair.cert, Path::new("/etc/wasmgate/certs/c.pem"));
    assert_eq!(pair.key, Path::new("/k.pem"));
    let api = &config.handlers[&HandlerName::parse("api").expect("name")];
    assert_eq!(api.path, Path::new("/etc/wasmgate/api/v2.wasm"));
    assert_eq!((api.prewarm, api.limits.memory), (0, 16 * 1024 * 1024));
    assert_eq!(api.limits.timeout, Duration::from_secs(2));
    assert_eq!(api.env, EnvGrant::Keys(vec!["API_KEY".into()]));
    assert_eq!(config.routes[0].host.as_deref(), Some("example.com"));
    assert_eq!(config.routes[0].path, RoutePath::Prefix("/api".into()));
}

#[test]
fn every_problem_is_reported_at_once_with_file_and_key() {
    let found = problems(
        r#"
[gateway]
grace_period = "soon"
colour = "blue"

[[listener]]
addr = "localhost"

[[listener]]
addr = "127.0.0.1:80"
tls = { cert = "c.pem", key = "k.pem", ciphers = "all" }

[[listener]]
addr = "127.0.0.1:80"

[handler.Hello]

[handler.ok]
limits = { memory = "lots" }

[[route]]
path = "/a"
handler = "missing"

[[route]]
path = "/b"
handler = "ok"

[[route]]
path = "/b"
handler = "ok"

[[route]]
path = "b/*/c"
handler = "ok"
"#,
    );
    let expected = [
        "gateway.colour: unknown key",
        "listener[1].tls.ciphers: unknown key",
        "gateway.grace_period: `soon` is not a duration",
        "listener[0].addr: `localhost` is not a socket address",
        "listener[2].addr: 127.0.0.1:80 is already used by an earlier listener",
        "handler.Hello: a handler name is lowercase",
        "handler.ok.limits.memory: `lots` is not a size",
        "route[0].handler: no [handler.missing] is configured",
        "route[2].path: duplicate route: `/b` is already routed",
        "route[3].path: `b/*/c` must start with `/`",
    ];
    for fragment in expected {
        assert!(
            found.iter().any(|problem| problem.contains(fragment)
                && problem.starts_with("/etc/wasmgate/gw.toml: ")),
            "missing {fragment:?} in {found:#?}"
        );
    }
    assert_eq!(found.len(), expected.len(), "{found:#?}");
}

#[test]
fn syntax_and_type_errors_name_the_place() {
    let syntax = problems("[[listener]\naddr = 1");
    assert_eq!(syntax.len(), 1);
    assert!(syntax[0].contains("(syntax (line 1"), "{syntax:?}");
    let wrong_type =
        problems("[[listener]]\naddr = \"127.0.0.1:1\"\n[gateway]\nmax_instances = \"many\"\n");
    assert_eq!(wrong_type.len(), 1);
    assert!(
        wrong_type[0].contains("gateway.max_instances (line 4"),
        "{wrong_type:?}"
    );
}

#[test]
fn a_config_needs_a_listener() {
    let found = problems("[handler.hello]\n");
    assert_eq!(
        found,
        ["/etc/wasmgate/gw.toml: listener: at least one [[listener]] is required"]
    );
}

#[test]
fn star_is_only_a_final_prefix_segment() {
    assert_eq!(parse_route_path("/*"), Ok(RoutePath::Prefix(String::new())));
    assert_eq!(
        parse_route_path("/a/b/*"),
        Ok(RoutePath::Prefix("/a/b".into()))
    );
    assert!(parse_route_path("/a*").is_err());
    assert!(parse_route_path("/a/*/b").is_err());
    assert!(parse_route_path("/a?x=1").is_err());
}

#[test]
fn hosts_are_bare_names() {
    assert_eq!(check_host("API.example.com"), Ok("api.example.com".into()));
    assert!(check_host("example.com:443").is_err());
    assert!(check_host("https://example.com").is_err());
    assert!(check_host("").is_err());
}

#[test]
fn prewarmed_instances_must_fit_the_instance_limit() {
    let found = problems(
        "[gateway]\nmax_instances = 10\n[[listener]]\naddr = \"127.0.0.1:0\"\n\
         [handler.a]\npool = { prewarm = 8 }\n[handler.b]\npool = { prewarm = 8 }\n",
    );
    assert_eq!(
        found,
        [
            "/etc/wasmgate/gw.toml: gateway.max_instances: 10 is less than the 16 instances the handlers' pool.prewarm settings keep ready"
        ]
    );
}

#[test]
fn stream_limits_are_typed_and_checked() {
    let config = parse(&format!(
        "{MINIMAL}\n[handler.chat]\nworld = \"websocket\"\n\
         stream = {{ max_message = \"64KiB\", max_connections = 50, idle_timeout = \"90s\", \
         send_queue = 8, slow_consumer = \"drop\" }}\n"
    ))
    .expect("valid");
    let chat = &config.handlers[&HandlerName::parse("chat").expect("name")];
    assert_eq!(
        chat.stream,
        StreamLimits {
            max_message: 64 * 1024,
            max_connections: 50,
            idle_timeout: Duration::from_secs(90),
            send_queue: 8,
            slow_consumer: SlowConsumer::Drop,
        }
    );
    let found = problems(&format!(
        "{MINIMAL}\n[handler.hello.stream]\nmax_connections = 0\nslow_consumer = \"block\"\n\
         max_message = \"12\"\n"
    ));
    assert_eq!(
        found,
        [
            "/etc/wasmgate/gw.toml: handler.hello.stream: stream limits apply to handlers with world = \"websocket\" or \"sse\"",
            "/etc/wasmgate/gw.toml: handler.hello.stream.max_message: must be at least 128B",
            "/etc/wasmgate/gw.toml: handler.hello.stream.slow_consumer: `block` is not a policy; write \"close\" (default) or \"drop\"",
            "/etc/wasmgate/gw.toml: handler.hello.stream.max_connections: must be at least 1",
        ]
    );
}

#[test]
fn the_admin_listener_is_on_by_default_on_loopback_and_can_be_turned_off() {
    let config = parse(MINIMAL).expect("valid");
    assert_eq!(config.admin, Some("127.0.0.1:9090".parse().expect("addr")));
    assert_eq!(config.gateway.access_log, AccessLog::Text);
    let off = parse(&format!("{MINIMAL}\n[admin]\nenabled = false\n")).expect("valid");
    assert_eq!(off.admin, None);
    let found = problems(&format!("[gateway]\naccess_log = \"xml\"\n{MINIMAL}"));
    assert_eq!(
        found,
        [
            "/etc/wasmgate/gw.toml: gateway.access_log: `xml` is not a format; write \"text\" (default), \"json\" or \"off\""
        ]
    );
}

#[test]
fn env_grants_and_outbound_rules_are_checked() {
    let config = parse(&format!(
        "{MINIMAL}\n[handler.api]\nenv = \"all\"\noutbound = [\"api.example.com\", \"*.example.org:8443\"]\n"
    ))
    .expect("valid");
    let api = &config.handlers[&HandlerName::parse("api").expect("name")];
    assert_eq!(api.env, EnvGrant::All);
    assert_eq!(
        api.outbound,
        [
            OutboundRule {
                host: "api.example.com".into(),
                wildcard: false,
                port: None
            },
            OutboundRule {
                host: "example.org".into(),
                wildcard: true,
                port: Some(8443)
            },
        ]
    );
    let found = problems(&format!(
        "{MINIMAL}\n[handler.api]\nenv = \"everything\"\noutbound = [\"http://x\", \"ok.example\"]\n"
    ));
    assert_eq!(
        found,
        [
            "/etc/wasmgate/gw.toml: handler.api.env: `everything` is neither a list of keys nor \"all\"",
            "/etc/wasmgate/gw.toml: handler.api.outbound[0]: `http://x` is not a host; write \"api.example.com\", \"api.example.com:8443\" or \"*.example.com\"",
        ]
    );
}

#[test]
fn acme_settings_and_names_are_typed() {
    let config = parse(
        r#"
[[listener]]
addr = "127.0.0.1:8443"
tls = { acme = ["Example.com", "www.example.com"] }

[acme]
email = "ops@example.com"
storage = "/var/lib/wasmgate/acme"
renew_before = "20d"

[handler.hello]

[[route]]
path = "/"
handler = "hello"
"#,
    )
    .expect("valid");
    let tls = config.listeners[0].tls.as_ref().expect("tls");
    assert_eq!(tls.default, None);
    assert_eq!(tls.acme, ["example.com", "www.example.com"]);
    let acme = config.acme.expect("acme");
    assert_eq!(acme.directory, LETS_ENCRYPT);
    assert_eq!(acme.contact, ["mailto:ops@example.com"]);
    assert_eq!(acme.storage, Path::new("/var/lib/wasmgate/acme"));
    assert_eq!(acme.challenge, AcmeChallenge::TlsAlpn01);
    assert_eq!(acme.renew_before, Some(Duration::from_secs(20 * 86_400)));
    assert_eq!(acme.directory_ca, None);
}

#[test]
fn acme_mistakes_are_reported_one_per_line() {
    let found = problems(
        r#"
[[listener]]
addr = "127.0.0.1:8443"
tls = { acme = ["*.example.com", "10.0.0.1", "a.example", "A.example"] }

[[listener]]
addr = "127.0.0.1:9443"
tls = { cert = "c.pem" }

[[listener]]
addr = "127.0.0.1:10443"
tls = {}

[acme]
directory = "http://ca.example/dir"
email = "ops"
challenge = "http-01"

[handler.hello]

[[route]]
path = "/"
handler = "hello"
"#,
    );
    let file = "/etc/wasmgate/gw.toml";
    assert_eq!(
        found,
        [
            format!(
                "{file}: listener[0].tls.acme[0]: `*.example.com`: a wildcard certificate needs the dns-01 challenge, which wasmgate does not answer; list the names, or give a certificate with sni"
            ),
            format!(
                "{file}: listener[0].tls.acme[1]: `10.0.0.1`: certificates are obtained for DNS names, not addresses"
            ),
            format!(
                "{file}: listener[0].tls.acme[3]: `a.example` is already served by another entry of this listener"
            ),
            format!("{file}: listener[1].tls.key: the certificate needs its private key"),
            format!(
                "{file}: listener[2].tls: give a certificate (cert and key) or names to obtain one for (acme = [\"example.com\"])"
            ),
            format!(
                "{file}: acme.directory: `http://ca.example/dir` is not an https:// URL of an ACME directory"
            ),
            format!("{file}: acme.email: `ops` is not an email address"),
            format!(
                "{file}: acme.challenge: http-01 is answered on a plain listener (port 80); add one, or use \"tls-alpn-01\""
            ),
        ]
    );
    let found = problems(&format!(
        "{MINIMAL}\n[[listener]]\naddr = \"127.0.0.1:8443\"\ntls = {{ acme = [\"example.com\"] }}\n"
    ));
    assert_eq!(
        found,
        [format!(
            "{file}: listener[1].tls.acme: needs an [acme] section (the CA's directory, an email, where to keep certificates)"
        )]
    );
}

#[test]
fn streams_may_hold_what_the_http_reserve_leaves() {
    let text = |gateway: &str, stream: &str| {
        format!(
            "[gateway]\n{gateway}\n[[listener]]\naddr = \"127.0.0.1:0\"\n\n\
             [handler.ws]\nworld = \"websocket\"\n{stream}\n\n\
             [[route]]\npath = \"/ws/*\"\nhandler = \"ws\"\n"
        )
    };
    let ws = HandlerName::parse("ws").expect("name");
    // Defaults: a quarter of the instances is kept for HTTP, and the stream
    // cap (10,000 by default) comes down to what is left.
    let config = parse(&text("max_instances = 64", "")).expect("valid");
    assert_eq!(config.gateway.http_reserve, 16);
    assert_eq!(config.gateway.stream_instances(), 48);
    assert_eq!(config.handlers[&ws].stream.max_connections, 48);
    let config = parse(&text("max_instances = 64\nhttp_reserve = 4", "")).expect("valid");
    assert_eq!(config.handlers[&ws].stream.max_connections, 60);
    assert_eq!(
        problems(&text(
            "max_instances = 64",
            "stream = { max_connections = 49 }"
        )),
        [
            "/etc/wasmgate/gw.toml: handler.ws.stream.max_connections: 49 is more than the 48 \
          instances streams may hold (gateway.max_instances minus gateway.http_reserve)"
        ]
    );
    assert_eq!(
        problems(&text("max_instances = 8\nhttp_reserve = 9", "")),
        [
            "/etc/wasmgate/gw.toml: gateway.http_reserve: 9 is more than gateway.max_instances (8)",
            "/etc/wasmgate/gw.toml: handler.ws.world: streams need instances, and \
             gateway.http_reserve leaves none of gateway.max_instances",
        ]
    );
}

#[test]
fn values_that_would_overflow_at_run_time_are_refused_with_their_range() {
    let found = problems(
        r#"
[gateway]
max_instances = 10000000
grace_period = "400days"

[[listener]]
addr = "127.0.0.1:8080"
max_connections = 5000000

[handler.hello]
limits = { timeout = "18446744073709551615s", memory = "17GiB", concurrency = 2000000 }
pool = { prewarm = 18446744073709551615 }

[[route]]
path = "/"
handler = "hello"
"#,
    );
    let expected = [
        "gateway.grace_period: `400days` is too long: at most 365 days (each is added to a clock)",
        "gateway.max_instances: 10000000 is too many: at most 100000",
        "listener[0].max_connections: 5000000 is too many: at most 1000000",
        "handler.hello.limits.timeout: `18446744073709551615s` is too long: at most 365 days (each is added to a clock)",
        "handler.hello.limits.memory: `17GiB` is too large: at most 16GiB",
        "handler.hello.limits.concurrency: 2000000 is too many: at most 1000000",
    ];
    for line in expected {
        assert!(
            found.iter().any(|problem| problem.ends_with(line)),
            "missing {line:?} in {found:#?}"
        );
    }
}

#[test]
fn proxy_protocol_needs_the_balancers_it_trusts() {
    let listener = |extra: &str| {
        format!(
            "[[listener]]\naddr = \"127.0.0.1:8080\"\n{extra}\n\n[handler.hello]\n\n\
             [[route]]\npath = \"/\"\nhandler = \"hello\"\n"
        )
    };
    assert_eq!(
        problems(&listener("proxy_protocol = true")),
        [
            "/etc/wasmgate/gw.toml: listener[0].proxy_from: required with proxy_protocol = true: \
          the balancers allowed to say who the client is, e.g. [\"10.0.0.0/8\"]"
        ]
    );
    assert_eq!(
        problems(&listener("proxy_from = [\"10.0.0.0/8\"]")),
        ["/etc/wasmgate/gw.toml: listener[0].proxy_from: applies only with proxy_protocol = true"]
    );
    let config = parse(&listener(
        "proxy_protocol = true\nproxy_from = [\"10.0.0.0/8\"]",
    ))
    .expect("valid");
    assert!(config.listeners[0].proxy_from[0].contains("10.1.2.3".parse().expect("ip")));
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Arbitrary text is answered with a config or with problems, never a panic.
        #[test]
        fn any_text_is_a_config_or_problems(text in "\\PC{0,200}") {
            let _ = parse(&text);
        }

        /// A valid file with one value replaced by anything TOML can say
        /// (another type, a huge number, a strange string) is still answered.
        #[test]
        fn any_value_in_any_place_is_checked_not_panicked_on(
            place in 0..MINIMAL_LINES.len(),
            value in prop_oneof![
                any::<i64>().prop_map(|n| n.to_string()),
                any::<f64>().prop_map(|n| format!("{n:?}")),
                "\"[ -~]{0,30}\"",
                Just("true".to_string()),
                Just("[]".to_string()),
                Just("{}".to_string()),
                Just("\"99999999999999999999999s\"".to_string()),
                Just("\"18446744073709551615B\"".to_string()),
            ],
        ) {
            let (key, _) = MINIMAL_LINES[place];
            let text = MINIMAL_LINES
                .iter()
                .enumerate()
                .map(|(index, (k, v))| format!("{k} = {}", if index == place { value.as_str() } else { v }))
                .collect::<Vec<_>>();
            let text = format!(
                "[gateway]\n{}\n[[listener]]\naddr = \"127.0.0.1:8080\"\n\n[handler.hello]\n\n[[route]]\npath = \"/\"\nhandler = \"hello\"\n",
                text.join("\n")
            );
            let _ = (key, parse(&text));
        }
    }

    /// `[gateway]` keys and valid values, to be replaced one at a time.
    const MINIMAL_LINES: [(&str, &str); 8] = [
        ("grace_period", "\"1s\""),
        ("max_instances", "10"),
        ("http_reserve", "2"),
        ("tls_handshake_timeout", "\"5s\""),
        ("stream_keep_alive", "\"15s\""),
        ("access_log", "\"text\""),
        ("watch", "false"),
        (
            "limits",
            "{ timeout = \"1s\", memory = \"1MiB\", body = \"1KiB\", concurrency = 2 }",
        ),
    ];
}

#[test]
fn deployment_policies_are_typed() {
    let config = parse(&format!(
        r#"{MINIMAL}
[deploy]
state_dir = "state"
keep_versions = 3
trusted_keys = ["keys/release.pub"]

[handler.api]
rollout = {{ strategy = "canary", steps = [5, "12.5%", 50], interval = "30s", max_failures = 3, min_requests = 100, max_error_rate = "2%", max_p99 = "250ms" }}
split = {{ sticky = "header:x-user", pin_header = "x-variant", pin_cookie = "variant" }}
trusted_keys = ["keys/api.pub"]

[handler.web]
rollout = {{ strategy = "blue-green", smoke = "/healthz", keep_warm = "5m" }}
split = {{ sticky = "cookie" }}
"#
    ))
    .expect("valid");
    assert_eq!(
        config.deploy.state_dir.as_deref(),
        Some(Path::new("/etc/wasmgate/state"))
    );
    assert_eq!(
        config.deploy.audit_log.as_deref(),
        Some(Path::new("/etc/wasmgate/state/audit.log"))
    );
    assert_eq!(config.deploy.keep_versions, 3);
    assert_eq!(
        config.deploy.trusted_keys,
        [Path::new("/etc/wasmgate/keys/release.pub")]
    );
    let api = &config.handler_deploy[&HandlerName::parse("api").expect("name")];
    let deploy::RolloutPolicy::Canary(plan) = &api.rollout else {
        panic!("a canary: {:?}", api.rollout);
    };
    assert_eq!(plan.steps, [500, 1_250, 5_000]);
    assert_eq!(plan.interval, Duration::from_secs(30));
    assert_eq!((plan.max_failures, plan.min_requests), (3, 100));
    assert!((plan.max_error_rate - 0.02).abs() < 1e-9);
    assert_eq!(
        api.split.sticky,
        deploy::Sticky::Header(http::HeaderName::from_static("x-user"))
    );
    assert_eq!(api.split.pin_cookie.as_deref(), Some("variant"));
    let web = &config.handler_deploy[&HandlerName::parse("web").expect("name")];
    assert_eq!(
        web.rollout,
        deploy::RolloutPolicy::BlueGreen(deploy::BlueGreenPlan {
            smoke: Some("/healthz".into()),
            keep_warm: Duration::from_secs(300),
        })
    );
    let hello = &config.handler_deploy[&HandlerName::parse("hello").expect("name")];
    assert_eq!(hello.rollout, deploy::RolloutPolicy::Immediate);
}

#[test]
fn bad_deployment_policies_are_each_reported() {
    let found = problems(&format!(
        r#"{MINIMAL}
[handler.a]
rollout = {{ strategy = "canary", steps = [50, 25], smoke = "/x", interval = "0s" }}
split = {{ sticky = "sometimes", pin_header = "bad header", pin_cookie = "a;b" }}

[handler.b]
rollout = {{ strategy = "rainbow" }}

[handler.c]
rollout = {{ strategy = "blue-green", smoke = "healthz", steps = [10] }}
"#
    ));
    let file = "/etc/wasmgate/gw.toml";
    for expected in [
        format!("{file}: handler.a.rollout.smoke: does not apply to strategy = \"canary\""),
        format!("{file}: handler.a.rollout.steps: steps must increase"),
        format!("{file}: handler.a.rollout.interval: must be longer than zero"),
        format!(
            "{file}: handler.a.split.sticky: `sometimes` is not a stickiness; write \"request\" (default), \"cookie\", \"client\" or \"header:NAME\""
        ),
        format!("{file}: handler.a.split.pin_header: `bad header` is not a header name"),
        format!(
            "{file}: handler.a.split.pin_cookie: `a;b` is not a cookie name (letters, digits, `-`, `_`, `.`)"
        ),
        format!(
            "{file}: handler.b.rollout.strategy: `rainbow` is not a strategy; write \"immediate\" (default), \"canary\" or \"blue-green\""
        ),
        format!("{file}: handler.c.rollout.steps: does not apply to strategy = \"blue-green\""),
        format!("{file}: handler.c.rollout.smoke: `healthz` is not a path (it starts with `/`)"),
    ] {
        assert!(
            found.contains(&expected),
            "missing {expected}\nin {found:#?}"
        );
    }
}

#[test]
fn reuse_is_opt_in_bounded_and_for_http_handlers_only() {
    let config = parse(&format!(
        "{MINIMAL}\n[handler.api]\nreuse = {{ max_requests = 50, max_concurrent = 16, idle = \"250ms\" }}\n\n[handler.warm]\nreuse = {{}}\n"
    ))
    .expect("valid");
    let handler = |name: &str| config.handlers[&HandlerName::parse(name).expect("name")].clone();
    assert_eq!(
        handler("hello").reuse,
        None,
        "one fresh instance per request by default"
    );
    assert_eq!(
        handler("api").reuse,
        Some(Reuse {
            max_requests: 50,
            max_concurrent: 16,
            idle: Duration::from_millis(250)
        })
    );
    assert_eq!(handler("warm").reuse, Some(Reuse::default()));

    let found = problems(&format!(
        "{MINIMAL}\n[handler.ws]\nworld = \"websocket\"\nreuse = {{}}\n\n[handler.zero]\nreuse = {{ max_requests = 0, max_concurrent = 0 }}\n"
    ));
    let file = "/etc/wasmgate/gw.toml";
    for expected in [
        format!(
            "{file}: handler.ws.reuse: applies to HTTP handlers: a WebSocket or SSE stream already keeps its instance"
        ),
        format!("{file}: handler.zero.reuse.max_requests: 0 is not between 1 and 1000000"),
        format!("{file}: handler.zero.reuse.max_concurrent: 0 is not between 1 and 1024"),
    ] {
        assert!(
            found.contains(&expected),
            "missing {expected}\nin {found:#?}"
        );
    }
}

#[test]
fn composition_problems_are_each_reported_with_their_key() {
    let found = problems(
        r#"
[[listener]]
addr = "127.0.0.1:8080"

[handler.greeter]
imports = ["translator", "ghost", "greeter2"]
interceptors = ["logger"]
subscription = "names"

[handler.greeter2]

[component.translator]
imports = ["logger"]
capabilities = ["http", "teleport"]
rollout = { strategy = "canary" }
config.api = "${vault:secret}"

[component.logger]
imports = ["translator"]
outbound = ["api.example.com"]

[component.greeter2]

[[route]]
path = "/greet"
handler = "greeter"
middleware = ["translator", "greeter"]

[[route]]
path = "/names"
publish = "names"
middleware = ["greeter2"]

[[route]]
path = "/x/{name}"
invoke = "greeter"

[[route]]
path = "/y"
handler = "greeter"
publish = "names"

[[route]]
path = "/z"
handler = "translator"
"#,
    );
    for expected in [
        "component.greeter2: [handler.greeter2] has the same name; handlers and components share one namespace",
        "handler.greeter.interceptors: interceptors wrap the calls into a [component]'s exports",
        "handler.greeter.subscription: a [component] subscribes to a channel",
        "handler.greeter.imports[1]: no [component.ghost] is configured",
        "handler.greeter.imports[2]: `greeter2` is a [handler]; only a [component] can be imported",
        "component.translator.capabilities[1]: `teleport` is not a capability; the capabilities are http, env, config, logging, pubsub, clocks, random, system",
        "component.translator.rollout: applies to handlers only",
        "component.translator.config.api: `${vault:secret}` is not a reference this gateway resolves",
        "component.logger.outbound: needs the `http` capability",
        "component: components depend on each other in a cycle (translator → logger → translator)",
        "route[0].middleware[0]: `translator` is not a wasi:http handler",
        "route[0].middleware[1]: `greeter` is the route's own handler",
        "route[1].middleware: middleware applies to routes that serve a handler",
        "route[2].invoke: `greeter` is not COMPONENT.FUNCTION",
        "route[3]: a route names exactly one of `handler`, `publish` (a channel), `invoke`",
        "route[4].handler: `translator` is a [component], which no route can serve",
    ] {
        assert!(
            found.iter().any(|line| line.contains(expected)),
            "missing {expected:?} in {found:#?}"
        );
    }
}

#[test]
fn profiles_lend_their_grants_and_unknown_ones_are_reported() {
    let config = parse(
        r#"
[[listener]]
addr = "127.0.0.1:8080"

[profile.web]
env = ["API_KEY"]
outbound = ["api.example.com"]
limits = { timeout = "5s", fuel = 1000 }
files = [{ dir = "static", at = "/static" }]

[handler.hello]
profile = "web"
env = ["OWN"]
limits = { timeout = "2s" }

[[route]]
path = "/"
handler = "hello"
"#,
    )
    .unwrap_or_else(|invalid| panic!("valid: {}", invalid.problems));
    let hello = &config.handlers[&HandlerName::parse("hello").expect("name")];
    assert_eq!(
        hello.env,
        EnvGrant::Keys(vec!["OWN".into(), "API_KEY".into()])
    );
    assert_eq!(hello.outbound.len(), 1);
    assert_eq!(hello.limits.timeout, std::time::Duration::from_secs(2));
    assert_eq!(hello.limits.fuel, Some(1000));
    assert_eq!(
        hello.files,
        vec![FileGrant {
            dir: Path::new("/etc/wasmgate/static").to_path_buf(),
            at: "/static".into(),
            write: false,
        }]
    );
    assert!(config.meters_fuel());
    let found = problems(
        r#"
[[listener]]
addr = "127.0.0.1:8080"

[component.store]
profile = "nowhere"
files = [{ dir = "a", at = "relative" }, { dir = "b", at = "/x" }, { dir = "c", at = "/x" }]

[handler.hello]
limits = { fuel = 0 }
reuse = { max_concurrent = 4 }

[handler.other]
limits = { fuel = 10 }
reuse = { max_concurrent = 4 }

[[route]]
path = "/"
handler = "hello"
"#,
    );
    for expected in [
        "component.store.profile: no [profile.nowhere] is configured",
        "component.store.files[0].at: `relative` is not an absolute path in the guest",
        "component.store.files[2].at: `/x` is mapped twice",
        "component.store.files: needs the `system` capability",
        "handler.hello.limits.fuel: 0 leaves no instruction to run",
        "handler.other.reuse.max_concurrent: a shared instance cannot give each of its requests its own limits.fuel",
    ] {
        assert!(
            found.iter().any(|line| line.contains(expected)),
            "missing {expected:?} in {found:#?}"
        );
    }
}

#[test]
fn resident_settings_need_a_resident_component() {
    let found = problems(
        r#"
[[listener]]
addr = "127.0.0.1:8080"

[handler.web]
resident = true
required = true

[component.bot]
required = true
restart = { max = 3 }

[component.ticker]
resident = true
restart = { max = 0, within = "soon", backoff = "0s" }

[[route]]
path = "/"
handler = "web"
"#,
    );
    for expected in [
        "handler.web.resident: only a [component] can be resident",
        "handler.web.required: only a [component] can be resident",
        "component.bot.required: applies to resident components only: add `resident = true`",
        "component.bot.restart: applies to resident components only",
        "component.ticker.restart.max: must be at least 1",
        "component.ticker.restart.within:",
        "component.ticker.restart.backoff: must be longer than zero",
    ] {
        assert!(
            found.iter().any(|line| line.contains(expected)),
            "missing {expected:?} in {found:#?}"
        );
    }
    let config = parse(
        r#"
[[listener]]
addr = "127.0.0.1:8080"

[component.ticker]
resident = true
required = true
restart = { within = "10s" }
"#,
    )
    .expect("valid");
    let ticker = &config.handlers[&HandlerName::parse("ticker").expect("name")];
    assert_eq!(
        ticker.resident,
        Some(super::Resident {
            required: true,
            max_restarts: 5,
            within: Duration::from_secs(10),
            backoff: Duration::from_millis(100),
        })
    );
    // Each restart in the window waits twice as long as the one before.
    assert_eq!(
        ticker.resident.map(|policy| policy.delay(3)),
        Some(Duration::from_millis(800))
    );
}

#[test]
fn a_static_route_needs_a_directory_and_a_tree_path_and_nothing_else() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(dir.path().join("public")).expect("mkdir");
    let text = r#"
[[listener]]
addr = "127.0.0.1:8080"

[handler.hello]

[[route]]
path = "/a/*"
static = "public"

[[route]]
path = "/b/*"
static = "missing"

[[route]]
path = "/c"
static = "public"

[[route]]
path = "/d/*"
static = "public"
handler = "hello"
"#;
    let path = dir.path().join("gw.toml");
    let found = match Config::parse(&path, text) {
        Ok(_) => Vec::new(),
        Err(invalid) => invalid.problems.0.iter().map(ToString::to_string).collect(),
    };
    for expected in [
        "route[1].static: ",
        "is not a directory",
        "route[2].path: a static route serves a tree of files",
        "route[3]: a route names exactly one of `handler`, `publish`, `invoke` or `static`",
    ] {
        assert!(
            found.iter().any(|line| line.contains(expected)),
            "missing {expected:?} in {found:#?}"
        );
    }
    assert!(
        !found.iter().any(|line| line.contains("route[0]")),
        "{found:#?}"
    );
}
