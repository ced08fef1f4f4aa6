//! Component signatures: Ed25519 over a component's bytes, carried inside the
//! file as its last section (a custom section named [`SECTION`]).
//!
//! Why embedded rather than a detached `FILE.sig`: the signature travels with
//! the one file through every path a component takes (a file drop, an
//! upload to the admin API, the version store), a drop stays one atomic
//! rename, and wasmtime ignores custom sections, so a signed file runs
//! anywhere. The section has a fixed layout, so finding it needs no parser:
//! `0x00, 92, 18, "wasmgate-signature", 1, key id (8 bytes), signature (64)`.
//!
//! Invariant: a file verifies only when its last 94 bytes are that section,
//! the bytes before it are a complete WebAssembly binary, and the signature
//! is a trusted key's over the domain-separated SHA-256 of those bytes. So
//! any changed byte, a signature moved to another file, or a key not
//! trusted here fails, each with its own reason.

use std::fmt;
use std::path::Path;

use base64::Engine as _;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use sha2::{Digest as _, Sha256};

/// The custom section's name.
pub const SECTION: &str = "wasmgate-signature";
/// Prefixed to what is signed, so a signature made here means nothing elsewhere.
const CONTEXT: &[u8] = b"wasmgate component signature v1\0";
const FORMAT_VERSION: u8 = 1;
const KEY_ID_LEN: usize = 8;
const SIGNATURE_LEN: usize = 64;
const PAYLOAD_LEN: usize = 1 + KEY_ID_LEN + SIGNATURE_LEN;
/// Name length byte, name, payload: one LEB128 byte of size.
const SECTION_SIZE: usize = 1 + SECTION.len() + PAYLOAD_LEN;
/// The whole section: id, size, contents.
const TRAILER_LEN: usize = 2 + SECTION_SIZE;

const PUBLIC_TAG: &str = "wasmgate-ed25519-public";
const SECRET_TAG: &str = "wasmgate-ed25519-secret";

/// A key pair that signs components.
pub struct SecretKey(Ed25519KeyPair);

/// A key whose signatures are trusted.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey([u8; 32]);

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.id())
    }
}

/// Why a file does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// No signature section at the end.
    #[error("not signed, and only components signed by a trusted key load here")]
    Unsigned,
    /// Signed, by a key not in the trusted set.
    #[error("signed by key {0}, which is not a trusted key")]
    UntrustedKey(String),
    /// Signed by a trusted key, but not these bytes.
    #[error("the signature by key {0} does not match the contents (changed after signing)")]
    BadSignature(String),
    /// A signature section whose signed part is not a whole component.
    #[error("the signed part is not a complete WebAssembly binary: {0}")]
    Malformed(String),
}

impl VerifyError {
    /// A short, bounded label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Unsigned => "unsigned",
            Self::UntrustedKey(_) => "untrusted_key",
            Self::BadSignature(_) => "bad_signature",
            Self::Malformed(_) => "malformed",
        }
    }
}

impl SecretKey {
    /// A new random key.
    pub fn generate() -> Result<Self, String> {
        generate_with_seed().map(|(key, _seed)| key)
    }

    fn from_seed(seed: &[u8]) -> Result<Self, String> {
        Ed25519KeyPair::from_seed_unchecked(seed)
            .map(Self)
            .map_err(|_| "not an Ed25519 secret key".to_string())
    }

    /// The key's public half.
    pub fn public(&self) -> PublicKey {
        let mut bytes = [0; 32];
        bytes.copy_from_slice(self.0.public_key().as_ref());
        PublicKey(bytes)
    }

    /// Reads a secret key file written by [`Self::write`].
    pub fn read(path: &Path) -> Result<Self, String> {
        let seed = read_tagged(path, SECRET_TAG)?;
        Self::from_seed(&seed).map_err(|reason| format!("{}: {reason}", path.display()))
    }

