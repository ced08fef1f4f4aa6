//! The config file exactly as written: serde structs, every field optional so
//! that defaults live in one place (the checker in `config`).
//!
//! Invariant: parsing fails only on TOML syntax or a value of the wrong type;
//! unknown keys are collected (every one of them, with its path) instead of
//! failing, so the checker can report them next to every other problem.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub(super) gateway: RawGateway,
    #[serde(default)]
    pub(super) listener: Vec<RawListener>,
    #[serde(default)]
    pub(super) handler: BTreeMap<String, RawHandler>,
    #[serde(default)]
    pub(super) component: BTreeMap<String, RawHandler>,
    #[serde(default)]
    pub(super) profile: BTreeMap<String, RawProfile>,
    #[serde(default)]
    pub(super) route: Vec<RawRoute>,
    pub(super) admin: Option<RawAdmin>,
    pub(super) acme: Option<RawAcme>,
    pub(super) deploy: Option<RawDeploy>,
    pub(super) cluster: Option<RawCluster>,
}

#[derive(Debug, Deserialize)]
pub(super) struct RawCluster {
    pub(super) nats: String,
    pub(super) name: Option<String>,
    pub(super) node: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawDeploy {
    pub(super) state_dir: Option<PathBuf>,
    pub(super) keep_versions: Option<usize>,
    pub(super) audit_log: Option<PathBuf>,
    #[serde(default)]
    pub(super) trusted_keys: Vec<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawSplit {
    pub(super) sticky: Option<String>,
    pub(super) pin_header: Option<String>,
    pub(super) pin_cookie: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawRollout {
    pub(super) strategy: Option<String>,
    pub(super) steps: Option<Vec<RawShare>>,
    pub(super) interval: Option<String>,
    pub(super) max_failures: Option<u32>,
    pub(super) min_requests: Option<u64>,
    pub(super) max_error_rate: Option<RawShare>,
    pub(super) max_p99: Option<String>,
    pub(super) smoke: Option<String>,
    pub(super) keep_warm: Option<String>,
}

/// A percentage written as a number (`10`) or a string (`"2.5%"`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum RawShare {
    Number(f64),
    Text(String),
}

impl RawShare {
    pub(super) fn text(&self) -> String {
        match self {
            Self::Number(number) => number.to_string(),
            Self::Text(text) => text.clone(),
        }
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct RawAcme {
    pub(super) directory: Option<String>,
    pub(super) email: Option<String>,
    pub(super) storage: Option<PathBuf>,
    pub(super) challenge: Option<String>,
    pub(super) renew_before: Option<String>,
    pub(super) directory_ca: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
pub(super) struct RawAdmin {
    pub(super) addr: Option<String>,
    pub(super) enabled: Option<bool>,
    pub(super) token_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawGateway {
    pub(super) handlers_dir: Option<PathBuf>,
    pub(super) grace_period: Option<String>,
    pub(super) tls_handshake_timeout: Option<String>,
    pub(super) max_instances: Option<u32>,
    pub(super) http_reserve: Option<u32>,
    pub(super) auto_routes: Option<bool>,
    pub(super) watch: Option<bool>,
    pub(super) cache_dir: Option<PathBuf>,
    pub(super) handover_socket: Option<PathBuf>,
    pub(super) stream_keep_alive: Option<String>,
    pub(super) access_log: Option<String>,
    pub(super) request_id_header: Option<String>,
    #[serde(default)]
    pub(super) limits: RawLimits,
}

#[derive(Debug, Deserialize)]
pub(super) struct RawListener {
    pub(super) addr: String,
    pub(super) tls: Option<RawTls>,
    pub(super) max_connections: Option<usize>,
    pub(super) header_timeout: Option<String>,
    pub(super) max_header_size: Option<String>,
    pub(super) max_headers: Option<usize>,
    pub(super) h2_max_streams: Option<u32>,
    pub(super) idle_timeout: Option<String>,
    pub(super) body_timeout: Option<String>,
    pub(super) write_timeout: Option<String>,
    pub(super) h2_keep_alive: Option<String>,
    pub(super) redirect: Option<String>,
    pub(super) redirect_port: Option<u16>,
    pub(super) hsts: Option<RawHsts>,
    pub(super) proxy_protocol: Option<bool>,
    #[serde(default)]
    pub(super) trusted_proxies: Vec<String>,
    #[serde(default)]
    pub(super) proxy_from: Vec<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct RawTls {
    pub(super) cert: Option<PathBuf>,
    pub(super) key: Option<PathBuf>,
    #[serde(default)]
    pub(super) sni: Vec<RawSni>,
    #[serde(default)]
    pub(super) acme: Vec<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct RawSni {
    pub(super) names: Vec<String>,
    pub(super) cert: PathBuf,
    pub(super) key: PathBuf,
}

#[derive(Debug, Deserialize)]
pub(super) struct RawHsts {
    pub(super) max_age: String,
    #[serde(default)]
    pub(super) include_subdomains: bool,
    #[serde(default)]
    pub(super) preload: bool,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawHandler {
    pub(super) path: Option<PathBuf>,
    #[serde(default)]
    pub(super) pool: RawPool,
    #[serde(default)]
    pub(super) env: RawEnv,
    #[serde(default)]
    pub(super) outbound: Vec<String>,
    pub(super) allow_private: Option<bool>,
    pub(super) topic_scope: Option<String>,
    #[serde(default)]
    pub(super) limits: RawLimits,
    pub(super) world: Option<String>,
    pub(super) stream: Option<RawStream>,
    pub(super) split: Option<RawSplit>,
    pub(super) rollout: Option<RawRollout>,
    pub(super) trusted_keys: Option<Vec<PathBuf>>,
    pub(super) reuse: Option<RawReuse>,
    #[serde(default)]
    pub(super) imports: Vec<String>,
    #[serde(default)]
    pub(super) interceptors: Vec<String>,
    pub(super) capabilities: Option<Vec<String>>,
    #[serde(default)]
    pub(super) config: BTreeMap<String, RawValue>,
    pub(super) subscription: Option<RawSubscription>,
    pub(super) profile: Option<String>,
    #[serde(default)]
    pub(super) files: Vec<RawFiles>,
    pub(super) resident: Option<bool>,
    pub(super) required: Option<bool>,
    pub(super) restart: Option<RawRestart>,
}

/// `restart = { max = 5, within = "60s", backoff = "100ms" }` of a resident.
#[derive(Debug, Default, Deserialize)]
pub(super) struct RawRestart {
    pub(super) max: Option<u32>,
    pub(super) within: Option<String>,
    pub(super) backoff: Option<String>,
}

/// `[profile.NAME]`: grants and limits that handlers and components take by
/// naming it.
#[derive(Debug, Default, Clone, Deserialize)]
pub(super) struct RawProfile {
    #[serde(default)]
    pub(super) env: RawEnv,
    #[serde(default)]
    pub(super) outbound: Vec<String>,
    pub(super) allow_private: Option<bool>,
    #[serde(default)]
    pub(super) limits: RawLimits,
    #[serde(default)]
    pub(super) files: Vec<RawFiles>,
    pub(super) capabilities: Option<Vec<String>>,
}

/// One `files` entry: a host directory mapped into the guest.
#[derive(Debug, Clone, Deserialize)]
pub(super) struct RawFiles {
    pub(super) dir: PathBuf,
    pub(super) at: String,
    #[serde(default)]
    pub(super) write: bool,
}

/// A `config.KEY` value: text, or a number or boolean taken as its text.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum RawValue {
    Text(String),
    Integer(i64),
    Float(f64),
    Bool(bool),
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawReuse {
    pub(super) max_requests: Option<u32>,
    pub(super) max_concurrent: Option<u32>,
    pub(super) idle: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawStream {
    pub(super) max_message: Option<String>,
    pub(super) max_connections: Option<usize>,
    pub(super) idle_timeout: Option<String>,
    pub(super) send_queue: Option<usize>,
    pub(super) slow_consumer: Option<String>,
}

/// `env = ["KEY", ...]` or `env = "all"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(super) enum RawEnv {
    Keys(Vec<String>),
    Word(String),
}

impl Default for RawEnv {
    fn default() -> Self {
        Self::Keys(Vec::new())
    }
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawPool {
    pub(super) prewarm: Option<usize>,
}

#[derive(Debug, Default, Clone, Deserialize)]
pub(super) struct RawLimits {
    pub(super) timeout: Option<String>,
    pub(super) memory: Option<String>,
    pub(super) body: Option<String>,
    pub(super) concurrency: Option<usize>,
    pub(super) fuel: Option<u64>,
}

#[derive(Debug, Deserialize)]
pub(super) struct RawRoute {
    pub(super) host: Option<String>,
    pub(super) path: String,
    pub(super) handler: Option<String>,
    pub(super) publish: Option<String>,
    pub(super) invoke: Option<String>,
    #[serde(rename = "static")]
    pub(super) static_dir: Option<PathBuf>,
    #[serde(default)]
    pub(super) middleware: Vec<String>,
    pub(super) cors: Option<RawCors>,
    pub(super) headers: Option<RawHeaders>,
    pub(super) compress: Option<RawCompress>,
    #[serde(default)]
    pub(super) decompress: bool,
}

/// `compress = true` or `compress = { min_size = 1024, types = [...] }`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum RawCompress {
    On(bool),
    Table {
        min_size: Option<u64>,
        types: Option<Vec<String>>,
    },
}

/// `cors = { origins, methods, headers, expose, credentials, max_age }`.
#[derive(Debug, Deserialize)]
pub(super) struct RawCors {
    pub(super) origins: Vec<String>,
    pub(super) methods: Option<Vec<String>>,
    pub(super) headers: Option<Vec<String>>,
    #[serde(default)]
    pub(super) expose: Vec<String>,
    pub(super) credentials: Option<bool>,
    pub(super) max_age: Option<String>,
}

/// `headers = { set = { NAME = VALUE }, append = { ... }, remove = [NAME] }`.
#[derive(Debug, Default, Deserialize)]
pub(super) struct RawHeaders {
    #[serde(default)]
    pub(super) set: BTreeMap<String, String>,
    #[serde(default)]
    pub(super) append: BTreeMap<String, String>,
    #[serde(default)]
    pub(super) remove: Vec<String>,
}

/// `subscription = "names"` or `subscription = { channel = "names", function = "greet" }`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum RawSubscription {
    Channel(String),
    Full {
        channel: String,
        function: Option<String>,
    },
}

/// Why the file could not be read as a [`RawConfig`] at all.
#[derive(Debug)]
pub(super) struct ParseError {
    pub(super) key: String,
    pub(super) reason: String,
}

/// Parses `text`, returning the raw config and the paths of unknown keys.
pub(super) fn parse(text: &str) -> Result<(RawConfig, Vec<String>), ParseError> {
    let deserializer = toml::de::Deserializer::parse(text).map_err(|error| ParseError {
        key: format!("(syntax{})", location(text, error.span())),
        reason: error.message().trim().to_string(),
    })?;
    let mut unknown = Vec::new();
    let mut record = |path: serde_ignored::Path<'_>| unknown.push(key_path(&path));
    let tracking = serde_ignored::Deserializer::new(deserializer, &mut record);
    let raw = serde_path_to_error::deserialize(tracking).map_err(|error| {
        let key = error.path().to_string();
        let inner = error.into_inner();
        ParseError {
            key: format!("{key}{}", location(text, inner.span())),
            reason: inner.message().trim().to_string(),
        }
    })?;
    Ok((raw, unknown))
}

/// Like [`parse`], for a table merged from several files (no line numbers:
/// the problems are located by key).
pub(super) fn parse_table(table: toml::Table) -> Result<(RawConfig, Vec<String>), ParseError> {
    let mut unknown = Vec::new();
    let mut record = |path: serde_ignored::Path<'_>| unknown.push(key_path(&path));
    let tracking = serde_ignored::Deserializer::new(toml::Value::Table(table), &mut record);
    let raw = serde_path_to_error::deserialize(tracking).map_err(|error| ParseError {
        key: error.path().to_string(),
        reason: error.into_inner().message().trim().to_string(),
    })?;
    Ok((raw, unknown))
}

/// ` (line L, column C)` for a byte span, empty when there is none.
fn location(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    let Some(span) = span else {
        return String::new();
    };
    let before = &text[..span.start.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |newline| newline + 1) + 1;
    format!(" (line {line}, column {column})")
}

/// Renders an ignored key's path the way the checker names keys: `a.b[0].c`.
fn key_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", key_path(parent)),
        Path::Map { parent, key } => {
            let parent = key_path(parent);
            if parent.is_empty() {
                key.to_string()
            } else {
                format!("{parent}.{key}")
            }
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => key_path(parent),
    }
}
