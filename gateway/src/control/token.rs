//! The admin API's bearer token: read from `[admin] token_file`, compared
//! without leaking its length or contents through timing.
//!
//! Invariant: a token is non-empty, at most [`MAX_TOKEN`] bytes, and comes
//! from a regular file that other users cannot read; anything else is
//! refused with the reason, and the admin API then refuses every mutating
//! request (it fails closed).

use std::io::Read as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

/// The longest token accepted.
pub const MAX_TOKEN: u64 = 4096;

/// The token in `path`, without surrounding whitespace.
pub fn read(path: &Path) -> Result<String, String> {
    let file = std::fs::File::open(path)
        .map_err(|error| format!("{}: cannot read the token file: {error}", path.display()))?;
    let meta = file
        .metadata()
        .map_err(|error| format!("{}: {error}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{}: not a regular file", path.display()));
    }
    if meta.permissions().mode() & 0o007 != 0 {
        return Err(format!(
            "{}: readable by every user; make it private (chmod 600, or 640 for a group)",
            path.display()
        ));
    }
    let mut text = String::new();
    file.take(MAX_TOKEN + 1)
        .read_to_string(&mut text)
        .map_err(|error| format!("{}: cannot read the token file: {error}", path.display()))?;
    let token = text.trim();
    if text.len() as u64 > MAX_TOKEN {
        return Err(format!("{}: longer than {MAX_TOKEN} bytes", path.display()));
    }
    if token.is_empty() {
        return Err(format!("{}: the token file is empty", path.display()));
    }
    Ok(token.to_string())
}

/// Whether `presented` is `expected`, taking the same time for every
/// `presented` of a given length.
pub fn matches(expected: &str, presented: &str) -> bool {
    let (expected, presented) = (expected.as_bytes(), presented.as_bytes());
    let differences = expected
        .iter()
        .zip(presented)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    differences == 0 && expected.len() == presented.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_match_only_whole() {
        assert!(matches("s3cret", "s3cret"));
        assert!(!matches("s3cret", "s3cre"));
        assert!(!matches("s3cret", "s3cret!"));
        assert!(!matches("s3cret", "S3cret"));
        assert!(!matches("s3cret", ""));
    }

    #[test]
    fn a_token_file_must_be_private_and_not_empty() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("token");
        std::fs::write(&path, "  abc \n").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(
            read(&path)
                .expect_err("world-readable")
                .contains("chmod 600")
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert_eq!(read(&path).as_deref(), Ok("abc"));
        std::fs::write(&path, "\n").expect("write");
        assert!(read(&path).expect_err("empty").contains("empty"));
        assert!(read(dir.path()).is_err());
    }
}
