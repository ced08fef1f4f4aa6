//! Debian's `nats-server` with JetStream, on a free loopback port, for
//! cluster tests: it can be stopped and started again on the same port (a
//! partition healing), keeping what JetStream stored.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::free_port;

/// A nats-server; stopped when dropped.
pub struct Nats {
    port: u16,
    child: Option<Child>,
    store: tempfile::TempDir,
}

impl Nats {
    /// Starts one on a free port and waits until it is ready.
    pub fn start() -> Self {
        let mut nats = Self {
            port: free_port(),
            child: None,
            store: tempfile::tempdir().expect("JetStream's store directory"),
        };
        nats.resume();
        nats
    }

    /// Its URL, for `[cluster] nats`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Stops it (the clients see their connections close).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and waits until it is ready.
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "already running");
        let mut child = Command::new(crate::debian_tool("WASMGATE_NATS_SERVER", "nats-server"))
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.store.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("nats-server runs (Debian's nats-server package)");
        let stderr = child.stderr.take().expect("piped stderr");
        let (ready, is_ready) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut told = false;
            // Read to the end, so the server never blocks on a full pipe.
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !told && line.contains("Server is ready") {
                    told = true;
                    let _ = ready.send(());
                }
            }
        });
        is_ready
            .recv_timeout(Duration::from_secs(20))
            .expect("nats-server says it is ready");
        self.child = Some(child);
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.stop();
    }
}