    /// Writes the secret key (owner-only, never over an existing file) to
    /// `secret` and its public key to `public`.
    pub fn write(&self, secret: &Path, public: &Path, seed: &[u8; 32]) -> std::io::Result<()> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let encode = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(secret)?;
        writeln!(file, "{SECRET_TAG} {}", encode(seed))?;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(public)?;
        writeln!(file, "{PUBLIC_TAG} {}", encode(&self.public().0))
    }

    /// `wasm` with its signature section (any previous one replaced).
    pub fn sign(&self, wasm: &[u8]) -> Result<Vec<u8>, VerifyError> {
        let content = strip(wasm);
        complete(content)?;
        let signature = self.0.sign(&message(content));
        let mut signed = Vec::with_capacity(content.len() + TRAILER_LEN);
        signed.extend_from_slice(content);
        signed.push(0); // custom section
        signed.push(SECTION_SIZE as u8);
        signed.push(SECTION.len() as u8);
        signed.extend_from_slice(SECTION.as_bytes());
        signed.push(FORMAT_VERSION);
        signed.extend_from_slice(&self.public().key_id());
        signed.extend_from_slice(signature.as_ref());
        Ok(signed)
    }
}

/// A new random key and its seed, for [`SecretKey::write`].
pub fn generate_with_seed() -> Result<(SecretKey, [u8; 32]), String> {
    let rng = ring::rand::SystemRandom::new();
    let seed: [u8; 32] = ring::rand::generate(&rng)
        .map_err(|_| "the system random source failed".to_string())?
        .expose();
    Ok((SecretKey::from_seed(&seed)?, seed))
}

impl PublicKey {
    /// Reads a public key file (`wasmgate-ed25519-public BASE64`).
    pub fn read(path: &Path) -> Result<Self, String> {
        let bytes = read_tagged(path, PUBLIC_TAG)?;
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|_| format!("{}: not a 32-byte Ed25519 public key", path.display()))?;
        Ok(Self(key))
    }

    fn key_id(&self) -> [u8; KEY_ID_LEN] {
        let digest = Sha256::digest(self.0);
        let mut id = [0; KEY_ID_LEN];
        id.copy_from_slice(&digest[..KEY_ID_LEN]);
        id
    }

    /// The key's short name in messages: 16 hex digits of its SHA-256.
    pub fn id(&self) -> String {
        hex(&self.key_id())
    }
}

/// Checks `wasm`'s signature against `trusted`; returns the signer's key id.
pub fn verify(wasm: &[u8], trusted: &[PublicKey]) -> Result<String, VerifyError> {
    let Some(trailer) = trailer(wasm) else {
        return Err(VerifyError::Unsigned);
    };
    let content = &wasm[..wasm.len() - TRAILER_LEN];
    let payload = &trailer[TRAILER_LEN - PAYLOAD_LEN..];
    let (id, signature) = payload[1..].split_at(KEY_ID_LEN);
    let id_text = hex(id);
    if payload[0] != FORMAT_VERSION {
        return Err(VerifyError::Malformed(format!(
            "signature format {} is not known here",
            payload[0]
        )));
    }
    let Some(key) = trusted.iter().find(|key| key.key_id() == id) else {
        return Err(VerifyError::UntrustedKey(id_text));
    };
    // The signature first: any changed byte reads as a changed file, not
    // as whatever parsing it now trips over.
    UnparsedPublicKey::new(&ED25519, key.0)
        .verify(&message(content), signature)
        .map_err(|_| VerifyError::BadSignature(id_text.clone()))?;
    complete(content)?;
    Ok(id_text)
}

/// The signature section at the end of `wasm`, if there is one.
fn trailer(wasm: &[u8]) -> Option<&[u8]> {
    let start = wasm.len().checked_sub(TRAILER_LEN)?;
    let trailer = &wasm[start..];
    let header = [0, SECTION_SIZE as u8, SECTION.len() as u8];
    (trailer[..3] == header && &trailer[3..3 + SECTION.len()] == SECTION.as_bytes())
        .then_some(trailer)
}

/// `wasm` without its signature section.
fn strip(wasm: &[u8]) -> &[u8] {
    match trailer(wasm) {
        Some(_) => &wasm[..wasm.len() - TRAILER_LEN],
        None => wasm,
    }
}

