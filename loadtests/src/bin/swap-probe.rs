//! Hot-swap latency probe: replaces a component file again and again (write
//! elsewhere, rename into place) and times each swap from the rename to the
//! first response that carries the new version, polling over one keep-alive
//! connection. Prints p50/p99/max and, at chosen swap counts, the gateway's RSS.
//!
//! The two component files must answer different bodies (`v1\n`, `v2\n`).
//! In `cold` mode every swap installs content the gateway has never seen (a
//! unique custom section is appended), so each one compiles; in `cached` mode
//! the two files alternate, so every swap after the first two is a cache hit.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Parser, ValueEnum};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;

#[derive(Parser)]
struct Args {
    /// URL answered by the swapped handler.
    #[arg(long)]
    url: String,
    /// The component file the gateway serves (e.g. handlers/version.wasm).
    #[arg(long)]
    target: PathBuf,
    /// The two versions to alternate.
    #[arg(long, num_args = 2)]
    versions: Vec<PathBuf>,
    /// Whether swaps hit the compile cache.
    #[arg(long, value_enum)]
    mode: Mode,
    /// How many swaps.
    #[arg(long)]
    swaps: usize,
    /// Pause between swaps (after the new version answered), in milliseconds.
    #[arg(long, default_value_t = 0)]
    interval_ms: u64,
    /// The gateway's process id, to read its RSS.
    #[arg(long)]
    pid: Option<u32>,
    /// Swap counts after which to report the RSS.
    #[arg(long, value_delimiter = ',')]
    rss_at: Vec<usize>,
}

#[derive(Clone, Copy, ValueEnum)]
enum Mode {
    Cold,
    Cached,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let uri: http::Uri = args.url.parse()?;
    let authority = uri.authority().ok_or("URL without host")?.to_string();
    let stream = tokio::net::TcpStream::connect(&authority).await?;
    let (mut sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let contents: Vec<Vec<u8>> = args
        .versions
        .iter()
        .map(std::fs::read)
        .collect::<Result<_, _>>()?;
    let mut latencies = Vec::with_capacity(args.swaps);
    let staging = args.target.with_extension("probe-staging");
    for swap in 0..args.swaps {
        let which = (swap + 1) % 2;
        let mut bytes = contents[which].clone();
        if let Mode::Cold = args.mode {
            append_custom_section(&mut bytes, &(swap as u64).to_le_bytes());
        }
        std::fs::write(&staging, &bytes)?;
        let started = Instant::now();
        std::fs::rename(&staging, &args.target)?;
        let want = format!("v{}\n", which + 1);
        loop {
            let request = http::Request::get(uri.path())
                .header(http::header::HOST, &authority)
                .body(Empty::<Bytes>::new())?;
            sender.ready().await?;
            let response = sender.send_request(request).await?;
            let body = response.into_body().collect().await?.to_bytes();
            if body == want.as_bytes() {
                break;
            }
            if started.elapsed() > Duration::from_secs(30) {
                return Err(format!("swap {swap}: {want:?} never answered").into());
            }
        }
        latencies.push(started.elapsed());
        if let Some(pid) = args.pid.filter(|_| args.rss_at.contains(&(swap + 1))) {
            println!(
                "rss after {} swaps: {} KiB",
                swap + 1,
                wasmgate_loadtests::rss_kib(pid)?
            );
        }
        tokio::time::sleep(Duration::from_millis(args.interval_ms)).await;
    }
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    println!(
        "swaps: {}  p50: {:.1} ms  p99: {:.1} ms  max: {:.1} ms",
        latencies.len(),
        at(0.5).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
        at(1.0).as_secs_f64() * 1e3
    );
    Ok(())
}

/// Appends a component-level custom section (id 0) named `wasmgate-probe`,
/// which changes the content hash without changing behaviour.
fn append_custom_section(bytes: &mut Vec<u8>, payload: &[u8]) {
    let name = b"wasmgate-probe";
    let mut section = Vec::new();
    leb128(&mut section, name.len() as u64);
    section.extend_from_slice(name);
    section.extend_from_slice(payload);
    bytes.push(0);
    leb128(bytes, section.len() as u64);
    bytes.extend_from_slice(&section);
}

fn leb128(out: &mut Vec<u8>, mut value: u64) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}
