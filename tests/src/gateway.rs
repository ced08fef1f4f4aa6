//! [`TestGateway`]: the real `wasmgate serve` in a child process.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Where the build script put the guest fixtures (`<name>.wasm`).
pub fn handlers_dir() -> &'static Path {
    Path::new(env!("WASMGATE_TEST_HANDLERS"))
}

/// The `wasmgate` binary of this build (`target/<profile>/wasmgate`).
///
/// `cargo test --workspace` builds it before running any test, because the
/// gateway package has integration tests of its own.
pub fn wasmgate_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("tests run from target/<profile>/deps");
    let bin = profile_dir.join("wasmgate");
    assert!(
        bin.is_file(),
        "{} is missing: run the whole suite (`cargo test --workspace`) or `cargo build -p wasmgate` first",
        bin.display()
    );
    bin
}

/// Runs `wasmgate ARGS` to completion.
pub fn run_cli(args: &[&str], cwd: &Path) -> Output {
    Command::new(wasmgate_bin())
        .args(args)
        .current_dir(cwd)
        // Versions and the audit trail default to the XDG state directory:
        // keep each test's beside it, never in the user's home.
        .env("XDG_STATE_HOME", cwd.join("state"))
        .output()
        .expect("wasmgate runs")
}

/// Signs `file` in place with the key file `key` (both relative to `cwd`,
/// as `wasmgate keygen` there left it), like a release step does.
pub fn sign(file: &Path, key: &str, cwd: &Path) {
    let file = file.to_str().expect("a UTF-8 path");
    let signed = run_cli(&["sign", file, "--key", key], cwd);
    assert!(signed.status.success(), "{signed:?}");
}

/// Moves a `wasmgate new` project's listener and admin ports (8080, 9090)
/// to free ones (port 0), so its tests run beside anything.
pub fn free_project_ports(project: &Path) {
    let config = project.join("config/wasmgate.toml");
    let text = std::fs::read_to_string(&config).expect("read the project's config");
    std::fs::write(
        &config,
        text.replace("127.0.0.1:8080", "127.0.0.1:0")
            .replace("127.0.0.1:9090", "127.0.0.1:0"),
    )
    .expect("write the project's config");
}

/// Starts `wasmgate ARGS` in a project directory `cwd` (with `env` added)
/// and returns it with the address of its first plain listener, once its
/// `listening on http://` line is out; the caller kills it.
pub fn start_in_project(
    args: &[&str],
    cwd: &Path,
    env: &[(&str, &str)],
) -> (std::process::Child, std::net::SocketAddr) {
    use std::io::BufRead as _;
    let mut child = Command::new(wasmgate_bin())
        .args(args)
        .current_dir(cwd)
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("wasmgate starts");
    let stdout = child.stdout.take().expect("piped");
    let addr = std::io::BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find_map(|line| {
            line.strip_prefix("listening on http://")
                .and_then(|addr| addr.parse().ok())
        })
        .expect("wasmgate listens");
    (child, addr)
}

/// How long the gateway may take to compile its components and bind.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// How long a log line may take to arrive.
const LOG_TIMEOUT: Duration = Duration::from_secs(10);

/// The gateway's stderr, with a signal for every new line.
#[derive(Default)]
struct Log {
    text: Mutex<String>,
    grew: Condvar,
}

impl Log {
    fn lock(&self) -> std::sync::MutexGuard<'_, String> {
        self.text.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn append(&self, line: &str) {
        let mut text = self.lock();
        text.push_str(line);
        text.push('\n');
        self.grew.notify_all();
    }

    fn text(&self) -> String {
        self.lock().clone()
    }
}

/// A running gateway with its own config file in a temporary directory.
pub struct TestGateway {
    pid: u32,
    exit: mpsc::Receiver<ExitStatus>,
    exited: Option<ExitStatus>,
    listeners: Vec<(String, SocketAddr)>,
    /// Listening lines not read yet, and how many lines there will be.
    announced: mpsc::Receiver<(String, SocketAddr)>,
    expected: usize,
    log: Arc<Log>,
    dir: tempfile::TempDir,
}

impl TestGateway {
    /// Writes `config` (where `{handlers}` stands for the fixture directory and
    /// `{dir}` for the gateway's temporary directory) and starts the gateway on
    /// it; returns once every listener is bound.
    pub fn start(config: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        Self::start_in(dir, config)
    }

    /// Like [`Self::start`], in a directory prepared by the caller (e.g. with certificates).
    pub fn start_in(dir: tempfile::TempDir, config: &str) -> Self {
        Self::launch(dir, config, &[])
    }

    /// Like [`Self::start_in`], but returns as soon as the admin listener is
    /// bound (before the components load); [`Self::wait_listening`] waits for the rest.
    pub fn start_admin_first(dir: tempfile::TempDir, config: &str) -> Self {
        Self::start_admin_first_with_env(dir, config, &[])
    }

