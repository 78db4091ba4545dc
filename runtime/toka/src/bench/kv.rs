//! `kv_set_get`: durable 64 B sets and gets of one key through a guest (the
//! `kv_bench` agent, one event per operation, through the bus), beside redb
//! called directly with the same durability in the same run: one write
//! transaction per set with `Durability::Immediate` and quick repair (what
//! the store commits with), and one read transaction per get.
//!
//! One agent's sets are sequential (each waits for its commit), so the
//! group commit has nothing to group: the ratio is the whole overhead (the
//! event, the guest call, the bounded wait with its stand-in worker, the
//! queue to the write thread, the usage row in the same transaction)
//! against the fsync. For the breakdown, the store is also called directly
//! (no guest) on a file of its own, interleaved the same way. The eight-agent
//! figure has them setting at once, where group commit shares each fsync.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use redb::{Database, Durability, ReadableDatabase, TableDefinition};
use toka_core::RuntimeConfig;
use toka_core::config::Declared;
use toka_runtime::AgentCounters;

use super::{Outcome, Running, Session, build_runtime, group, median, round1, round2};

/// The value the sets write.
static VALUE: [u8; 64] = [0x5a; 64];
const LIMIT: Duration = Duration::from_secs(300);
const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("entries");
/// Agents of the group-commit row.
const AGENTS: usize = 8;

fn config(s: &Session, dir: &Path, agents: usize, events: u64) -> anyhow::Result<RuntimeConfig> {
    let mut text = format!(
        r#"
        modules_dir = {modules:?}
        [event_bus]
        buffer_size = {buffer}
        workers = 1
        scheduler_tick_ms = 3600000
        [kv]
        path = {path:?}
        "#,
        modules = s.modules.display().to_string(),
        buffer = events.clamp(1024, 1_000_000),
        path = dir.join("kv.redb").display().to_string(),
    );
    for i in 0..agents {
        text.push_str(&format!(
            "[[agents]]\nname = \"kv{i}\"\nmodule = \"kv_bench.wasm\"\nsubscribe = [\"kv{i}.>\"]\nkv = true\n"
        ));
    }
    RuntimeConfig::parse_declared(
        &text,
        Path::new("bench.toml"),
        Path::new("."),
        &Declared {
            sections: &[toka_kv::config::SECTION],
            agent_keys: toka_kv::config::AGENT_KEYS,
        },
        &|_| None,
    )
    .context("kv bench config")
}

/// Publish `n` events of `kind` to each of `agents` and wait until all are
/// handled; nanoseconds per operation (all agents together).
fn through_guests(
    cx: &toka_core::Context,
    stats: &[Arc<AgentCounters>],
    what: &str,
    n: u64,
) -> anyhow::Result<f64> {
    let payload = Bytes::from_static(&VALUE);
    let before: Vec<u64> = stats.iter().map(|s| s.handled()).collect();
    let start = Instant::now();
    for i in 0..n {
        for a in 0..stats.len() {
            cx.publish(&format!("kv{a}.{what}"), payload.clone())
                .map_err(|e| anyhow::anyhow!("publish: {e}"))?;
        }
        // Keep the mailboxes from running ahead of the measurement's end.
        if i % 1024 == 1023 {
            std::thread::yield_now();
        }
    }
    // Sleep between looks, not spin: a set takes an fsync (hundreds of µs),
    // and a spinning bench thread would take a core from the worker and the
    // store's write thread on a two-core machine, which the engine's own
    // loop does not have to share. A look every 100 µs adds at most that to
    // a chunk of sets (under 1%).
    let deadline = Instant::now() + LIMIT;
    while !stats
        .iter()
        .zip(&before)
        .all(|(s, b)| s.handled() >= b + n || s.faults() > 0)
    {
        anyhow::ensure!(
            Instant::now() < deadline,
            "timed out waiting for the {what}s"
        );
        std::thread::sleep(Duration::from_micros(100));
    }
    let ns = start.elapsed().as_nanos() as f64 / (n * stats.len() as u64) as f64;
    for s in stats {
        let errors = s.errors.load(std::sync::atomic::Ordering::Acquire);
        anyhow::ensure!(
            s.faults() == 0 && errors == 0,
            "the kv_bench agent failed: {errors} errors, {} faults (see the log)",
            s.faults()
        );
    }
    Ok(ns)
}

