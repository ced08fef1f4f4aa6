//! A guest's stdout and stderr, turned into log lines.
//!
//! Invariant: a line is assembled across every write to the same stream of
//! one store, however many stream handles the guest obtained for them (a
//! line written in pieces is one log line; what is left at the end goes out
//! when the store does), no line is longer than [`MAX_LINE`], and a handler
//! logs at most [`RATE`] lines a second (bursts of [`BURST`]): the rest are
//! counted, not written, so a chatty guest cannot push out other lines.
//! Writing never blocks (the log writer is non-blocking), unlike WASI's
//! default stdio, which would stall a tokio worker on a slow terminal.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Longest line kept whole; longer output is logged in pieces of this size.
const MAX_LINE: usize = 4096;
/// Lines a second one handler may log, on average.
pub(super) const RATE: f64 = 100.0;
/// Lines one handler may log at once after a quiet spell.
pub(super) const BURST: f64 = 500.0;

#[derive(Debug, Clone, Copy)]
pub(super) enum GuestStream {
    Stdout,
    Stderr,
}

/// One handler's log allowance (a token bucket), shared by its stores.
pub(super) struct LogBudget {
    handler: Arc<str>,
    state: Mutex<Bucket>,
    dropped: prometheus::IntCounter,
}

struct Bucket {
    tokens: f64,
    refilled: Instant,
    /// Whether the last line was dropped (the first drop is announced).
    dropping: bool,
}

impl LogBudget {
    /// A full allowance for `handler`, counting dropped lines in `dropped`.
    pub(super) fn new(handler: Arc<str>, dropped: prometheus::IntCounter) -> Self {
        Self {
            handler,
            state: Mutex::new(Bucket {
                tokens: BURST,
                refilled: Instant::now(),
                dropping: false,
            }),
            dropped,
        }
    }

    /// Whether one more line may be logged now.
    fn admit(&self) -> bool {
        let mut bucket = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let earned = now.duration_since(bucket.refilled).as_secs_f64() * RATE;
        bucket.tokens = (bucket.tokens + earned).min(BURST);
        bucket.refilled = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            bucket.dropping = false;
            return true;
        }
        self.dropped.inc();
        if !bucket.dropping {
            bucket.dropping = true;
            tracing::warn!(
                target: "wasmgate::guest",
                handler = &*self.handler,
                "guest output over {RATE} lines/s: dropping lines (counted in wasmgate_guest_log_lines_dropped_total)"
            );
        }
        false
    }
}

/// A guest's stdout or stderr in one store: complete lines become log events.
#[derive(Clone)]
pub(super) struct GuestLog {
    lines: Arc<Mutex<Lines>>,
}

/// The stream's partial line, shared by every handle the guest gets for it.
struct Lines {
    stream: GuestStream,
    pending: Vec<u8>,
    budget: Arc<LogBudget>,
    /// Set when the guest prints a line that is exactly `READY` (a
    /// resident's readiness signal), if anyone listens.
    ready: Option<Ready>,
}

/// A resident's readiness signal, shared by its stores' stdout.
pub(super) type Ready = Arc<tokio::sync::watch::Sender<bool>>;

impl GuestLog {
    pub(super) fn new(budget: &Arc<LogBudget>, stream: GuestStream, ready: Option<Ready>) -> Self {
        Self {
            lines: Arc::new(Mutex::new(Lines {
                stream,
                pending: Vec::new(),
                budget: Arc::clone(budget),
                ready,
            })),
        }
    }

    fn writer(&self) -> LineWriter {
        LineWriter { log: self.clone() }
    }
}

impl IsTerminal for GuestLog {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestLog {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.writer())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.writer())
    }
}

impl Lines {
    fn accept(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
        while let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            self.emit(&line[..line.len() - 1]);
        }
        while self.pending.len() >= MAX_LINE {
            let piece: Vec<u8> = self.pending.drain(..MAX_LINE).collect();
            self.emit(&piece);
        }
    }

    fn emit(&self, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches('\r');
        if let Some(ready) = &self.ready
            && text == "READY"
        {
            ready.send_replace(true);
        }
        if text.is_empty() || !self.budget.admit() {
            return;
        }
        let handler = &*self.budget.handler;
        match self.stream {
            GuestStream::Stdout => tracing::info!(target: "wasmgate::guest", handler, "{text}"),
            GuestStream::Stderr => tracing::warn!(target: "wasmgate::guest", handler, "{text}"),
        }
    }
}

impl Drop for Lines {
    /// The store is gone: an unfinished last line still goes out.
    fn drop(&mut self) {
        if !self.pending.is_empty() {
            let rest = std::mem::take(&mut self.pending);
            self.emit(&rest);
        }
    }
}

/// One stream handle the guest obtained; all write into the same [`Lines`].
struct LineWriter {
    log: GuestLog,
}

impl LineWriter {
    fn accept(&self, bytes: &[u8]) {
        self.log
            .lines
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .accept(bytes);
    }
}

impl OutputStream for LineWriter {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.accept(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(MAX_LINE)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for LineWriter {
    async fn ready(&mut self) {}
}

impl AsyncWrite for LineWriter {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.accept(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_admits_a_burst_then_the_rate() {
        let dropped = prometheus::IntCounter::new("dropped", "test").expect("counter");
        let budget = LogBudget::new(Arc::from("t"), dropped.clone());
        let admitted = (0..BURST as usize + 50).filter(|_| budget.admit()).count();
        // A few tokens may be earned while the loop runs.
        assert!(
            (BURST as usize..BURST as usize + 5).contains(&admitted),
            "{admitted}"
        );
        assert_eq!(admitted as u64 + dropped.get(), BURST as u64 + 50);
    }
}
