//! `toka bench`: Toka's performance, measured with the repo's own `sink`
//! guest, beside the floor wasmtime itself sets for the same guest.
//!
//! Every scenario prints one row of a readable table and one JSON line
//! prefixed `BENCH ` (stable field names, for CI and for comparing runs).
//! `--quick` shrinks every scenario to seconds; a full run takes a few
//! minutes on two cores.
//!
//! # Layout
//! - `raw`: the floor — the sink called and instantiated straight through
//!   wasmtime with its fastest settings, no Toka;
//! - `dispatch`: events through the bus into one agent, fan-out to many,
//!   publish→handled latency;
//! - `restart`: a fresh ready agent instance against raw pooled instantiation;
//! - `requests`: request/reply round trips against two raw calls;
//! - `http` (feature `http`): outbound GETs through the guard against
//!   native hyper;
//! - `kv` (feature `kv`): durable key-value sets and gets through a guest
//!   against redb called directly;
//! - `ledger` (feature `ledger`): transfers through a guest, from one agent
//!   and from eight, against redb's bare transaction rate;
//! - `child`: scenarios that run in a child process so their measurements
//!   start clean: footprint (resident memory per idle agent) and cold start.

mod child;
mod dispatch;
#[cfg(feature = "http")]
mod http;
#[cfg(feature = "http")]
mod inbound;
#[cfg(feature = "kv")]
mod kv;
#[cfg(feature = "ledger")]
mod ledger;
mod raw;
mod requests;
mod restart;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::{Map, Value};
use toka_core::RuntimeConfig;
use toka_runtime::host::engine::MemoryLayout;
use toka_runtime::{Runtime, RuntimeOptions};

pub use child::ChildArgs;

/// `toka bench` arguments.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Run every scenario briefly (seconds; for CI).
    #[arg(long)]
    quick: bool,
    /// Run only the scenarios whose name contains this text.
    #[arg(long)]
    filter: Option<String>,
    /// Print only the `BENCH {...}` JSON lines, not the table.
    #[arg(long)]
    json: bool,
    /// Directory holding `sink.wasm` (default: the repo's `target/modules`,
    /// where the build puts the guests).
    #[arg(long, value_name = "DIR")]
    modules: Option<PathBuf>,
}

/// Sizes of a run: `--quick` or full.
#[derive(Debug, Clone, Copy)]
struct Scale {
    quick: bool,
    /// Repetitions of a throughput measurement; the median is reported.
    repeats: usize,
    calls: u64,
    events_64b: u64,
    events_4k: u64,
    fanout_deliveries: u64,
    latency_events: u64,
    instances: u64,
    footprint: &'static [usize],
}

impl Scale {
    fn new(quick: bool) -> Self {
        if quick {
            Scale {
                quick,
                repeats: 1,
                calls: 200_000,
                events_64b: 300_000,
                events_4k: 100_000,
                fanout_deliveries: 300_000,
                latency_events: 20_000,
                instances: 5_000,
                footprint: &[1_000],
            }
        } else {
            Scale {
                quick,
                repeats: 3,
                calls: 2_000_000,
                events_64b: 3_000_000,
                events_4k: 1_000_000,
                fanout_deliveries: 3_000_000,
                latency_events: 200_000,
                instances: 20_000,
                footprint: &[1_000, 100_000],
            }
        }
    }
}

/// One scenario's result.
#[derive(Debug)]
struct Outcome {
    name: String,
    /// The JSON line's fields (besides `name`).
    fields: Map<String, Value>,
    /// The table's result column.
    summary: String,
    /// The target from the issue and whether this run met it.
    target: Option<(String, bool)>,
}

impl Outcome {
    fn new(name: impl Into<String>, summary: impl Into<String>) -> Self {
        Outcome {
            name: name.into(),
            fields: Map::new(),
            summary: summary.into(),
            target: None,
        }
    }

    fn field(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.fields.insert(key.into(), value.into());
        self
    }

    fn target(mut self, text: impl Into<String>, met: bool) -> Self {
        self.target = Some((text.into(), met));
        self
    }

    fn json_line(&self) -> String {
        let mut obj = Map::new();
        obj.insert("name".into(), Value::from(self.name.clone()));
        obj.extend(self.fields.clone());
        if let Some((_, met)) = &self.target {
            obj.insert("target_met".into(), Value::from(*met));
        }
        format!("BENCH {}", Value::Object(obj))
    }
}