/// redb alone, keeping one key as the store lays it out.
struct Engine {
    db: Database,
    record: Vec<u8>,
    quick_repair: bool,
}

const KEY: &[u8] = b"kv0\0k";

impl Engine {
    fn open(path: &Path, quick_repair: bool) -> anyhow::Result<Self> {
        let db = Database::create(path).context("creating the engine's file")?;
        // Version, expiry, value: the store's record.
        let mut record = vec![0u8; 16];
        record.extend_from_slice(&VALUE);
        Ok(Engine {
            db,
            record,
            quick_repair,
        })
    }

    /// `n` sets, one durable transaction each; nanoseconds in all.
    fn sets(&self, n: u64) -> anyhow::Result<f64> {
        let start = Instant::now();
        for _ in 0..n {
            let mut txn = self.db.begin_write()?;
            txn.set_durability(Durability::Immediate)?;
            txn.set_quick_repair(self.quick_repair);
            txn.open_table(TABLE)?.insert(KEY, self.record.as_slice())?;
            txn.commit()?;
        }
        Ok(start.elapsed().as_nanos() as f64)
    }

    /// `n` gets, one read transaction each; nanoseconds per get.
    fn gets(&self, n: u64) -> anyhow::Result<f64> {
        let start = Instant::now();
        for _ in 0..n {
            let txn = self.db.begin_read()?;
            let table = txn.open_table(TABLE)?;
            let got = table.get(KEY)?.context("the engine lost its key")?;
            anyhow::ensure!(got.value().len() == self.record.len());
        }
        Ok(start.elapsed().as_nanos() as f64 / n.max(1) as f64)
    }
}

/// Sets per chunk: the guest's and the engine's chunks alternate, so both
/// see the same disk (an fsync's time varies with whatever else the machine
/// writes, by several times on a shared one).
const CHUNK: u64 = 25;

