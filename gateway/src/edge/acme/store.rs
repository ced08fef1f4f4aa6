//! The ACME account and certificates on disk, one directory per CA:
//! `<storage>/<ca>/account.json` and `<storage>/<ca>/<domain>.pem` (the
//! private key followed by the chain).
//!
//! Invariant: a file is replaced whole (written beside, synced, renamed), and
//! key material is created readable by the owner only; a certificate's key
//! and chain live in one file, so they can never be from different orders.

use std::fs;
use std::io::{self, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use instant_acme::AccountCredentials;

/// One CA's part of the storage directory.
pub(super) struct Store {
    dir: PathBuf,
}

impl Store {
    /// The directory for the CA at `directory` (a URL) under `storage`.
    pub(super) fn new(storage: &Path, directory: &str) -> Self {
        let name = directory
            .trim_start_matches("https://")
            .trim_end_matches('/')
            .chars()
            .map(|c| match c {
                'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' => c,
                _ => '_',
            })
            .collect::<String>();
        Self {
            dir: storage.join(name),
        }
    }

    /// The stored account, if there is one.
    pub(super) fn account(&self) -> io::Result<Option<AccountCredentials>> {
        match fs::read(self.dir.join("account.json")) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|error| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: {error}", self.dir.join("account.json").display()),
                )
            }),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error),
        }
    }

    pub(super) fn save_account(&self, credentials: &AccountCredentials) -> io::Result<()> {
        let json = serde_json::to_vec_pretty(credentials).map_err(io::Error::other)?;
        self.write("account.json", &json)
    }

    /// The stored PEM (key and chain) for `domain`, if there is one.
    pub(super) fn certificate(&self, domain: &str) -> io::Result<Option<Vec<u8>>> {
        match fs::read(self.certificate_path(domain)) {
            Ok(pem) => Ok(Some(pem)),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error),
        }
    }

    pub(super) fn save_certificate(&self, domain: &str, pem: &[u8]) -> io::Result<()> {
        self.write(&format!("{domain}.pem"), pem)
    }

    pub(super) fn certificate_path(&self, domain: &str) -> PathBuf {
        self.dir.join(format!("{domain}.pem"))
    }

    fn write(&self, name: &str, contents: &[u8]) -> io::Result<()> {
        fs::create_dir_all(&self.dir)?;
        fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o700))?;
        let target = self.dir.join(name);
        let temporary = self.dir.join(format!(".{name}.tmp"));
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temporary)?;
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&temporary, &target)?;
        fs::File::open(&self.dir)?.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_ca_gets_its_own_directory_and_files_are_private() {
        let storage = tempfile::tempdir().expect("tempdir");
        let store = Store::new(storage.path(), "https://127.0.0.1:14000/dir");
        assert_eq!(store.dir, storage.path().join("127.0.0.1_14000_dir"));
        let other = Store::new(storage.path(), crate::config::LETS_ENCRYPT);
        assert_eq!(
            other.dir,
            storage
                .path()
                .join("acme-v02.api.letsencrypt.org_directory")
        );
        assert_eq!(store.certificate("a.example").expect("read"), None);
        store
            .save_certificate("a.example", b"pem")
            .expect("written");
        assert_eq!(
            store.certificate("a.example").expect("read").as_deref(),
            Some(&b"pem"[..])
        );
        let mode = fs::metadata(store.certificate_path("a.example"))
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(other.certificate("a.example").expect("read"), None);
    }
}
