//! The data each agent's `Store` holds, and the host side of the `toka:runtime`
//! interfaces (`bus`, `log`) implemented on it.
//!
//! WASI is linked so that ordinary `wasm32-wasip2` guests load, but the
//! context grants nothing: no environment, no arguments, no preopened
//! directories, no network (TCP/UDP/DNS all refused), stdin closed, and
//! clocks coarsened to a millisecond so a guest cannot use them as a fine
//! timer. Stdout and stderr go to the host's log, capped.
//!
//! The one filesystem grant is the agent's `dirs` ([`HostState::with_dirs`]):
//! each host directory is preopened at its guest path, read-only
//! ([`FsPerms::ReadOnly`]) unless marked `writable`. wasmtime-wasi resolves
//! every guest path beneath the preopen with `cap-std`, which refuses `..`
//! past the preopen's root and symlinks (absolute or relative) that lead out
//! of it. An agent without `dirs` gets no preopens, and building its context
//! costs nothing more than before.
//!
//! The `log` interface is budgeted per instance like stdout: records and
//! bytes per second (`log_records_per_sec`, `log_bytes_per_sec`), each a
//! token bucket holding one second's worth. Records over budget are dropped
//! and counted, never a fault; the first drop of an instance is logged once.
//! Every message, field key and value is bounded and escaped by
//! [`toka_core::text::bounded`] before it is logged.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use toka_core::config::{DirGrant, Limits};
use toka_core::text::{MAX_FIELD_KEY, MAX_FIELD_VALUE, MAX_FIELDS, MAX_LOG_MESSAGE, bounded};
use wasmtime::StoreLimits;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{
    FsPerms, HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView,
};

use super::bindings::{bus, log, request, types};
use super::caps::{AgentCaps, Holds};
use super::stdio::{GuestOutput, OutputCounters, Stream};
use super::wait::{BoundedPoll, WaitState};
use crate::publisher::AgentPublisher;
use crate::rpc::AgentRpc;

/// Clock resolution exposed to guests.
const CLOCK_RESOLUTION_NS: u64 = 1_000_000;

/// Per-store data: one per agent instance.
pub struct HostState {
    pub(crate) publisher: Arc<AgentPublisher>,
    pub(crate) limits: StoreLimits,
    /// The capabilities the agent was granted (none by default).
    pub(crate) caps: Arc<AgentCaps>,
    /// The deadline of the call in progress, for host calls that wait.
    pub(crate) wait: WaitState,
    /// Request/reply for this agent (`None` outside a runtime: requests are
    /// denied).
    pub(crate) rpc: Option<Arc<AgentRpc>>,
    /// The chain depth of the call in progress: 0 in `init`/`handle`, n
    /// while serving a request that is n requests deep.
    pub(crate) depth: u32,
    /// What capabilities keep per instance ([`toka_capability::View::extensions`]).
    extensions: http::Extensions,
    wasi: WasiCtx,
    table: ResourceTable,
    stdout: GuestOutput,
    stderr: GuestOutput,
    output: Arc<OutputCounters>,
    log_budget: LogBuckets,
}

/// The `log` budget of one instance (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogBudget {
    /// Records per second, and the most banked.
    pub records_per_sec: u32,
    /// Bytes (message plus field keys and values, after truncation) per
    /// second, and the most banked.
    pub bytes_per_sec: u64,
}

impl LogBudget {
    /// The budget `limits` give each instance.
    pub fn from_limits(limits: &Limits) -> Self {
        LogBudget {
            records_per_sec: limits.log_records_per_sec,
            bytes_per_sec: limits.log_bytes_per_sec,
        }
    }
}

/// Two token buckets (records, bytes), each holding one second's worth.
#[derive(Debug)]
struct LogBuckets {
    budget: LogBudget,
    records: f64,
    bytes: f64,
    last: std::time::Instant,
    /// Whether this instance has been warned about (once).
    warned: bool,
}

impl LogBuckets {
    fn new(budget: LogBudget) -> Self {
        let budget = LogBudget {
            records_per_sec: budget.records_per_sec.max(1),
            bytes_per_sec: budget.bytes_per_sec.max(1),
        };
        LogBuckets {
            budget,
            records: f64::from(budget.records_per_sec),
            bytes: budget.bytes_per_sec as f64,
            last: std::time::Instant::now(),
            warned: false,
        }
    }