/// The scenario.
pub(super) fn set_get(s: &mut Session) -> anyhow::Result<Vec<Outcome>> {
    let (sets, gets) = if s.scale.quick {
        (300, 20_000)
    } else {
        (3_000, 200_000)
    };
    let dir = tempfile::tempdir().context("a temp dir for the stores")?;
    let rt = build_runtime(config(s, dir.path(), 1, gets)?)?;
    let stats = vec![rt.agent_stats("kv0").expect("kv0 is configured")];
    let cx = rt.injector("bench");
    let running = Running::start(rt)?;
    let engine = Engine::open(&dir.path().join("engine.redb"), true)?;
    // Without quick repair too, for the record: the store keeps it on (an
    // open after a crash would otherwise walk the whole file).
    let plain = Engine::open(&dir.path().join("plain.redb"), false)?;
    // The store alone (its queue, write thread and usage rows, no guest),
    // on a file of its own, for the breakdown.
    let store = toka_kv::Store::open(&dir.path().join("store.redb"), Default::default())?;
    let store_sets = |n: u64| -> anyhow::Result<f64> {
        let start = Instant::now();
        for _ in 0..n {
            store.set("kv0", toka_kv::Quota::UNLIMITED, "k", &VALUE)?;
        }
        Ok(start.elapsed().as_nanos() as f64)
    };
    // Warm up: the agent's instance, the files' first commits.
    through_guests(&cx, &stats, "set", 20)?;
    engine.sets(20)?;
    plain.sets(20)?;
    store_sets(20)?;
    let (mut guest_ns, mut engine_ns, mut plain_ns, mut store_ns) = (0.0, 0.0, 0.0, 0.0);
    let mut ratios = Vec::new();
    for round in 0..sets / CHUNK {
        // Alternate which goes first, so neither always follows the other's
        // writes (the file system's journal is shared).
        let (g, e) = if round % 2 == 0 {
            let g = through_guests(&cx, &stats, "set", CHUNK)? * CHUNK as f64;
            (g, engine.sets(CHUNK)?)
        } else {
            let e = engine.sets(CHUNK)?;
            (through_guests(&cx, &stats, "set", CHUNK)? * CHUNK as f64, e)
        };
        plain_ns += plain.sets(CHUNK)?;
        store_ns += store_sets(CHUNK)?;
        ratios.push(e / g);
        guest_ns += g;
        engine_ns += e;
    }
    let n = (sets / CHUNK * CHUNK) as f64;
    let (guest_set, engine_set, plain_set, store_set) =
        (guest_ns / n, engine_ns / n, plain_ns / n, store_ns / n);
    let mut get_runs = Vec::new();
    for _ in 0..s.scale.repeats {
        let guest = through_guests(&cx, &stats, "get", gets)?;
        get_runs.push((guest, engine.gets(gets)?));
    }
    running.stop()?;
    let guest_get = median(get_runs.iter().map(|r| r.0).collect());
    let engine_get = median(get_runs.iter().map(|r| r.1).collect());
    // The ratio is the median of the chunks' ratios: an fsync stalled by
    // another process's burst of writes lands in one side's chunk, and the
    // totals would count it against that side.
    let set_ratio = median(ratios);
    let total_ratio = engine_set / guest_set;
    let get_ratio = engine_get / guest_get;

    // Group commit: eight agents setting at once share each fsync.
    let dir = tempfile::tempdir().context("a temp dir for the store")?;
    let rt = build_runtime(config(s, dir.path(), AGENTS, sets)?)?;
    let stats: Vec<_> = (0..AGENTS)
        .map(|i| rt.agent_stats(&format!("kv{i}")).expect("configured"))
        .collect();
    let cx = rt.injector("bench");
    let running = Running::start(rt)?;
    through_guests(&cx, &stats, "set", 5)?;
    let grouped = through_guests(&cx, &stats, "set", (sets / AGENTS as u64).max(20))?;
    running.stop()?;

    let per_s = |ns: f64| 1e9 / ns;
    Ok(vec![
        Outcome::new(
            "kv_set_get",
            format!(
                "sets {}/s (store alone {}/s, engine {}/s; ratio {set_ratio:.2}, of totals {total_ratio:.2}); gets {}/s (engine {}/s, ratio {get_ratio:.2}); {AGENTS} agents: {} sets/s",
                group(per_s(guest_set)),
                group(per_s(store_set)),
                group(per_s(engine_set)),
                group(per_s(guest_get)),
                group(per_s(engine_get)),
                group(per_s(grouped)),
            ),
        )
        .field("value_bytes", VALUE.len())
        .field("sets", sets)
        .field("gets", gets)
        .field("guest_sets_per_s", per_s(guest_set).round())
        .field("guest_gets_per_s", per_s(guest_get).round())
        .field("engine_sets_per_s", per_s(engine_set).round())
        .field("engine_gets_per_s", per_s(engine_get).round())
        .field("engine_sets_no_quick_repair_per_s", per_s(plain_set).round())
        .field("store_sets_per_s", per_s(store_set).round())
        .field("store_set_us", round1(store_set / 1e3))
        .field("guest_set_us", round1(guest_set / 1e3))
        .field("engine_set_us", round1(engine_set / 1e3))
        .field("set_ratio_vs_engine", round2(set_ratio))
        .field("set_ratio_of_totals", round2(total_ratio))
        .field("get_ratio_vs_engine", round2(get_ratio))
        .field("agents_grouped", AGENTS)
        .field("grouped_sets_per_s", per_s(grouped).round())
        .target("sets >= 0.8x the engine's rate", set_ratio >= 0.8),
    ])
}
