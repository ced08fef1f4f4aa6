//! The operator's commands: `deploy`, `promote`, `rollback`, `status` and
//! `versions` talk to a running gateway's admin API; `keygen`, `sign` and
//! `verify` work on files.
//!
//! May use: `config` (where the admin listener is, its token),
//! `control::admin` (the client), `deploy::signing`. Nothing imports this.
//!
//! Invariant: a command prints what the gateway answered and fails (an
//! error, exit status 1) on anything but success; a secret key is never
//! written over an existing file.

use std::path::Path;

use bytes::Bytes;
use http::Method;

use crate::config::Config;
use crate::control::admin;
use crate::deploy::signing::{self, PublicKey, SecretKey};

/// Calls the admin API of the gateway that `config` configures.
pub async fn call(
    config: &Config,
    method: Method,
    path: &str,
    body: Bytes,
) -> Result<serde_json::Value, String> {
    let Some(addr) = config.admin else {
        return Err(format!(
            "{}: no [admin] addr is configured",
            config.source.display()
        ));
    };
    let token = config
        .admin_token
        .as_deref()
        .map(crate::control::token::read)
        .transpose()
        .map_err(|reason| format!("admin.token_file: {reason}"))?;
    let (status, body) = admin::request(addr, token.as_deref(), method, path, body)
        .await
        .map_err(|error| format!("{error:#}"))?;
    if status.is_success() {
        Ok(body)
    } else {
        let reason = body["error"]
            .as_str()
            .map_or_else(|| body.to_string(), str::to_string);
        Err(format!("the gateway answered {status}: {reason}"))
    }
}

/// What `wasmgate deploy` asks for, as the admin API's query.
#[derive(Debug, Default)]
pub struct DeployOptions<'a> {
    /// `immediate`, `canary`, `blue-green`, `split`, or the handler's policy.
    pub strategy: Option<&'a str>,
    /// Every other parameter, by its API name.
    pub parameters: Vec<(&'a str, &'a str)>,
}

/// Uploads `file` as a new version of `handler`.
pub async fn deploy(
    config: &Config,
    handler: &str,
    file: &Path,
    options: &DeployOptions<'_>,
) -> Result<serde_json::Value, String> {
    let bytes = std::fs::read(file).map_err(|error| format!("{}: {error}", file.display()))?;
    let mut query = form_urlencoded::Serializer::new(String::new());
    if let Some(strategy) = options.strategy {
        query.append_pair("strategy", strategy);
    }
    for (key, value) in &options.parameters {
        query.append_pair(key, value);
    }
    let query = query.finish();
    let path = if query.is_empty() {
        format!("/deploy/{handler}")
    } else {
        format!("/deploy/{handler}?{query}")
    };
    call(config, Method::POST, &path, Bytes::from(bytes)).await
}

/// Writes a new key pair to `PREFIX.key` (owner-only) and `PREFIX.pub`.
pub fn keygen(prefix: &Path) -> Result<String, String> {
    let (key, seed) = signing::generate_with_seed()?;
    let secret = prefix.with_extension("key");
    let public = prefix.with_extension("pub");
    key.write(&secret, &public, &seed)
        .map_err(|error| format!("{} / {}: {error}", secret.display(), public.display()))?;
    Ok(format!(
        "key {} written: {} (secret, keep it off the gateway) and {} (public, for trusted_keys)",
        key.public().id(),
        secret.display(),
        public.display()
    ))
}

/// Signs `file` with `key`, writing to `out` (`file` itself by default,
/// replaced whole).
pub fn sign(file: &Path, key: &Path, out: Option<&Path>) -> Result<String, String> {
    let key = SecretKey::read(key)?;
    let bytes = std::fs::read(file).map_err(|error| format!("{}: {error}", file.display()))?;
    let signed = key
        .sign(&bytes)
        .map_err(|error| format!("{}: {error}", file.display()))?;
    let out = out.unwrap_or(file);
    let staging = out.with_extension("signing");
    std::fs::write(&staging, &signed)
        .and_then(|()| std::fs::rename(&staging, out))
        .map_err(|error| format!("{}: {error}", out.display()))?;
    Ok(format!(
        "{}: signed by key {}",
        out.display(),
        key.public().id()
    ))
}

/// Checks `file`'s signature against the public keys in `keys`.
pub fn verify(file: &Path, keys: &[std::path::PathBuf]) -> Result<String, String> {
    let trusted = keys
        .iter()
        .map(|path| PublicKey::read(path))
        .collect::<Result<Vec<_>, _>>()?;
    let bytes = std::fs::read(file).map_err(|error| format!("{}: {error}", file.display()))?;
    signing::verify(&bytes, &trusted)
        .map(|signer| format!("{}: signed by trusted key {signer}", file.display()))
        .map_err(|error| format!("{}: {error}", file.display()))
}