    fn refill(&mut self, now: std::time::Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        let records = f64::from(self.budget.records_per_sec);
        let bytes = self.budget.bytes_per_sec as f64;
        self.records = (self.records + elapsed * records).min(records);
        self.bytes = (self.bytes + elapsed * bytes).min(bytes);
    }

    /// Whether a record could be taken at all (refilled to `now`).
    fn has_record(&mut self, now: std::time::Instant) -> bool {
        self.refill(now);
        self.records >= 1.0
    }

    /// Take one record of `bytes` bytes if both buckets hold enough (after
    /// [`LogBuckets::has_record`]).
    fn try_take(&mut self, bytes: usize) -> bool {
        let bytes = bytes as f64;
        if self.records >= 1.0 && self.bytes >= bytes {
            self.records -= 1.0;
            self.bytes -= bytes;
            true
        } else {
            false
        }
    }
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

/// The context every instance starts from: output to the host's log, no
/// network, coarse clocks, and nothing else.
fn wasi_builder(stdout: &GuestOutput, stderr: &GuestOutput) -> WasiCtxBuilder {
    let mut builder = WasiCtxBuilder::new();
    builder
        .stdout(stdout.clone())
        .stderr(stderr.clone())
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .monotonic_clock(CoarseMonotonic(std::time::Instant::now()))
        .wall_clock(CoarseWall);
    builder
}

impl HostState {
    /// Fresh state for one instance of the agent behind `publisher`: at most
    /// `output_cap` bytes of stdout and stderr and `log_budget` of `log`
    /// records, counted into `output`.
    pub fn new(
        publisher: Arc<AgentPublisher>,
        limits: StoreLimits,
        output_cap: u64,
        log_budget: LogBudget,
        output: Arc<OutputCounters>,
    ) -> Self {
        let name = publisher.name().clone();
        let stdout = GuestOutput::new(name.clone(), Stream::Stdout, output_cap, output.clone());
        let stderr = GuestOutput::new(name, Stream::Stderr, output_cap, output.clone());
        let wasi = wasi_builder(&stdout, &stderr).build();
        let mut table = ResourceTable::new();
        // Bounds the handles (streams, pollables) a guest can hold at once.
        table.set_max_capacity(4096);
        HostState {
            publisher,
            limits,
            caps: Arc::default(),
            wait: WaitState::default(),
            rpc: None,
            depth: 0,
            extensions: http::Extensions::new(),
            wasi,
            table,
            stdout,
            stderr,
            output,
            log_budget: LogBuckets::new(log_budget),
        }
    }

    /// Grant this instance `caps` (the default is none).
    pub fn with_caps(mut self, caps: Arc<AgentCaps>) -> Self {
        self.caps = caps;
        self
    }

    /// Preopen `dirs` (the agent's `dirs` grant) for this instance. Each
    /// host directory is opened now, so one removed since the runtime
    /// started fails the instance's start with an error naming it. Without
    /// dirs this does nothing.
    pub fn with_dirs(mut self, dirs: &[DirGrant]) -> Result<Self, String> {
        if dirs.is_empty() {
            return Ok(self);
        }
        let mut builder = wasi_builder(&self.stdout, &self.stderr);
        for dir in dirs {
            let perms = if dir.writable {
                FsPerms::ReadWrite
            } else {
                FsPerms::ReadOnly
            };
            builder
                .preopened_dir(&dir.host, &dir.guest, perms)
                .map_err(|e| {
                    format!(
                        "dirs: cannot open {} for {}: {e:#}",
                        dir.host.display(),
                        dir.guest
                    )
                })?;
        }
        self.wasi = builder.build();
        Ok(self)
    }

    /// Log any partial last line the guest printed.
    pub fn flush_output(&self) {
        self.stdout.flush_partial();
        self.stderr.flush_partial();
    }
}

impl HostState {
    /// `wasi:io/poll` for this instance, its waits bounded by the call's deadline.
    pub(crate) fn poll(&mut self) -> BoundedPoll<'_> {
        BoundedPoll {
            table: &mut self.table,
            wait: &self.wait,
        }
    }
}

