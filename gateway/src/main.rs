//! The `wasmgate` command: parse the command line, set up logging, then run
//! one subcommand. Exit codes: 0 success, 1 runtime failure, 2 invalid
//! configuration (nothing was bound).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use http::Method;
use wasmgate::cli::{devcert, ops, toolchain};
use wasmgate::config::Config;
use wasmgate::control::drain::ShutdownSignals;
use wasmgate::edge::activation::Activated;
use wasmgate::{Gateway, Prepared, StartError};

#[derive(Parser)]
#[command(
    name = "wasmgate",
    version,
    about = "Edge HTTP gateway for wasi:http WebAssembly components"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the configured listeners until SIGTERM or SIGINT.
    Serve {
        /// The configuration file.
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Validate the configuration and compile every component; binds nothing.
    Check {
        /// The configuration file.
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Build every component source (the Rust workspace for wasm32-wasip2,
    /// npm and Python projects beside it) and copy each component into the
    /// configuration's handlers directory.
    Build(BuildArgs),
    /// Build the handlers, make a development certificate if none exists, then serve.
    Up(BuildArgs),
    /// Create a project NAME/ that `cd NAME && wasmgate dev` serves: a
    /// config, one HTTP component's source, a README, a .gitignore.
    New {
        /// The project (and its first component's) name.
        name: String,
        /// The component's language: rust, ts, js or python.
        #[arg(long, default_value = "rust")]
        lang: String,
    },
    /// `up`, then watch the guest sources: an edit rebuilds and hot-swaps
    /// what changed; a failing build leaves the last good version serving.
    Dev(BuildArgs),
    /// Ask the running gateway to reload its configuration and components
    /// (through the admin listener of the configuration); the file is checked
    /// here first.
    Reload {
        /// The configuration file of the running gateway.
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Deploy a new version of a handler to the running gateway: at once,
    /// as a canary judged by the gateway, blue-green, or as a fixed split.
    /// Without a strategy flag, the handler's configured rollout applies.
    Deploy(Box<DeployArgs>),
    /// Make a handler's rolling-out version stable now.
    Promote {
        /// The handler.
        handler: String,
        /// The configuration file of the running gateway.
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Stop a handler's rollout, or go back to its previous (or a given) version.
    Rollback {
        /// The handler.
        handler: String,
        /// A version (at least 6 hex digits of its hash) from `wasmgate versions`.
        #[arg(long)]
        to: Option<String>,
        /// The configuration file of the running gateway.
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Show what each handler serves, its versions' shares and rollouts.
    Status {
        /// The configuration file of the running gateway.
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// List the versions a handler has served.
    Versions {
        /// The handler.
        handler: String,
        /// The configuration file of the running gateway.
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Make an Ed25519 key pair for signing components: PREFIX.key, PREFIX.pub.
    Keygen {
        /// Where the two files go, without extension.
        #[arg(long, default_value = "wasmgate-signing")]
        out: PathBuf,
    },
    /// Sign a component (the signature is embedded as its last custom section).
    Sign {
        /// The component.
        file: PathBuf,
        /// The secret key file.
        #[arg(long)]
        key: PathBuf,
        /// Where the signed component goes (the file itself by default).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Run a command component (it exports wasi:cli/run) or a core WASI
    /// module (it exports _start) once, with the gateway's limits; prints
    /// READY to stderr once it is instantiated and exits with its exit code
    /// (134 after a trap, 2 if it cannot run at all).
    Run {
        /// The program.
        file: PathBuf,
        /// Its linear memory cap (default: the profile's, else 128MiB).
        #[arg(long)]
        memory: Option<String>,
        /// Its wall-clock limit (default: the profile's, else 1h).
        #[arg(long)]
        timeout: Option<String>,
        /// Its CPU budget, in fuel (about one per instruction); none by default.
        #[arg(long)]
        fuel: Option<u64>,
        /// An environment variable it may read, from this process's
        /// environment (repeat for more); none by default.
        #[arg(long = "env")]
        env: Vec<String>,
        /// Run with the grants and limits of `[profile.NAME]` in the
        /// config: its env, files and limits (flags given here win).
        #[arg(long)]
        profile: Option<String>,
        /// The config that holds the profile.
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Its arguments, after `--`.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Check a component's signature against public keys.
    Verify {
        /// The component.
        file: PathBuf,
        /// A trusted public key file (repeat for more).
        #[arg(long = "key", required = true)]
        keys: Vec<PathBuf>,
    },
}

#[derive(clap::Args)]
struct DeployArgs {
    /// The handler.
    handler: String,
    /// The component file.
    file: PathBuf,
    /// Canary steps, e.g. `10%,25%,50%` (promoted after the last).
    #[arg(long, value_name = "STEPS")]
    canary: Option<String>,
    /// How long each canary step lasts before it is judged.
    #[arg(long, value_name = "DURATION")]
    every: Option<String>,
    /// Failed checks before the canary is rolled back.
    #[arg(long)]
    max_failures: Option<String>,
    /// Canary requests a step needs before it is judged.
    #[arg(long)]
    min_requests: Option<String>,
    /// Largest share of failed (5xx) canary requests, e.g. `1%`.
    #[arg(long)]
    max_error_rate: Option<String>,
    /// Largest canary p99 latency, e.g. `500ms`.
    #[arg(long)]
    max_p99: Option<String>,
    /// Blue-green: warm the new version, then switch all traffic at once.
    #[arg(long)]
    blue_green: bool,
    /// Blue-green: a path the new version must answer 2xx first.
    #[arg(long, value_name = "PATH")]
    smoke: Option<String>,
    /// Blue-green: how long the old version stays warm.
    #[arg(long, value_name = "DURATION")]
    keep_warm: Option<String>,
    /// Serve the new version beside stable with this fixed share (A/B).
    #[arg(long, value_name = "PERCENT")]
    split: Option<String>,
    /// Switch all traffic at once.
    #[arg(long)]
    immediate: bool,
    /// The name pin headers and cookies use for it (`canary` by default).
    #[arg(long)]
    name: Option<String>,
    /// The configuration file of the running gateway.
    #[arg(long, short, default_value = DEFAULT_CONFIG)]
    config: PathBuf,
}

#[derive(clap::Args)]
struct BuildArgs {
    /// The configuration file (its handlers_dir receives the components).
    #[arg(long, short, default_value = DEFAULT_CONFIG)]
    config: PathBuf,
    /// The guest workspace to build.
    #[arg(long, default_value = "handlers")]
    source: PathBuf,
}

// Every request allocates and frees a store, an instance's host state and its
// resources, often on different threads: mimalloc's per-thread free lists beat
// glibc's arenas by 9-16% req/s on the hello baseline (A/B, alternating runs).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_arena_eager_commit` and `mi_option_purge_delay`
/// (their indices in mimalloc v3's `mi_option_e`; libmimalloc-sys names
/// only the older options).
const MI_OPTION_ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Commits mimalloc's arenas as they are used rather than whole, and gives
/// memory freed for a second back to the system: an idle gateway otherwise
/// keeps about 15 MiB of arena resident that it does not use (default
/// config: 51 → 36 MiB RSS). Lazy commit alone cost 3.5% req/s on the
/// hello baseline (pages decommitted 10 ms after being freed, recommitted
/// by the next request); with the 1 s purge delay, 0.999x
/// (`loadtests/ab.sh`). mimalloc reads its options when it reserves its
/// first arena, at the process's first allocation, before `main`: this
/// runs as an ELF constructor, ahead of that.
extern "C" fn tune_allocator() {
    // SAFETY: mi_option_set only stores an integer in mimalloc's option
    // table; any value is valid for these options.
    #[allow(unsafe_code, reason = "setting mimalloc options; see SAFETY")]
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_ARENA_EAGER_COMMIT, 0);
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 1000);
    }
}

#[allow(unsafe_code, reason = "an ELF constructor; see tune_allocator")]
#[used]
#[unsafe(link_section = ".init_array")]
static TUNE_ALLOCATOR: extern "C" fn() = tune_allocator;

const DEFAULT_CONFIG: &str = "config/wasmgate.toml";

const EXIT_RUNTIME: u8 = 1;
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let _log_writer = init_logging();
    // Before the runtime's threads exist: taking them edits the environment.
    let activated = match cli.command {
        Command::Serve { .. } => Activated::from_env(),
        _ => Activated::default(),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    let code = runtime.block_on(async {
        match cli.command {
            Command::Serve { config } => serve(&config, activated).await,
            Command::Check { config } => check(&config).await,
            Command::Build(args) => build(&args)
                .await
                .map_or_else(|code| code, |_| ExitCode::SUCCESS),
            Command::Up(args) => up(&args).await,
            Command::Dev(args) => dev(&args).await,
            Command::New { name, lang } => finish(wasmgate::cli::new::create(&name, &lang)),
            Command::Reload { config } => reload(&config).await,
            Command::Deploy(args) => deploy(&args).await,
            Command::Promote { handler, config } => {
                operate(&config, Method::POST, &format!("/promote/{handler}")).await
            }
            Command::Rollback {
                handler,
                to,
                config,
            } => {
                let path = match to {
                    Some(to) => format!("/rollback/{handler}?to={to}"),
                    None => format!("/rollback/{handler}"),
                };
                operate(&config, Method::POST, &path).await
            }
            Command::Status { config } => operate(&config, Method::GET, "/status").await,
            Command::Versions { handler, config } => {
                operate(&config, Method::GET, &format!("/versions/{handler}")).await
            }
            Command::Keygen { out } => finish(ops::keygen(&out)),
            Command::Sign { file, key, out } => finish(ops::sign(&file, &key, out.as_deref())),
            Command::Verify { file, keys } => finish(ops::verify(&file, &keys)),
            Command::Run {
                file,
                memory,
                timeout,
                fuel,
                env,
                profile,
                config,
                args,
            } => {
                let flags = RunFlags {
                    memory,
                    timeout,
                    fuel,
                    env,
                };
                match run_limits(flags, profile.as_deref(), &config).await {
                    Ok(limits) => run_program(&file, &limits, args).await,
                    Err(code) => code,
                }
            }
        }
    });
    // The drain is over (or its grace period is): a compile or a file read
    // still running on a blocking thread must not hold the exit up, as
    // dropping the runtime would.
    runtime.shutdown_timeout(EXIT_WAIT);
    code
}

/// How long the exit waits for blocking work still running after the drain.
const EXIT_WAIT: std::time::Duration = std::time::Duration::from_millis(200);

fn init_logging() -> tracing_appender::non_blocking::WorkerGuard {
    use tracing_subscriber::EnvFilter;
    // Logging never blocks a worker: lines go through a queue to a writer
    // thread, which writes what has queued up in one go (it flushes each
    // time the queue runs empty): a write per line was 5% of the gateway's
    // CPU serving reused instances under load, one access log line each.
    let (writer, guard) = tracing_appender::non_blocking(std::io::BufWriter::with_capacity(
        64 << 10,
        std::io::stderr(),
    ));
    let filter = EnvFilter::try_from_env("WASMGATE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    guard
}

/// Loads the config; when it is invalid, also checks the files its valid
/// parts name, and reports every problem, then what that means.
async fn load_config(path: &Path, consequence: &str) -> Result<Config, ExitCode> {
    match Config::load(path) {
        Ok(config) => Ok(config),
        Err(invalid) => {
            let mut problems = invalid.problems;
            if let Some(partial) = invalid.partial {
                problems.0.extend(wasmgate::file_problems(&partial).await);
            }
            Err(report_config(&problems.to_string(), consequence))
        }
    }
}

const NOTHING_STARTED: &str = "the configuration is invalid; nothing was started";

fn report_config(problems: &str, consequence: &str) -> ExitCode {
    for line in problems.lines() {
        eprintln!("error: {line}");
    }
    eprintln!("error: {consequence}");
    ExitCode::from(EXIT_CONFIG)
}

fn report_start(error: StartError) -> ExitCode {
    match error {
        StartError::Config(problems) => report_config(&problems.to_string(), NOTHING_STARTED),
        StartError::Runtime(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

async fn serve(path: &Path, activated: Activated) -> ExitCode {
    let config = match load_config(path, NOTHING_STARTED).await {
        Ok(config) => config,
        Err(code) => return code,
    };
    run(&config, activated).await
}

async fn run(config: &Config, activated: Activated) -> ExitCode {
    // Printed as soon as it is bound: probes may watch the start from there.
    let admin_bound = |addr| println!("admin on http://{addr}");
    let gateway = match Gateway::start_with(config, admin_bound, activated).await {
        Ok(gateway) => gateway,
        Err(error) => return report_start(error),
    };
    // Signal handlers first: once the lines below are out, scripts may signal.
    let signals = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .and_then(|hangups| Ok((hangups, ShutdownSignals::register()?)));
    let (mut hangups, mut shutdown_signals) = match signals {
        Ok(signals) => signals,
        Err(error) => {
            eprintln!("error: cannot handle signals: {error}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    for (scheme, addr) in gateway.listeners() {
        // Scripts and tests read these lines: keep their shape.
        println!("listening on {scheme}://{addr}");
    }
    let reloader = gateway.reloader();
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            reloader.reload_contained("SIGHUP").await;
        }
    });
    let shutdown = async move {
        shutdown_signals.recv().await;
        tokio::spawn(async move {
            shutdown_signals.recv().await;
            eprintln!("second signal: exiting without waiting for in-flight requests");
            std::process::exit(i32::from(EXIT_RUNTIME));
        });
    };
    let abandoned = gateway.serve(shutdown).await;
    if abandoned > 0 {
        tracing::warn!(
            abandoned,
            "grace period over: closing the connections still open"
        );
    } else {
        tracing::info!("drained; bye");
    }
    ExitCode::SUCCESS
}

async fn check(path: &Path) -> ExitCode {
    let config = match load_config(path, NOTHING_STARTED).await {
        Ok(config) => config,
        Err(code) => return code,
    };
    match Prepared::load(&config).await {
        Ok(prepared) => {
            println!(
                "{}: ok ({} listeners, {} handlers, {} routes)",
                path.display(),
                config.listeners.len(),
                prepared.handler_count(),
                config.routes.len()
            );
            ExitCode::SUCCESS
        }
        Err(error) => report_start(error),
    }
}

async fn build(args: &BuildArgs) -> Result<Config, ExitCode> {
    let config = load_config(&args.config, NOTHING_STARTED).await?;
    toolchain::build_and_install(&args.source, &config.gateway.handlers_dir).map_err(
        |message| {
            eprintln!("error: {message}");
            ExitCode::from(EXIT_RUNTIME)
        },
    )?;
    Ok(config)
}

async fn up(args: &BuildArgs) -> ExitCode {
    let config = match build(args).await {
        Ok(config) => config,
        Err(code) => return code,
    };
    serve_built(&config).await
}

/// `up`, watching the sources: a first build that fails is no reason to
/// stop (what built serves, the rest is fixed and rebuilt).
async fn dev(args: &BuildArgs) -> ExitCode {
    let config = match load_config(&args.config, NOTHING_STARTED).await {
        Ok(config) => config,
        Err(code) => return code,
    };
    if let Err(message) = toolchain::build_and_install(&args.source, &config.gateway.handlers_dir) {
        eprintln!("error: {message}");
    }
    if !config.gateway.watch {
        eprintln!("warning: [gateway] watch = false: rebuilt components are served after a reload");
    }
    let _watching = match wasmgate::cli::dev::watch(&args.source, &config.gateway.handlers_dir) {
        Ok(watcher) => watcher,
        Err(error) => {
            eprintln!("error: cannot watch {}: {error}", args.source.display());
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    serve_built(&config).await
}

/// Makes the development certificates a built config needs, then serves it.
async fn serve_built(config: &Config) -> ExitCode {
    for listener in &config.listeners {
        let Some(pair) = listener.tls.as_ref().and_then(|tls| tls.default.as_ref()) else {
            continue;
        };
        match devcert::ensure(&pair.cert, &pair.key) {
            Ok(true) => eprintln!(
                "created a self-signed development certificate: {} (trust it with curl --cacert)",
                pair.cert.display()
            ),
            Ok(false) => {}
            Err(error) => {
                eprintln!("error: {error:#}");
                return ExitCode::from(EXIT_RUNTIME);
            }
        }
    }
    run(config, Activated::default()).await
}

/// `wasmgate run`: the program's exit code, 134 after a trap (as a
/// signal-killed program's), 2 when it cannot run at all.
/// What `wasmgate run` was given on its command line.
struct RunFlags {
    memory: Option<String>,
    timeout: Option<String>,
    fuel: Option<u64>,
    env: Vec<String>,
}

/// The limits of a run: the flags, else the profile's, else the defaults.
async fn run_limits(
    flags: RunFlags,
    profile: Option<&str>,
    config: &Path,
) -> Result<wasmgate::guest::command::RunLimits, ExitCode> {
    use wasmgate::config::EnvGrant;
    let refuse = |message: String| {
        eprintln!("error: {message}");
        ExitCode::from(EXIT_CONFIG)
    };
    let profile = match profile {
        None => None,
        Some(name) => {
            let loaded = load_config(config, NOTHING_STARTED).await?;
            let Some(found) = loaded.profiles.get(name).cloned() else {
                return Err(refuse(format!(
                    "{}: no [profile.{name}] is configured",
                    config.display()
                )));
            };
            Some(found)
        }
    };
    let memory = match (&flags.memory, &profile) {
        (Some(text), _) => match text.parse::<bytesize::ByteSize>() {
            Ok(size) => size.as_u64(),
            Err(error) => return Err(refuse(format!("--memory {text}: {error}"))),
        },
        (None, Some(profile)) => profile.limits.memory,
        (None, None) => 128 << 20,
    };
    let timeout = match (&flags.timeout, &profile) {
        (Some(text), _) => match humantime::parse_duration(text) {
            Ok(timeout) => timeout,
            Err(error) => return Err(refuse(format!("--timeout {text}: {error}"))),
        },
        (None, Some(profile)) => profile.limits.timeout,
        (None, None) => std::time::Duration::from_secs(3600),
    };
    let fuel = flags
        .fuel
        .or_else(|| profile.as_ref().and_then(|profile| profile.limits.fuel));
    if fuel == Some(0) {
        return Err(refuse("--fuel 0 leaves no instruction to run".into()));
    }
    // The flags' variables and the profile's, from this process's environment.
    let grant = match profile.as_ref().map(|profile| &profile.env) {
        Some(EnvGrant::All) => EnvGrant::All,
        Some(EnvGrant::Keys(keys)) => EnvGrant::Keys(
            flags
                .env
                .iter()
                .chain(keys)
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .cloned()
                .collect(),
        ),
        None => EnvGrant::Keys(flags.env.clone()),
    };
    let env = wasmgate::guest::granted_env(&grant, &std::collections::HashMap::new());
    let mut files = Vec::new();
    if let Some(profile) = profile {
        for grant in &profile.files {
            if !grant.dir.is_dir() {
                return Err(refuse(format!(
                    "files: {} (mapped at {}) is not a directory",
                    grant.dir.display(),
                    grant.at
                )));
            }
        }
        files = profile.files;
    }
    Ok(wasmgate::guest::command::RunLimits {
        memory: usize::try_from(memory).unwrap_or(usize::MAX),
        timeout,
        fuel,
        env,
        files,
    })
}

async fn run_program(
    file: &Path,
    limits: &wasmgate::guest::command::RunLimits,
    args: Vec<String>,
) -> ExitCode {
    use wasmgate::guest::command::{Ended, run};
    let refuse = |message: String| {
        eprintln!("error: {message}");
        ExitCode::from(EXIT_CONFIG)
    };
    let name = file.file_name().map_or_else(
        || "program".into(),
        |name| name.to_string_lossy().into_owned(),
    );
    let argv: Vec<String> = std::iter::once(name).chain(args).collect();
    match run(file, &argv, limits).await {
        Ok(Ended::Exit(code)) => ExitCode::from(u8::try_from(code & 0xff).unwrap_or(1)),
        Ok(Ended::Trap(message)) => {
            eprintln!("error: {}: {message}", file.display());
            ExitCode::from(EXIT_TRAP)
        }
        Err(error) => refuse(format!("{}: {error}", file.display())),
    }
}

/// The exit code of a program that trapped.
const EXIT_TRAP: u8 = 134;

/// Prints what a file command did, or why it failed (exit status 1).
fn finish(result: Result<String, String>) -> ExitCode {
    match result {
        Ok(done) => {
            println!("{done}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

/// Sends one admin API request to the gateway `path` configures and prints
/// its JSON answer.
async fn operate(path: &Path, method: Method, endpoint: &str) -> ExitCode {
    let config = match load_config(path, "the configuration is invalid").await {
        Ok(config) => config,
        Err(code) => return code,
    };
    let answer = ops::call(&config, method, endpoint, bytes::Bytes::new()).await;
    finish(answer.map(|body| serde_json::to_string_pretty(&body).unwrap_or_default()))
}

async fn deploy(args: &DeployArgs) -> ExitCode {
    let config = match load_config(&args.config, "the configuration is invalid").await {
        Ok(config) => config,
        Err(code) => return code,
    };
    let strategies = [
        args.canary.is_some(),
        args.blue_green,
        args.split.is_some(),
        args.immediate,
    ];
    if strategies.iter().filter(|chosen| **chosen).count() > 1 {
        eprintln!("error: choose one of --canary, --blue-green, --split, --immediate");
        return ExitCode::from(EXIT_RUNTIME);
    }
    let strategy = if args.canary.is_some() || args.every.is_some() {
        Some("canary")
    } else if args.blue_green || args.smoke.is_some() || args.keep_warm.is_some() {
        Some("blue-green")
    } else if args.split.is_some() {
        Some("split")
    } else if args.immediate {
        Some("immediate")
    } else {
        None
    };
    let parameters: Vec<(&str, &str)> = [
        ("steps", &args.canary),
        ("interval", &args.every),
        ("max_failures", &args.max_failures),
        ("min_requests", &args.min_requests),
        ("max_error_rate", &args.max_error_rate),
        ("max_p99", &args.max_p99),
        ("smoke", &args.smoke),
        ("keep_warm", &args.keep_warm),
        ("weight", &args.split),
        ("name", &args.name),
    ]
    .into_iter()
    .filter_map(|(key, value)| Some((key, value.as_deref()?)))
    .collect();
    let options = ops::DeployOptions {
        strategy,
        parameters,
    };
    let answer = ops::deploy(&config, &args.handler, &args.file, &options).await;
    finish(answer.map(|body| serde_json::to_string_pretty(&body).unwrap_or_default()))
}

async fn reload(path: &Path) -> ExitCode {
    let config = match load_config(
        path,
        "the configuration is invalid; the gateway was not asked to reload",
    )
    .await
    {
        Ok(config) => config,
        Err(code) => return code,
    };
    let Some(addr) = config.admin else {
        eprintln!(
            "error: {}: no [admin] addr is configured; send SIGHUP to the gateway instead",
            path.display()
        );
        return ExitCode::from(EXIT_RUNTIME);
    };
    let token = match config
        .admin_token
        .as_deref()
        .map(wasmgate::control::token::read)
    {
        None => None,
        Some(Ok(token)) => Some(token),
        Some(Err(reason)) => {
            eprintln!("error: admin.token_file: {reason}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    match wasmgate::control::admin::request_reload(addr, token.as_deref()).await {
        Ok((status, body)) if status.is_success() => {
            println!("reloaded: generation {}", body["generation"]);
            ExitCode::SUCCESS
        }
        Ok((status, body)) if status == http::StatusCode::UNPROCESSABLE_ENTITY => {
            let problems = body["problems"].as_array().cloned().unwrap_or_default();
            let lines: Vec<String> = problems
                .iter()
                .filter_map(|p| p.as_str().map(str::to_string))
                .collect();
            report_config(
                &lines.join("\n"),
                "the gateway rejected the configuration and keeps the running one",
            )
        }
        Ok((status, body)) => {
            eprintln!("error: the gateway answered {status}: {body}");
            ExitCode::from(EXIT_RUNTIME)
        }
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}
