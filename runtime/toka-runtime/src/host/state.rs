//! The data each agent's `Store` holds, and the host side of the `toka:runtime`
//! interfaces (`bus`, `log`) implemented on it.
//!
//! WASI is linked so that ordinary `wasm32-wasip2` guests load, but the
//! context grants nothing: no environment, no arguments, no preopened
//! directories, no network (TCP/UDP/DNS all refused), stdin closed, and
//! clocks coarsened to a millisecond so a guest cannot use them as a fine
//! timer. Stdout and stderr go to the host's log, capped.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use toka_core::PublishError;
use wasmtime::StoreLimits;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{
    HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView,
};

use super::bindings::{bus, log, types};
use super::caps::AgentCaps;
use super::stdio::{GuestOutput, OutputCounters, Stream};
use crate::publisher::AgentPublisher;

/// Longest log message (bytes) a guest may emit in one record.
const MAX_LOG_MESSAGE: usize = 8 * 1024;
/// Clock resolution exposed to guests.
const CLOCK_RESOLUTION_NS: u64 = 1_000_000;

/// Per-store data: one per agent instance.
pub struct HostState {
    pub(crate) publisher: Arc<AgentPublisher>,
    pub(crate) limits: StoreLimits,
    /// The capabilities the agent was granted (none by default).
    pub(crate) caps: Arc<AgentCaps>,
    wasi: WasiCtx,
    table: ResourceTable,
    stdout: GuestOutput,
    stderr: GuestOutput,
}

impl std::fmt::Debug for HostState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostState")
            .field("agent", self.publisher.name())
            .finish_non_exhaustive()
    }
}

struct CoarseMonotonic(std::time::Instant);

impl HostMonotonicClock for CoarseMonotonic {
    fn resolution(&self) -> u64 {
        CLOCK_RESOLUTION_NS
    }
    fn now(&self) -> u64 {
        let ns = self.0.elapsed().as_nanos() as u64;
        ns - ns % CLOCK_RESOLUTION_NS
    }
}

struct CoarseWall;

impl HostWallClock for CoarseWall {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(CLOCK_RESOLUTION_NS)
    }
    fn now(&self) -> Duration {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Duration::from_millis(now.as_millis() as u64)
    }
}

impl HostState {
    /// Fresh state for one instance of the agent behind `publisher`.
    pub fn new(
        publisher: Arc<AgentPublisher>,
        limits: StoreLimits,
        output_cap: u64,
        output: Arc<OutputCounters>,
    ) -> Self {
        let name = publisher.name().clone();
        let stdout = GuestOutput::new(name.clone(), Stream::Stdout, output_cap, output.clone());
        let stderr = GuestOutput::new(name, Stream::Stderr, output_cap, output);
        let wasi = WasiCtxBuilder::new()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .monotonic_clock(CoarseMonotonic(std::time::Instant::now()))
            .wall_clock(CoarseWall)
            .build();
        let mut table = ResourceTable::new();
        // Bounds the handles (streams, pollables) a guest can hold at once.
        table.set_max_capacity(4096);
        HostState {
            publisher,
            limits,
            caps: Arc::default(),
            wasi,
            table,
            stdout,
            stderr,
        }
    }

    /// Grant this instance `caps` (the default is none).
    pub fn with_caps(mut self, caps: Arc<AgentCaps>) -> Self {
        self.caps = caps;
        self
    }

    /// Log any partial last line the guest printed.
    pub fn flush_output(&self) {
        self.stdout.flush_partial();
        self.stderr.flush_partial();
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl From<PublishError> for types::Error {
    fn from(e: PublishError) -> Self {
        match e {
            PublishError::AccessDenied => types::Error::AccessDenied,
            PublishError::TooLarge(n) => types::Error::TooLarge(n),
            PublishError::RateLimited => types::Error::RateLimited,
            PublishError::Invalid(m) => types::Error::Invalid(m),
            PublishError::Unavailable => types::Error::Unavailable,
        }
    }
}

impl types::Host for HostState {}

impl bus::Host for HostState {
    fn publish(&mut self, kind: String, payload: Vec<u8>) -> Result<u64, types::Error> {
        self.publisher
            .publish(&kind, Bytes::from(payload))
            .map_err(Into::into)
    }
}

/// `s` cut to at most `max` bytes on a character boundary (for log records).
pub(crate) fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

struct Fields<'a>(&'a [log::Field]);

impl std::fmt::Display for Fields<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, field) in self.0.iter().take(32).enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{}={:?}", cut(&field.key, 64), cut(&field.value, 1024))?;
        }
        Ok(())
    }
}

impl log::Host for HostState {
    fn log(&mut self, level: log::Level, message: String, fields: Vec<log::Field>) {
        let agent = &**self.publisher.name();
        let message = cut(&message, MAX_LOG_MESSAGE);
        let fields = Fields(&fields);
        match level {
            log::Level::Trace => {
                tracing::trace!(target: "toka::guest", agent, fields = %fields, "{message}")
            }
            log::Level::Debug => {
                tracing::debug!(target: "toka::guest", agent, fields = %fields, "{message}")
            }
            log::Level::Info => {
                tracing::info!(target: "toka::guest", agent, fields = %fields, "{message}")
            }
            log::Level::Warn => {
                tracing::warn!(target: "toka::guest", agent, fields = %fields, "{message}")
            }
            log::Level::Error => {
                tracing::error!(target: "toka::guest", agent, fields = %fields, "{message}")
            }
        }
    }
}