/// Every capability's view of this instance: the agent, its state for that
/// capability (from [`AgentCaps`]), and the resource table.
impl<C: toka_capability::Capability> toka_capability::Has<C> for HostState
where
    AgentCaps: Holds<C>,
{
    fn view(&mut self) -> toka_capability::View<'_, C> {
        toka_capability::View {
            agent: self.publisher.name(),
            state: self.caps.holds(),
            table: &mut self.table,
            wait: &self.wait,
            extensions: &mut self.extensions,
        }
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

impl types::Host for HostState {}

impl bus::Host for HostState {
    fn publish(&mut self, kind: String, payload: Vec<u8>) -> Result<u64, types::Error> {
        self.publisher
            .publish(&kind, Bytes::from(payload))
            .map_err(Into::into)
    }
}

impl request::Host for HostState {
    fn request(
        &mut self,
        kind: String,
        payload: Vec<u8>,
        timeout_ms: u32,
    ) -> Result<Vec<u8>, request::RequestError> {
        match &self.rpc {
            Some(rpc) => rpc.request(&self.wait, self.depth, &kind, payload, timeout_ms),
            None => Err(request::RequestError::AccessDenied),
        }
    }
}

/// A record's fields, bounded: at most [`MAX_FIELDS`], each key and value
/// cut and escaped; written `key="value"`.
struct Fields<'a> {
    kept: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    cut: usize,
}

impl<'a> Fields<'a> {
    fn new(fields: &'a [log::Field]) -> Self {
        Fields {
            kept: fields
                .iter()
                .take(MAX_FIELDS)
                .map(|f| {
                    (
                        bounded(&f.key, MAX_FIELD_KEY),
                        bounded(&f.value, MAX_FIELD_VALUE),
                    )
                })
                .collect(),
            cut: fields.len().saturating_sub(MAX_FIELDS),
        }
    }

    /// Bytes charged to the budget.
    fn len(&self) -> usize {
        self.kept.iter().map(|(k, v)| k.len() + v.len()).sum()
    }
}

impl std::fmt::Display for Fields<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (key, value)) in self.kept.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{key}=\"")?;
            // `bounded` leaves quotes alone; escape them so a value cannot
            // end its quotes and pose as another field.
            for (j, part) in value.split('"').enumerate() {
                if j > 0 {
                    f.write_str("\\\"")?;
                }
                f.write_str(part)?;
            }
            f.write_str("\"")?;
        }
        if self.cut > 0 {
            write!(f, " …[cut {} fields]", self.cut)?;
        }
        Ok(())
    }
}

/// Bytes of a record as the guest sent it (what a dropped record is counted as).
fn raw_len(message: &str, fields: &[log::Field]) -> u64 {
    let fields: usize = fields.iter().map(|f| f.key.len() + f.value.len()).sum();
    (message.len() + fields) as u64
}

impl HostState {
    /// Count a record dropped over budget, warning once per instance.
    fn drop_log_record(&mut self, bytes: u64) {
        self.output
            .log_records_dropped
            .fetch_add(1, Ordering::Relaxed);
        self.output
            .log_bytes_dropped
            .fetch_add(bytes, Ordering::Relaxed);
        if !self.log_budget.warned {
            self.log_budget.warned = true;
            let budget = self.log_budget.budget;
            tracing::warn!(
                agent = %self.publisher.name(),
                log_records_per_sec = budget.records_per_sec,
                log_bytes_per_sec = budget.bytes_per_sec,
                "guest log budget exhausted; dropping records over budget from this instance"
            );
        }
    }
}

impl log::Host for HostState {
    fn log(&mut self, level: log::Level, message: String, fields: Vec<log::Field>) {
        // Out of records: drop before doing any work on the text.
        if !self.log_budget.has_record(std::time::Instant::now()) {
            self.drop_log_record(raw_len(&message, &fields));
            return;
        }
        let bounded_message = bounded(&message, MAX_LOG_MESSAGE);
        let bounded_fields = Fields::new(&fields);
        let bytes = bounded_message.len() + bounded_fields.len();
        if !self.log_budget.try_take(bytes) {
            self.drop_log_record(raw_len(&message, &fields));
            return;
        }
        self.output.log_records.fetch_add(1, Ordering::Relaxed);
        self.output
            .log_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
        let agent = &**self.publisher.name();
        let message = bounded_message;
        let fields = bounded_fields;
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