    /// Like [`Self::start_admin_first`], with `env` added to the gateway's environment.
    pub fn start_admin_first_with_env(
        dir: tempfile::TempDir,
        config: &str,
        env: &[(&str, &str)],
    ) -> Self {
        let mut gateway = Self::spawn(dir, config, &[], env);
        gateway.wait_until(|listeners| listeners.iter().any(|(scheme, _)| scheme == "admin"));
        gateway
    }

    /// Waits until every listener of the config is bound.
    pub fn wait_listening(&mut self) {
        let expected = self.expected;
        self.wait_until(|listeners| listeners.len() >= expected);
    }

    fn wait_until(&mut self, done: impl Fn(&[(String, SocketAddr)]) -> bool) {
        let deadline = Instant::now() + START_TIMEOUT;
        while !done(&self.listeners) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.announced.recv_timeout(left) {
                Ok(listener) => self.listeners.push(listener),
                Err(_) => panic!(
                    "the gateway did not bind its {} listeners:\n{}",
                    self.expected,
                    self.log()
                ),
            }
        }
    }

    /// Like [`Self::start_in`], with `env` added to the gateway's environment.
    pub fn start_with_env(dir: tempfile::TempDir, config: &str, env: &[(&str, &str)]) -> Self {
        Self::launch(dir, config, env)
    }

    /// Like [`Self::start`], with the process limited to `limit` open files.
    pub fn start_with_fd_limit(config: &str, limit: u32) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let shell = format!("ulimit -n {limit} && exec \"$0\" \"$@\"");
        let mut gateway = Self::spawn(dir, config, &["sh", "-c", &shell], &[]);
        gateway.wait_listening();
        gateway
    }

    /// Runs the gateway under `systemd-socket-activate`, which binds
    /// `sockets` and starts the gateway (with `LISTEN_FDS`) when the first
    /// connection arrives; returns once the sockets are bound.
    pub fn start_socket_activated(
        dir: tempfile::TempDir,
        config: &str,
        sockets: &[SocketAddr],
    ) -> Self {
        let mut wrapper = vec!["systemd-socket-activate".to_string()];
        for addr in sockets {
            wrapper.extend(["-l".to_string(), addr.to_string()]);
        }
        wrapper.extend(["-E", "WASMGATE_LOG"].map(String::from));
        wrapper.push("--".to_string());
        let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
        let gateway = Self::spawn(dir, config, &wrapper, &[]);
        for addr in sockets {
            gateway.wait_for_log(&format!("Listening on {addr}"));
        }
        gateway
    }

    fn launch(dir: tempfile::TempDir, config: &str, env: &[(&str, &str)]) -> Self {
        let mut gateway = Self::spawn(dir, config, &[], env);
        gateway.wait_listening();
        gateway
    }

    /// Starts the gateway, behind `wrapper` (a command that ends by running
    /// the program and arguments it is given) when there is one.
    /// Runs `wasmgate dev --source SOURCE` on `config` (builds the guest
    /// workspace first, then serves and rebuilds on edits) with cargo
    /// offline (tests reach nothing beyond loopback: the workspace's crates
    /// must be in cargo's cache already); returns once every listener is bound.
    pub fn start_dev(dir: tempfile::TempDir, config: &str, source: &Path) -> Self {
        let source = source.display().to_string();
        let mut gateway = Self::spawn_command(
            dir,
            config,
            &[],
            &[("CARGO_NET_OFFLINE", "true")],
            &["dev", "--source", &source],
        );
        gateway.wait_listening();
        gateway
    }

    fn spawn(dir: tempfile::TempDir, config: &str, wrapper: &[&str], env: &[(&str, &str)]) -> Self {
        Self::spawn_command(dir, config, wrapper, env, &["serve"])
    }

    fn spawn_command(
        dir: tempfile::TempDir,
        config: &str,
        wrapper: &[&str],
        env: &[(&str, &str)],
        subcommand: &[&str],
    ) -> Self {
        let config = expand(config, dir.path());
        let admin_expected = !config.contains("enabled = false");
        let config_path = dir.path().join("wasmgate.toml");
        std::fs::write(&config_path, &config).expect("write config");
        let expected = config.matches("[[listener]]").count() + usize::from(admin_expected);
        let mut command = match wrapper.split_first() {
            None => Command::new(wasmgate_bin()),
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(wasmgate_bin());
                command
            }
        };
        let mut child = command
            .args(subcommand)
            .arg("--config")
            .arg(&config_path)
            .env("WASMGATE_LOG", "info,wasmgate=debug")
            // Versions and the audit trail default to the XDG state
            // directory: each gateway keeps its own in its test directory.
            .env("XDG_STATE_HOME", dir.path().join("state"))
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("wasmgate starts");
        let log = Arc::new(Log::default());
        let (addresses, listening) = mpsc::channel();
        let stdout = child.stdout.take().expect("piped stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let url = line
                    .strip_prefix("listening on ")
                    .or_else(|| line.strip_prefix("admin on "));
                if let Some(url) = url {
                    let (scheme, addr) = url.split_once("://").expect("scheme://addr");
                    let addr: SocketAddr = addr.parse().expect("a socket address");
                    let scheme = if line.starts_with("admin") {
                        "admin"
                    } else {
                        scheme
                    };
                    let _ = addresses.send((scheme.to_string(), addr));
                }
            }
        });
        let stderr = child.stderr.take().expect("piped stderr");
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.append(&line);
            }
        });
        let pid = child.id();
        let (exit_sender, exit) = mpsc::channel();
        std::thread::spawn(move || {
            if let Ok(status) = child.wait() {
                let _ = exit_sender.send(status);
            }
        });
        Self {
            pid,
            exit,
            exited: None,
            listeners: Vec::new(),
            announced: listening,
            expected,
            log,
            dir,
        }
    }

    /// The first plain HTTP listener.
    pub fn http(&self) -> SocketAddr {
        self.listener("http")
    }

    /// The gateway's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The gateway's resident memory, in KiB (Linux).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .expect("the gateway's /proc status");
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("a VmRSS line")
    }

    /// The admin listener.
    pub fn admin(&self) -> SocketAddr {
        self.listener("admin")
    }

    /// The first HTTPS listener.
    pub fn https(&self) -> SocketAddr {
        self.listener("https")
    }

    fn listener(&self, scheme: &str) -> SocketAddr {
        self.listeners
            .iter()
            .find(|(listener_scheme, _)| listener_scheme == scheme)
            .map(|(_, addr)| *addr)
            .unwrap_or_else(|| panic!("no {scheme} listener among {:?}", self.listeners))
    }

    /// The gateway's temporary directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Rewrites the gateway's config file (placeholders expanded as at start).
    pub fn write_config(&self, config: &str) {
        std::fs::write(self.dir().join("wasmgate.toml"), expand(config, self.dir()))
            .expect("write config");
    }

    /// Waits until generation `generation` of the configuration is published
    /// and returns that log line.
    pub fn wait_for_generation(&self, generation: u64) -> String {
        self.wait_for_log(&format!("generation={generation} "))
    }

    /// Everything the gateway logged so far.
    pub fn log(&self) -> String {
        self.log.text()
    }

    /// Waits until a log line contains `fragment` and returns that line. Log
    /// lines reach the harness asynchronously, after the response they concern.
    /// This blocks the calling thread: a test whose own tasks must progress
    /// meanwhile (e.g. to close a connection) needs a multi-threaded runtime.
    pub fn wait_for_log(&self, fragment: &str) -> String {
        let deadline = Instant::now() + LOG_TIMEOUT;
        let mut text = self.log.lock();
        loop {
            if let Some(line) = text.lines().find(|line| line.contains(fragment)) {
                return line.to_string();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "no log line contains {fragment:?}:\n{text}"
            );
            text = self
                .log
                .grew
                .wait_timeout(text, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Sends a signal (`TERM`, `INT`, `HUP`, ...) to the gateway.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid.to_string())
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Stops the gateway (SIGTERM, then its drain) and hands back its
    /// directory, state and all, for a restart in it.
    pub fn stop_keeping_dir(mut self) -> tempfile::TempDir {
        self.signal("TERM");
        let status = self.wait_exit(Duration::from_secs(30));
        assert!(status.success(), "the gateway stopped with {status}");
        let placeholder = tempfile::tempdir().expect("temp dir");
        std::mem::replace(&mut self.dir, placeholder)
    }

    /// Waits up to `timeout` for the gateway to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        if let Some(status) = self.exited {
            return status;
        }
        match self.exit.recv_timeout(timeout) {
            Ok(status) => {
                self.exited = Some(status);
                status
            }
            Err(_) => panic!(
                "the gateway did not exit within {timeout:?}:\n{}",
                self.log()
            ),
        }
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        if self.exited.is_none() && self.exit.try_recv().is_err() {
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(self.pid.to_string())
                .status();
            let _ = self.exit.recv_timeout(Duration::from_secs(10));
        }
        if std::thread::panicking() {
            eprintln!(
                "---- wasmgate log ----\n{}----------------------",
                self.log()
            );
        }
    }
}

/// Fills in the placeholders and, unless the config has its own `[admin]`,
/// puts the admin listener (on by default at 127.0.0.1:9090) on a port of its
/// own: tests run side by side.
fn expand(config: &str, dir: &Path) -> String {
    let mut config = config
        .replace("{handlers}", &handlers_dir().display().to_string())
        .replace("{dir}", &dir.display().to_string());
    if !config.contains("[admin]") {
        config.push_str("\n[admin]\naddr = \"127.0.0.1:0\"\n");
    }
    config
}
