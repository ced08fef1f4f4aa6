//! A self-signed development certificate for `wasmgate up`.
//!
//! Invariant: existing files are never overwritten, and a key file is never
//! readable by other users.

use std::path::Path;

use anyhow::Context as _;

/// Names the development certificate is valid for.
const DEV_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// Writes a self-signed certificate for localhost to `cert` and its key to
/// `key`, unless both exist. Returns whether it wrote them.
pub fn ensure(cert: &Path, key: &Path) -> anyhow::Result<bool> {
    if cert.exists() && key.exists() {
        return Ok(false);
    }
    let names: Vec<String> = DEV_NAMES.iter().map(|name| name.to_string()).collect();
    let generated =
        rcgen::generate_simple_self_signed(names).context("generating a certificate")?;
    for path in [cert, key] {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
    }
    write_private(key, generated.signing_key.serialize_pem().as_bytes())?;
    std::fs::write(cert, generated.cert.pem())
        .with_context(|| format!("writing {}", cert.display()))?;
    Ok(true)
}

fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(contents)
        .with_context(|| format!("writing {}", path.display()))
}