/// What scenarios share: where the sink is, the floor, and results later
/// scenarios build on.
struct Session {
    scale: Scale,
    modules: PathBuf,
    sink: PathBuf,
    raw: raw::Raw,
    /// Peak events/s into one agent (64 B), for the latency scenario's load.
    peak_64b: Option<f64>,
}

fn modules_dir(arg: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let dir = arg
        .or_else(|| option_env!("TOKA_BENCH_MODULES").map(PathBuf::from))
        .context(
            "no guest modules: this `toka` was built without the repo's guests; \
             pass --modules DIR (a directory holding sink.wasm)",
        )?;
    let sink = dir.join("sink.wasm");
    anyhow::ensure!(
        sink.exists(),
        "{} not found; build the guests (`cargo build --release -p toka` in the repo) or pass --modules DIR",
        sink.display()
    );
    // Absolute: the cold-start scenario writes it into a config elsewhere.
    std::path::absolute(&dir).with_context(|| format!("resolving {}", dir.display()))
}

type Scenario = fn(&mut Session) -> anyhow::Result<Vec<Outcome>>;

/// The scenarios, in the order they run (latency after dispatch, which
/// measures the peak it loads at 10% of).
const SCENARIOS: &[(&str, Scenario)] = &[
    ("dispatch_1_agent", dispatch::one_agent),
    ("fanout", dispatch::fanout),
    ("latency", dispatch::latency),
    ("restart", restart::fresh_instance),
    ("request_roundtrip", requests::roundtrip),
    #[cfg(feature = "http")]
    ("http_outbound", http::outbound),
    #[cfg(feature = "http")]
    ("http_inbound", inbound::inbound),
    #[cfg(feature = "kv")]
    ("kv_set_get", kv::set_get),
    #[cfg(feature = "ledger")]
    ("ledger_transfer", ledger::transfer),
    ("cold_start", child::cold_start),
    ("footprint", child::footprint),
];

/// Run the hidden `toka __bench-child` (one scenario's child process).
pub fn run_child(args: ChildArgs) -> anyhow::Result<()> {
    child::run(args)
}

/// Run `toka bench`.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let scale = Scale::new(args.quick);
    let modules = modules_dir(args.modules)?;
    let sink = modules.join("sink.wasm");
    let raw = raw::Raw::new(&sink)?;
    let mut session = Session {
        scale,
        modules,
        sink,
        raw,
        peak_64b: None,
    };
    let started = Instant::now();
    if !args.json {
        println!("{}", machine());
    }
    let mut outcomes = Vec::new();
    let mut failed = 0;
    for (name, scenario) in SCENARIOS {
        if let Some(filter) = &args.filter {
            // A scenario runs if the filter names it or one of its rows.
            if !name.contains(filter.as_str()) && !filter.contains(name) {
                continue;
            }
        }
        // A failed scenario is reported as a row and the others still run.
        let rows = scenario(&mut session).unwrap_or_else(|e| {
            failed += 1;
            vec![
                Outcome::new(*name, format!("FAILED: {e:#}"))
                    .field("error", format!("{e:#}"))
                    .target("runs", false),
            ]
        });
        for row in rows {
            println!("{}", row.json_line());
            outcomes.push(row);
        }
    }
    if !args.json {
        print_table(&outcomes);
        println!(
            "({} run, {:.1} s)",
            if scale.quick { "quick" } else { "full" },
            started.elapsed().as_secs_f64()
        );
    }
    anyhow::ensure!(failed == 0, "{failed} scenario(s) failed");
    Ok(())
}

fn print_table(rows: &[Outcome]) {
    let name_w = rows.iter().map(|r| r.name.len()).max().unwrap_or(8).max(8);
    let sum_w = rows
        .iter()
        .map(|r| r.summary.len())
        .max()
        .unwrap_or(6)
        .max(6);
    println!();
    println!("{:name_w$}  {:sum_w$}  target", "scenario", "result");
    println!(
        "{}  {}  {}",
        "-".repeat(name_w),
        "-".repeat(sum_w),
        "-".repeat(24)
    );
    for r in rows {
        let target = match &r.target {
            Some((text, true)) => format!("{text}: met"),
            Some((text, false)) => format!("{text}: MISSED"),
            None => String::new(),
        };
        println!("{:name_w$}  {:sum_w$}  {target}", r.name, r.summary);
    }
}

/// The machine, as the README's table states it.
fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    // Other work on the machine skews every figure: say how busy it was.
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".into());
    format!("toka bench: {cpus} CPUs, {model}; load average {load} at start")
}

