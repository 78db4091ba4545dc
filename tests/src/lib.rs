//! Fixtures for Toka's integration tests: guest paths, a native agent that
//! records what it receives (so tests await events instead of sleeping), and
//! helpers to build a runtime from inline TOML.
#![deny(missing_docs)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use toka_core::{Agent, Context, Event, PatternSet, RuntimeConfig};
use tokio::sync::Notify;

include!(concat!(env!("OUT_DIR"), "/gen.rs"));

/// How long a test waits for an expected event before failing.
pub const WAIT: Duration = Duration::from_secs(20);

/// Parse `toml` as a config whose `modules_dir` is the guests directory.
pub fn config(toml: &str) -> RuntimeConfig {
    let text = format!("modules_dir = {GUESTS_DIR:?}\n{toml}");
    RuntimeConfig::parse_declared(
        &text,
        Path::new("test.toml"),
        Path::new("."),
        &toka_runtime::host::caps::declared(),
        &|k| std::env::var(k).ok(),
    )
    .unwrap_or_else(|e| panic!("test config: {e}"))
}

/// A native agent that records every event it receives.
#[derive(Clone)]
pub struct Recorder {
    interest: PatternSet,
    events: Arc<Mutex<Vec<Arc<Event>>>>,
    changed: Arc<Notify>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("events", &self.events.lock().len())
            .finish()
    }
}

impl Recorder {
    /// Records kinds matching `patterns`.
    pub fn new(patterns: &[&str]) -> Self {
        Recorder {
            interest: PatternSet::parse(patterns).expect("valid patterns"),
            events: Default::default(),
            changed: Default::default(),
        }
    }

    /// Everything recorded so far.
    pub fn events(&self) -> Vec<Arc<Event>> {
        self.events.lock().clone()
    }

    /// Payloads (as text) of recorded events of `kind`.
    pub fn payloads(&self, kind: &str) -> Vec<String> {
        self.events
            .lock()
            .iter()
            .filter(|e| e.kind.as_str() == kind)
            .map(|e| String::from_utf8_lossy(&e.payload).into_owned())
            .collect()
    }

    /// Wait until `done` holds for the recorded events; panics after [`WAIT`].
    pub async fn wait_for(&self, what: &str, done: impl Fn(&[Arc<Event>]) -> bool) {
        let result = tokio::time::timeout(WAIT, async {
            loop {
                let notified = self.changed.notified();
                if done(&self.events.lock()) {
                    return;
                }
                notified.await;
            }
        })
        .await;
        if result.is_err() {
            let seen: Vec<String> = self
                .events()
                .iter()
                .map(|e| format!("{} {}", e.kind, String::from_utf8_lossy(&e.payload)))
                .collect();
            panic!("timed out waiting for {what}; recorded: {seen:#?}");
        }
    }

    /// Wait for `n` events of `kind`, returning their payloads.
    pub async fn wait_kind(&self, kind: &str, n: usize) -> Vec<String> {
        self.wait_for(&format!("{n} x {kind}"), |evs| {
            evs.iter().filter(|e| e.kind.as_str() == kind).count() >= n
        })
        .await;
        self.payloads(kind)
    }
}

impl Agent for Recorder {
    fn interest(&self) -> PatternSet {
        self.interest.clone()
    }

    async fn handle(&self, event: Arc<Event>, _cx: &Context) -> anyhow::Result<()> {
        self.events.lock().push(event);
        self.changed.notify_waiters();
        Ok(())
    }
}

/// Every log record of the kernel at any level (all tests of the process,
/// bounded), so tests can prove what never reaches a log.
static CAPTURED: Mutex<Vec<u8>> = Mutex::new(Vec::new());

/// Bound of [`CAPTURED`]; later records are dropped.
const CAPTURE_LIMIT: usize = 256 << 20;

#[derive(Clone, Copy)]
struct Capture;

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut all = CAPTURED.lock();
        if all.len() + buf.len() <= CAPTURE_LIMIT {
            all.extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Install the test log subscriber once: warnings go to the test harness's
/// captured output; the kernel's records at every level also go to a
/// process-wide buffer read by [`captured_logs`].
pub fn logs() {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::{EnvFilter, Layer as _, fmt};
    let _ = tracing_subscriber::registry()
        .with(
            fmt::layer()
                .with_test_writer()
                .with_filter(EnvFilter::new("warn")),
        )
        .with(
            fmt::layer()
                .with_ansi(false)
                .with_writer(|| Capture)
                .with_filter(EnvFilter::new(
                    "toka=trace,toka_runtime=trace,toka_secrets=trace,toka_vault=trace,toka_auth=trace,warn",
                )),
        )
        .try_init();
}

/// Everything [`logs`] captured so far in this process, as text.
pub fn captured_logs() -> String {
    String::from_utf8_lossy(&CAPTURED.lock()).into_owned()
}

/// A runtime built from `toml` (see [`config`]) with a [`Recorder`] of
/// `record` registered beside its agents as `recorder`, not yet running: for
/// tests that register more, or drive `run` themselves (else see
/// [`Running::start`]).
pub fn with_recorder(toml: &str, record: &[&str]) -> (toka_runtime::Runtime, Recorder) {
    let mut rt = toka_runtime::Runtime::new(config(toml)).expect("runtime builds");
    let rec = Recorder::new(record);
    rt.register("recorder", rec.clone())
        .expect("recorder registers");
    (rt, rec)
}

/// A runtime started in the background with a [`Recorder`] registered beside
/// the configured agents: the shared setup of the integration tests.
#[derive(Debug)]
pub struct Running {
    /// Publishes outside input, as the test harness.
    pub cx: Context,
    /// Records the kinds asked for at start.
    pub rec: Recorder,
    stop: toka_runtime::ShutdownHandle,
    run: tokio::task::JoinHandle<toka_runtime::Result<toka_runtime::Report>>,
}

impl Running {
    /// Build a runtime from `toml` (see [`config`]), register a recorder of
    /// `record`, and run it until [`Running::stop`].
    pub fn start(toml: &str, record: &[&str]) -> Self {
        let (rt, rec) = with_recorder(toml, record);
        let cx = rt.injector("test");
        let stop = rt.shutdown_handle();
        let run = tokio::spawn(rt.run_until(std::future::pending()));
        Running { cx, rec, stop, run }
    }

    /// Shut down (draining queued events) and return the final report.
    pub async fn stop(self) -> toka_runtime::Report {
        self.stop.shutdown();
        self.run
            .await
            .expect("runtime task")
            .expect("runtime ends cleanly")
    }
}