/// What is signed: the context, then the content's SHA-256.
fn message(content: &[u8]) -> Vec<u8> {
    let mut message = CONTEXT.to_vec();
    message.extend_from_slice(&Sha256::digest(content));
    message
}

/// The content parses to its end as WebAssembly: section boundaries are
/// where the signer saw them, so the signature cannot be read as part of
/// another section.
fn complete(content: &[u8]) -> Result<(), VerifyError> {
    for payload in wasmparser::Parser::new(0).parse_all(content) {
        payload.map_err(|error| VerifyError::Malformed(error.message().to_string()))?;
    }
    if content.len() < 8 {
        return Err(VerifyError::Malformed("too short".into()));
    }
    Ok(())
}

fn read_tagged(path: &Path, tag: &str) -> Result<Vec<u8>, String> {
    use std::io::Read as _;
    let shown = path.display();
    let file = std::fs::File::open(path).map_err(|error| format!("{shown}: {error}"))?;
    let mut text = String::new();
    // A key file is one short line; anything longer is not one.
    file.take(4096)
        .read_to_string(&mut text)
        .map_err(|error| format!("{shown}: {error}"))?;
    let encoded = text
        .trim()
        .strip_prefix(tag)
        .map(str::trim)
        .ok_or_else(|| format!("{shown}: not a key file (it starts with `{tag}`)"))?;
    base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|error| format!("{shown}: {error}"))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut text, byte| {
        let _ = write!(text, "{byte:02x}");
        text
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest component: the header alone.
    const COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0";

    #[test]
    fn a_signed_file_verifies_and_every_change_is_caught() {
        let key = SecretKey::generate().expect("key");
        let signed = key.sign(COMPONENT).expect("signs");
        let trusted = [key.public()];
        assert_eq!(verify(&signed, &trusted), Ok(key.public().id()));

        assert_eq!(verify(COMPONENT, &trusted), Err(VerifyError::Unsigned));
        let other = SecretKey::generate().expect("key");
        assert_eq!(
            verify(&signed, &[other.public()]),
            Err(VerifyError::UntrustedKey(key.public().id()))
        );
        // Any byte: of the content, or of the signature itself.
        for index in [4, signed.len() - 1] {
            let mut tampered = signed.clone();
            tampered[index] ^= 1;
            assert_eq!(
                verify(&tampered, &trusted),
                Err(VerifyError::BadSignature(key.public().id())),
                "byte {index}"
            );
        }
        let mut body_changed = signed.clone();
        body_changed[6] ^= 1; // the layer byte: still parses
        assert!(verify(&body_changed, &trusted).is_err());
    }

    #[test]
    fn signing_again_replaces_the_signature() {
        let first = SecretKey::generate().expect("key");
        let second = SecretKey::generate().expect("key");
        let twice = second
            .sign(&first.sign(COMPONENT).expect("signs"))
            .expect("signs");
        assert_eq!(twice.len(), COMPONENT.len() + TRAILER_LEN);
        assert_eq!(verify(&twice, &[second.public()]), Ok(second.public().id()));
    }

    #[test]
    fn garbage_is_not_signed() {
        let key = SecretKey::generate().expect("key");
        assert!(matches!(
            key.sign(b"not wasm"),
            Err(VerifyError::Malformed(_))
        ));
    }

    #[test]
    fn keys_round_trip_through_their_files() {
        let dir = tempfile::tempdir().expect("dir");
        let (key, seed) = generate_with_seed().expect("key");
        let (secret, public) = (dir.path().join("k.key"), dir.path().join("k.pub"));
        key.write(&secret, &public, &seed).expect("written");
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&secret).expect("meta").permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(PublicKey::read(&public), Ok(key.public()));
        assert_eq!(
            SecretKey::read(&secret).expect("reads").public(),
            key.public()
        );
        assert!(
            key.write(&secret, &public, &seed).is_err(),
            "never overwrites"
        );
        assert!(
            PublicKey::read(&secret).is_err(),
            "a secret is not a public key"
        );
    }
}
