//! Scenarios measured in a child process (`toka __bench-child ...`, hidden),
//! so that what the bench itself allocated does not pollute them:
//!
//! - footprint: resident memory per idle loaded agent — the child's RSS
//!   before building the runtime, then after N sink agents are loaded and
//!   have each handled one event; the delta over N. Memory maps are counted
//!   the same way (`/proc/self/maps`), against `vm.max_map_count`.
//! - cold start: `toka run` of 100 agents until every one is initialised,
//!   first with an empty module cache (compiling), then again (precompiled).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use serde_json::{Value, json};

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use toka_core::{Agent, Event, PatternSet};
use toka_runtime::{Runtime, RuntimeOptions};

use toka_runtime::host::engine::MemoryLayout;

use super::{
    Outcome, Running, Session, build_runtime_with, group, round1, sink_config, wait_until,
};

/// Hidden `toka __bench-child` arguments.
#[derive(clap::Args, Debug)]
pub struct ChildArgs {
    #[command(subcommand)]
    what: Child,
}

#[derive(clap::Subcommand, Debug)]
enum Child {
    /// Load N sink agents, have each handle one event, report RSS and maps.
    Footprint {
        #[arg(long)]
        agents: usize,
        #[arg(long)]
        modules: PathBuf,
        /// Force a memory layout: `on-demand`, `pooled` or `compact`
        /// (default: the runtime's choice for the agent count).
        #[arg(long)]
        layout: Option<String>,
    },
    /// What `toka run <config>` does, until every agent has initialised.
    Cold {
        config: PathBuf,
        #[arg(long)]
        cache_dir: PathBuf,
    },
}

/// Run a child scenario; its result is one `RESULT {json}` line on stdout.
pub(super) fn run(args: ChildArgs) -> anyhow::Result<()> {
    let result = match args.what {
        Child::Footprint {
            agents,
            modules,
            layout,
        } => footprint_child(agents, &modules, layout.as_deref())?,
        Child::Cold { config, cache_dir } => cold_child(&config, cache_dir)?,
    };
    if !result.is_null() {
        println!("RESULT {result}");
    }
    Ok(())
}

/// Resident set size of this process, KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Memory maps of this process.
fn maps() -> u64 {
    std::fs::read_to_string("/proc/self/maps")
        .map(|s| s.lines().count() as u64)
        .unwrap_or(0)
}

fn max_map_count() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn footprint_child(agents: usize, modules: &Path, layout: Option<&str>) -> anyhow::Result<Value> {
    let layout = match layout {
        None => None,
        Some("on-demand") => Some(MemoryLayout::OnDemand),
        Some("pooled") => Some(MemoryLayout::Pooled {
            agents: agents as u32,
        }),
        Some("compact") => Some(MemoryLayout::Compact { growth: 0 }),
        Some("compact-growth") => Some(MemoryLayout::Compact { growth: 1 << 20 }),
        Some(other) => anyhow::bail!("unknown layout {other}"),
    };
    let (rss0, maps0) = (rss_kib(), maps());
    let start = Instant::now();
    let config = sink_config(modules, agents, "bench.footprint", 2, 4)?;
    let rt = build_runtime_with(config, layout)?;
    let bus = rt.bus().clone();
    let cx = rt.injector("bench");
    let running = Running::start(rt)?;
    cx.publish("bench.footprint", Bytes::from(vec![0x5a; 64]))
        .map_err(|e| anyhow::anyhow!("publish: {e}"))?;
    wait_until(
        "every agent to handle its event",
        Duration::from_secs(600),
        || bus.in_flight() == 0,
    )?;
    let load = start.elapsed();
    let (rss1, maps1) = (rss_kib(), maps());
    let report = running.stop()?;
    let handled: u64 = report.agents.iter().map(|a| a.handled).sum();
    let faults: u64 = report.agents.iter().map(|a| a.faults).sum();
    anyhow::ensure!(
        handled == agents as u64 && faults == 0,
        "{handled} of {agents} agents handled their event ({faults} faults)"
    );
    Ok(json!({
        "agents": agents,
        "rss_kib_before": rss0,
        "rss_kib_after": rss1,
        "kib_per_agent": (rss1.saturating_sub(rss0)) as f64 / agents as f64,
        "maps_before": maps0,
        "maps_after": maps1,
        "maps_per_agent": (maps1.saturating_sub(maps0)) as f64 / agents as f64,
        "load_s": load.as_secs_f64(),
    }))
}

/// Run `toka __bench-child <args>` and parse its `RESULT` line.
fn spawn_child(args: &[&str]) -> anyhow::Result<(Value, Duration)> {
    let exe = std::env::current_exe().context("locating the toka binary")?;
    let start = Instant::now();
    let mut child = Command::new(&exe)
        .arg("__bench-child")
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawning {}", exe.display()))?;
    let stdout = child.stdout.take().expect("piped");
    let mut result = None;
    let mut elapsed = Duration::ZERO;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        if let Some(json) = line.strip_prefix("RESULT ") {
            elapsed = start.elapsed();
            result = Some(serde_json::from_str(json).context("child result")?);
        }
    }
    let status = child.wait()?;
    anyhow::ensure!(status.success(), "bench child {args:?} failed: {status}");
    Ok((
        result.context("the bench child printed no result")?,
        elapsed,
    ))
}