/// A config of `agents` sink agents named `sink0..`, each subscribed to
/// `subscribe`, on `workers` worker threads with mailboxes of `mailbox`.
fn sink_config(
    modules: &Path,
    agents: usize,
    subscribe: &str,
    workers: usize,
    mailbox: usize,
) -> anyhow::Result<RuntimeConfig> {
    let text = format!(
        r#"
        modules_dir = {modules:?}
        [event_bus]
        buffer_size = {mailbox}
        workers = {workers}
        # Ticks only disturb the measurement; nothing here subscribes to them.
        scheduler_tick_ms = 3600000
        [[agents]]
        name = "sink0"
        module = "sink.wasm"
        subscribe = [{subscribe:?}]
        "#,
        modules = modules.display().to_string(),
    );
    let mut config = RuntimeConfig::parse_str(&text, Path::new("bench.toml"), Path::new("."), &[])
        .context("bench config")?;
    // Built here rather than parsed: a 100,000-agent TOML file takes longer
    // to parse than the agents take to start.
    let first = config.agents[0].clone();
    config.agents.extend((1..agents).map(|i| {
        let mut agent = first.clone();
        agent.name = format!("sink{i}");
        agent
    }));
    Ok(config)
}

/// A runtime running on its own tokio runtime until [`Running::stop`].
struct Running {
    tokio: tokio::runtime::Runtime,
    stop: toka_runtime::ShutdownHandle,
    task: tokio::task::JoinHandle<toka_runtime::Result<toka_runtime::Report>>,
}

impl Running {
    fn start(runtime: Runtime) -> anyhow::Result<Self> {
        let tokio = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        let stop = runtime.shutdown_handle();
        let task = tokio.spawn(runtime.run_until(std::future::pending()));
        Ok(Running { tokio, stop, task })
    }

    fn stop(self) -> anyhow::Result<toka_runtime::Report> {
        self.stop.shutdown();
        let report = self.tokio.block_on(self.task)??;
        Ok(report)
    }
}

fn build_runtime(config: RuntimeConfig) -> anyhow::Result<Runtime> {
    build_runtime_with(config, None)
}

fn build_runtime_with(
    config: RuntimeConfig,
    memory_layout: Option<MemoryLayout>,
) -> anyhow::Result<Runtime> {
    Runtime::with_options(
        config,
        RuntimeOptions {
            strict: true,
            memory_layout,
            ..Default::default()
        },
    )
    .map_err(|e| anyhow::anyhow!("{e:#}"))
}

/// Spin (then yield) until `done`, failing after `limit`.
fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut spins = 0u32;
    while !done() {
        spins += 1;
        if spins < 1_000 {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
        if start.elapsed() > limit {
            anyhow::bail!("timed out after {limit:?} waiting for {what}");
        }
    }
    Ok(())
}

/// Wall and CPU nanoseconds per operation.
#[derive(Debug, Clone, Copy)]
struct Timing {
    wall: f64,
    cpu: f64,
}

/// Times a loop on the calling thread: wall clock and the thread's CPU time.
struct Timer {
    wall: Instant,
    cpu: u64,
}

impl Timer {
    fn start() -> Self {
        Timer {
            wall: Instant::now(),
            cpu: own_cpu_ns(),
        }
    }

    /// Per-operation timing over `n` operations.
    fn per(&self, n: u64) -> Timing {
        let n = n.max(1) as f64;
        Timing {
            wall: self.wall.elapsed().as_nanos() as f64 / n,
            cpu: own_cpu_ns().saturating_sub(self.cpu) as f64 / n,
        }
    }
}

/// CPU time (ns) the calling thread has run, from `/proc` (0 elsewhere).
fn own_cpu_ns() -> u64 {
    schedstat_ns("/proc/thread-self/schedstat")
}

/// CPU time (ns) run by this process's threads named `prefix*` (the
/// runtime's workers), from `/proc` (0 elsewhere). Unlike wall time it does
/// not grow while a thread waits for a core, so it stays meaningful on a
/// busy machine.
fn threads_cpu_ns(prefix: &str) -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.starts_with(prefix))
        })
        .map(|t| schedstat_ns(t.path().join("schedstat")))
        .sum()
}

fn schedstat_ns(path: impl AsRef<Path>) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// One decimal, for the JSON lines.
fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// Two decimals, for the JSON lines.
fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Thousands separators for the table.
fn group(n: f64) -> String {
    let s = format!("{:.0}", n);
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
