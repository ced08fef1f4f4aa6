//! A guest's stdout and stderr, turned into log lines.

use std::sync::Arc;

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

#[derive(Debug, Clone, Copy)]
pub(super) enum GuestStream {
    Stdout,
    Stderr,
}

/// A guest's stdout or stderr: complete lines become log events. Writing never
/// blocks (the log writer is non-blocking), unlike WASI's default stdio, which
/// would stall a tokio worker on a slow terminal or pipe.
#[derive(Clone)]
pub(super) struct GuestLog {
    handler: Arc<str>,
    stream: GuestStream,
}

/// Longest line kept whole; longer output is logged in pieces of this size.
const MAX_LINE: usize = 4096;

impl GuestLog {
    pub(super) fn new(handler: &Arc<str>, stream: GuestStream) -> Self {
        Self {
            handler: Arc::clone(handler),
            stream,
        }
    }

    fn writer(&self) -> LineWriter {
        LineWriter {
            log: self.clone(),
            pending: Vec::new(),
        }
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

/// Splits written bytes into lines for [`GuestLog`].
struct LineWriter {
    log: GuestLog,
    pending: Vec<u8>,
}

impl LineWriter {
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
        if text.is_empty() {
            return;
        }
        let handler = &*self.log.handler;
        match self.log.stream {
            GuestStream::Stdout => tracing::info!(target: "wasmgate::guest", handler, "{text}"),
            GuestStream::Stderr => tracing::warn!(target: "wasmgate::guest", handler, "{text}"),
        }
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if !self.pending.is_empty() {
            let rest = std::mem::take(&mut self.pending);
            self.emit(&rest);
        }
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
        mut self: std::pin::Pin<&mut Self>,
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
