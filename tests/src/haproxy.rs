//! Debian's HAProxy, which the tests put in front of gateways.

use std::path::PathBuf;

/// The haproxy binary: `$WASMGATE_HAPROXY`, else where Debian installs it.
pub fn bin() -> PathBuf {
    std::env::var_os("WASMGATE_HAPROXY")
        .map(PathBuf::from)
        .or_else(|| {
            ["/usr/sbin/haproxy", "/usr/bin/haproxy"]
                .into_iter()
                .map(PathBuf::from)
                .find(|path| path.exists())
        })
        .expect("haproxy is installed (scripts/test.sh installs it)")
}
