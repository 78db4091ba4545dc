//! Guest stdout/stderr, routed into the host's `tracing` output.
//!
//! Output is split into lines, each logged with the agent's name (target
//! `toka::guest`), and capped per instance: a guest printing gigabytes costs the
//! host a bounded buffer and one warning, never disk or memory. Writes past the
//! cap are accepted and discarded (a guest is not told, so it cannot use the
//! cap as a signal), and the instance's deadline still bounds how long it can
//! spend printing.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Longest line logged; longer lines are cut (and marked) to keep records small.
const MAX_LINE: usize = 4096;

/// Which guest stream this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// The guest's stdout, logged at `info`.
    Stdout,
    /// The guest's stderr, logged at `warn`.
    Stderr,
}

/// Guest output one agent had logged and discarded (all instances): stdout
/// and stderr bytes against the `stdout_bytes` cap, and `log` records and
/// bytes against the `log_*_per_sec` budget. How an operator sees that the
/// caps are doing their job.
#[derive(Debug, Default)]
pub struct OutputCounters {
    /// Stdout/stderr bytes passed on to the log.
    pub logged: AtomicU64,
    /// Stdout/stderr bytes dropped past the per-instance cap.
    pub discarded: AtomicU64,
    /// `log` records passed on to the log.
    pub log_records: AtomicU64,
    /// `log` bytes passed on (message plus field keys and values, after
    /// truncation): what the byte budget is charged.
    pub log_bytes: AtomicU64,
    /// `log` records dropped because the instance was over its budget.
    pub log_records_dropped: AtomicU64,
    /// Bytes of the dropped records, as the guest sent them.
    pub log_bytes_dropped: AtomicU64,
}

struct State {
    agent: Arc<str>,
    counters: Arc<OutputCounters>,
    stream: Stream,
    line: Vec<u8>,
    remaining: u64,
    warned: bool,
}

impl State {
    fn emit(&mut self) {
        let text = String::from_utf8_lossy(&self.line);
        // Escaped like all guest text, so a `\r` or an escape sequence
        // cannot rewrite the operator's terminal or log line.
        let text = toka_core::text::bounded(text.trim_end_matches('\r'), MAX_LINE);
        match self.stream {
            Stream::Stdout => {
                tracing::info!(target: "toka::guest", agent = %self.agent, stream = "stdout", "{text}")
            }
            Stream::Stderr => {
                tracing::warn!(target: "toka::guest", agent = %self.agent, stream = "stderr", "{text}")
            }
        }
        self.line.clear();
    }

    fn write(&mut self, mut bytes: &[u8]) {
        if self.remaining == 0 {
            self.counters
                .discarded
                .fetch_add(bytes.len() as u64, Ordering::Relaxed);
            if !self.warned && !bytes.is_empty() {
                self.warned = true;
                tracing::warn!(agent = %self.agent, stream = ?self.stream, "guest output cap reached; discarding further output from this instance");
            }
            return;
        }
        if bytes.len() as u64 > self.remaining {
            let over = bytes.len() as u64 - self.remaining;
            self.counters.discarded.fetch_add(over, Ordering::Relaxed);
            bytes = &bytes[..self.remaining as usize];
        }
        self.remaining -= bytes.len() as u64;
        self.counters
            .logged
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        for chunk in bytes.split_inclusive(|b| *b == b'\n') {
            let (body, newline) = match chunk.split_last() {
                Some((b'\n', body)) => (body, true),
                _ => (chunk, false),
            };
            let room = MAX_LINE.saturating_sub(self.line.len());
            self.line.extend_from_slice(&body[..body.len().min(room)]);
            if newline || self.line.len() >= MAX_LINE {
                self.emit();
            }
        }
    }
}

/// A capped, line-buffered sink for one guest stream.
#[derive(Clone)]
pub struct GuestOutput(Arc<Mutex<State>>);

impl GuestOutput {
    /// A sink for `agent`'s `stream` that logs at most `cap` bytes, counting
    /// into `counters`.
    pub fn new(agent: Arc<str>, stream: Stream, cap: u64, counters: Arc<OutputCounters>) -> Self {
        GuestOutput(Arc::new(Mutex::new(State {
            agent,
            counters,
            stream,
            line: Vec::new(),
            remaining: cap,
            warned: false,
        })))
    }

    /// Log a trailing partial line, if any.
    pub fn flush_partial(&self) {
        let mut state = self.0.lock();
        if !state.line.is_empty() {
            state.emit();
        }
    }
}

impl std::fmt::Debug for GuestOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestOutput").finish_non_exhaustive()
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for GuestOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.0.lock().write(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for GuestOutput {
    async fn ready(&mut self) {}
}

impl AsyncWrite for GuestOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.0.lock().write(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_bounds_buffered_and_logged_bytes() {
        let out = GuestOutput::new("a".into(), Stream::Stdout, 10, Default::default());
        let mut s = out.0.lock();
        s.write(b"0123456789abcdef\n");
        assert_eq!(s.remaining, 0);
        assert!(s.line.len() <= 10);
        s.write(&vec![b'x'; 1 << 20]);
        assert!(s.line.len() <= 10, "nothing is buffered past the cap");
        assert_eq!(s.counters.logged.load(Ordering::Relaxed), 10);
        assert_eq!(s.counters.discarded.load(Ordering::Relaxed), 7 + (1 << 20));
    }

    #[test]
    fn long_lines_are_cut() {
        let out = GuestOutput::new("a".into(), Stream::Stdout, u64::MAX, Default::default());
        let mut s = out.0.lock();
        s.write(&vec![b'x'; MAX_LINE * 3]);
        assert!(s.line.len() <= MAX_LINE);
    }
}