pub(super) fn footprint(s: &mut Session) -> anyhow::Result<Vec<Outcome>> {
    let modules = s.modules.display().to_string();
    let mut rows = Vec::new();
    for &agents in s.scale.footprint {
        let (r, _) = spawn_child(&[
            "footprint",
            "--agents",
            &agents.to_string(),
            "--modules",
            &modules,
        ])?;
        let kib = r["kib_per_agent"].as_f64().unwrap_or(f64::NAN);
        let maps = r["maps_per_agent"].as_f64().unwrap_or(f64::NAN);
        let load = r["load_s"].as_f64().unwrap_or(f64::NAN);
        let mut row = Outcome::new(
            format!("footprint_{agents}_agents"),
            format!(
                "{kib:.1} KiB/agent resident, {maps:.2} maps/agent; {} agents loaded and handled 1 event each in {load:.2} s",
                group(agents as f64)
            ),
        )
        .field("agents", agents)
        .field("kib_per_agent", round1(kib))
        .field("maps_per_agent", (maps * 100.0).round() / 100.0)
        .field("load_s", (load * 100.0).round() / 100.0)
        .field("rss_kib_before", r["rss_kib_before"].clone())
        .field("rss_kib_after", r["rss_kib_after"].clone())
        .field("max_map_count", max_map_count().map_or(Value::Null, Value::from));
        if agents >= 100_000 {
            row = row.target("100,000 agents at <= 64 KiB each", kib <= 64.0);
        }
        rows.push(row);
    }
    Ok(rows)
}

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> anyhow::Result<Self> {
        let path = std::env::temp_dir().join(format!("toka-bench-{what}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(TempDir(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Counts `toka.agent.started` events: an agent's `init` has returned.
struct Started(Arc<AtomicUsize>);

impl Agent for Started {
    fn interest(&self) -> PatternSet {
        PatternSet::parse(&["toka.agent.started"]).expect("a valid pattern")
    }

    async fn handle(&self, _event: Arc<Event>, _cx: &toka_core::Context) -> anyhow::Result<()> {
        self.0.fetch_add(1, Ordering::Release);
        Ok(())
    }
}

/// `toka run` of `config` with the module cache in `cache_dir`, stopped as
/// soon as every agent is initialised.
fn cold_child(config: &Path, cache_dir: PathBuf) -> anyhow::Result<Value> {
    let start = Instant::now();
    let config = toka_runtime::host::caps::load(config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let agents = config.agents.len();
    let mut rt = Runtime::with_options(
        config,
        RuntimeOptions {
            strict: true,
            cache_dir: Some(cache_dir),
            ..Default::default()
        },
    )
    .map_err(|e| anyhow::anyhow!("{e:#}"))?;
    let built = start.elapsed();
    let cache = rt.cache_stats();
    let started = Arc::new(AtomicUsize::new(0));
    rt.register("bench-started", Started(started.clone()))
        .map_err(|e| anyhow::anyhow!("{e:#}"))?;
    let running = Running::start(rt)?;
    wait_until("every agent to start", Duration::from_secs(120), || {
        started.load(Ordering::Acquire) >= agents
    })?;
    let ready = start.elapsed();
    // Report before the graceful stop: the measurement ends at "ready".
    let result = json!({
        "agents": agents,
        "built_ms": built.as_secs_f64() * 1e3,
        "ready_ms": ready.as_secs_f64() * 1e3,
        "cache_hits": cache.map(|c| c.hits),
        "cache_misses": cache.map(|c| c.misses),
    });
    println!("RESULT {result}");
    running.stop()?;
    Ok(Value::Null)
}

/// Cold start of 100 agents through `toka run`'s path in a fresh process:
/// first with an empty module cache (compiles), then with the cache the
/// first run filled (deserializes).
pub(super) fn cold_start(s: &mut Session) -> anyhow::Result<Vec<Outcome>> {
    const AGENTS: usize = 100;
    let dir = TempDir::new("cold")?;
    let mut toml = format!(
        "modules_dir = {:?}\n[event_bus]\nscheduler_tick_ms = 3600000\n",
        s.modules.display().to_string()
    );
    for i in 0..AGENTS {
        toml.push_str(&format!(
            "[[agents]]\nname = \"sink{i}\"\nmodule = \"sink.wasm\"\nsubscribe = [\"bench.>\"]\n"
        ));
    }
    let config = dir.path().join("cold.toml");
    std::fs::write(&config, toml).context("writing the cold-start config")?;
    let cache = dir.path().join("cache");
    let config = config.display().to_string();
    let cache = cache.display().to_string();
    let args = ["cold", config.as_str(), "--cache-dir", cache.as_str()];
    let (first, first_wall) = spawn_child(&args)?;
    let (second, second_wall) = spawn_child(&args)?;
    anyhow::ensure!(
        second["cache_hits"].as_u64() == Some(1),
        "the second run did not load the module from the cache: {second}"
    );
    let (first_ms, second_ms) = (
        first_wall.as_secs_f64() * 1e3,
        second_wall.as_secs_f64() * 1e3,
    );
    Ok(vec![
        Outcome::new(
            "cold_start_100_agents",
            format!(
                "{first_ms:.0} ms compiling, {second_ms:.0} ms from the cache (process start to 100 agents initialised)"
            ),
        )
        .field("agents", AGENTS)
        .field("first_run_ms", round1(first_ms))
        .field("cached_run_ms", round1(second_ms))
        .field("first_run_in_process_ms", first["ready_ms"].clone())
        .field("cached_run_in_process_ms", second["ready_ms"].clone())
        .target("<= 250 ms from the cache", second_ms <= 250.0),
    ])
}
