//! `ledger_transfer`: transfers through a guest (the `ledger_probe` agent,
//! one `.transfer` event per transfer of one unit, each under its own
//! idempotency key), beside the backend's bare transaction rate in the same
//! run: one redb write transaction per insert of a key and a small row,
//! with `Durability::Immediate` and quick repair, as the ledger commits.
//!
//! - One agent: transfers are sequential (each waits for its commit), and
//!   each one's publish → handled time is recorded, for the p99.
//! - Eight agents, each moving between its own two accounts, all at once:
//!   the throughput when the agents compete for the one writer, and the
//!   p99 of a round (one transfer per agent, until all eight are done).
//!
//! The ledger's own transfer (no guest) is measured too, for the
//! breakdown: a transfer writes its entry, its idempotency key, two
//! balances and two history rows in one transaction, so it costs more than
//! the floor's single insert even before the guest.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use redb::{Database, Durability, TableDefinition};
use toka_core::RuntimeConfig;
use toka_core::config::Declared;
use toka_ledger::{Embedded, Ledger as _};
use toka_runtime::AgentCounters;

use super::{Outcome, Running, Session, build_runtime, group, median, round1, round2};

const LIMIT: Duration = Duration::from_secs(300);
const TABLE: TableDefinition<u64, &[u8]> = TableDefinition::new("rows");
/// Agents of the concurrent row.
const AGENTS: usize = 8;
/// Units minted into each source account: more than any run transfers.
const FUNDS: u128 = 1 << 40;

fn config(s: &Session, path: &Path, agents: usize) -> anyhow::Result<RuntimeConfig> {
    let mut text = format!(
        r#"
        modules_dir = {modules:?}
        [event_bus]
        buffer_size = 65536
        workers = 2
        scheduler_tick_ms = 3600000
        [ledger]
        path = {path:?}
        "#,
        modules = s.modules.display().to_string(),
        path = path.display().to_string(),
    );
    for i in 0..agents {
        text.push_str(&format!(
            r#"
            [[agents]]
            name = "l{i}"
            module = "ledger_probe.wasm"
            subscribe = ["l{i}.>"]
            asset = "usd"
            from = "src{i}"
            to = "dst{i}"
            ledger_debit = ["src{i}"]
            ledger_credit = ["dst{i}"]
            "#
        ));
    }
    RuntimeConfig::parse_declared(
        &text,
        Path::new("bench.toml"),
        Path::new("."),
        &Declared {
            sections: &[toka_ledger::config::SECTION],
            agent_keys: toka_ledger::config::AGENT_KEYS,
        },
        &|_| None,
    )
    .context("ledger bench config")
}

/// Wait until every agent has handled its target; an error if one failed.
fn wait_all(stats: &[Arc<AgentCounters>], targets: &[u64]) -> anyhow::Result<()> {
    let deadline = Instant::now() + LIMIT;
    while !stats.iter().zip(targets).all(|(s, t)| s.handled() >= *t) {
        anyhow::ensure!(
            stats.iter().all(|s| s.faults() == 0),
            "a ledger_probe agent faulted (see the log)"
        );
        anyhow::ensure!(Instant::now() < deadline, "timed out waiting for transfers");
        // A commit takes an fsync: yielding, not spinning, leaves the core
        // to the worker and the blocking pool on a two-core machine.
        std::thread::yield_now();
    }
    for s in stats {
        let errors = s.errors.load(std::sync::atomic::Ordering::Acquire);
        anyhow::ensure!(
            errors == 0,
            "a ledger_probe agent's transfer was refused {errors} times (see the log)"
        );
    }
    Ok(())
}

/// `rounds` rounds of one transfer per agent, each round awaited; the
/// rounds' times.
fn rounds(
    cx: &toka_core::Context,
    stats: &[Arc<AgentCounters>],
    rounds: u64,
) -> anyhow::Result<Vec<Duration>> {
    let mut times = Vec::with_capacity(rounds as usize);
    for _ in 0..rounds {
        let targets: Vec<u64> = stats.iter().map(|s| s.handled() + 1).collect();
        let start = Instant::now();
        for a in 0..stats.len() {
            cx.publish(&format!("l{a}.transfer"), bytes::Bytes::new())
                .map_err(|e| anyhow::anyhow!("publish: {e}"))?;
        }
        wait_all(stats, &targets)?;
        times.push(start.elapsed());
    }
    Ok(times)
}

/// `n` transfers per agent published at once; nanoseconds per transfer.
fn burst(cx: &toka_core::Context, stats: &[Arc<AgentCounters>], n: u64) -> anyhow::Result<f64> {
    let targets: Vec<u64> = stats.iter().map(|s| s.handled() + n).collect();
    let start = Instant::now();
    for _ in 0..n {
        for a in 0..stats.len() {
            cx.publish(&format!("l{a}.transfer"), bytes::Bytes::new())
                .map_err(|e| anyhow::anyhow!("publish: {e}"))?;
        }
    }
    wait_all(stats, &targets)?;
    Ok(start.elapsed().as_nanos() as f64 / (n * stats.len() as u64) as f64)
}

/// The floor: `n` single-row inserts, one durable transaction each;
/// nanoseconds per insert.
fn raw_inserts(db: &Database, from: u64, n: u64) -> anyhow::Result<f64> {
    let row = [0x5au8; 96];
    let start = Instant::now();
    for k in from..from + n {
        let mut txn = db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        txn.set_quick_repair(true);
        txn.open_table(TABLE)?.insert(k, row.as_slice())?;
        txn.commit()?;
    }
    Ok(start.elapsed().as_nanos() as f64 / n.max(1) as f64)
}

fn seeded(path: &Path, agents: usize) -> anyhow::Result<()> {
    let ledger = Embedded::open(path)?;
    for i in 0..agents {
        ledger.mint(&format!("seed{i}"), "usd", &format!("src{i}"), FUNDS)?;
    }
    Ok(())
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1));
    sorted.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e6)
}

/// Transfers per chunk: the guest's and the floor's chunks alternate, so
/// both see the same disk.
const CHUNK: u64 = 25;

/// The scenario.
pub(super) fn transfer(s: &mut Session) -> anyhow::Result<Vec<Outcome>> {
    let (n, concurrent) = if s.scale.quick {
        (200, 400)
    } else {
        (2_000, 4_000)
    };
    let dir = tempfile::tempdir().context("a temp dir for the ledgers")?;
    let floor_db = Database::create(dir.path().join("floor.redb"))?;
    let direct = Embedded::open(&dir.path().join("direct.redb"))?;
    direct.mint("seed", "usd", "src", FUNDS)?;
    let mut direct_key = 0u64;
    let mut direct_transfers = |n: u64| -> anyhow::Result<f64> {
        let start = Instant::now();
        for _ in 0..n {
            direct_key += 1;
            direct.transfer(&format!("d{direct_key}"), "usd", "src", "dst", 1)?;
        }
        Ok(start.elapsed().as_nanos() as f64 / n as f64)
    };

    // One agent, sequential: each transfer's latency.
    let path = dir.path().join("one.redb");
    seeded(&path, 1)?;
    let rt = build_runtime(config(s, &path, 1)?)?;
    let stats = vec![rt.agent_stats("l0").expect("l0 is configured")];
    let cx = rt.injector("bench");
    let running = Running::start(rt)?;
    rounds(&cx, &stats, 20)?;
    raw_inserts(&floor_db, 0, 20)?;
    direct_transfers(20)?;
    let mut latencies = Vec::new();
    let (mut guest_ns, mut floor_ns, mut direct_ns) = (0.0, 0.0, 0.0);
    let mut ratios = Vec::new();
    let mut key = 1_000u64;
    for round in 0..n / CHUNK {
        let (g, f) = if round % 2 == 0 {
            let g = rounds(&cx, &stats, CHUNK)?;
            (g, raw_inserts(&floor_db, key, CHUNK)?)
        } else {
            let f = raw_inserts(&floor_db, key, CHUNK)?;
            (rounds(&cx, &stats, CHUNK)?, f)
        };
        key += CHUNK;
        let g_ns = g.iter().map(|d| d.as_nanos() as f64).sum::<f64>() / CHUNK as f64;
        direct_ns += direct_transfers(CHUNK)?;
        ratios.push(f / g_ns);
        guest_ns += g_ns;
        floor_ns += f;
        latencies.extend(g);
    }
    running.stop()?;
    let chunks = (n / CHUNK) as f64;
    let (guest, floor, direct_t) = (guest_ns / chunks, floor_ns / chunks, direct_ns / chunks);
    latencies.sort();
    let (p50, p99) = (pct(&latencies, 0.50), pct(&latencies, 0.99));
    // The median of the chunks' ratios: an fsync stalled by another
    // process's writes lands in one side's chunk only.
    let ratio = median(ratios);

    // Eight agents at once.
    let path = dir.path().join("eight.redb");
    seeded(&path, AGENTS)?;
    let rt = build_runtime(config(s, &path, AGENTS)?)?;
    let stats: Vec<_> = (0..AGENTS)
        .map(|i| rt.agent_stats(&format!("l{i}")).expect("configured"))
        .collect();
    let cx = rt.injector("bench");
    let running = Running::start(rt)?;
    rounds(&cx, &stats, 5)?;
    let mut round_times = rounds(&cx, &stats, (n / 10).max(20))?;
    let eight = burst(&cx, &stats, (concurrent / AGENTS as u64).max(20))?;
    running.stop()?;
    round_times.sort();
    let round_p99 = pct(&round_times, 0.99);
    // Every transfer the agents acknowledged is in the file, once.
    let check = Embedded::open(&path)?;
    let problems = check.check()?;
    anyhow::ensure!(problems.is_empty(), "ledger invariants: {problems:?}");

    let per_s = |ns: f64| 1e9 / ns;
    Ok(vec![
        Outcome::new(
            "ledger_transfer",
            format!(
                "1 agent {}/s (p50 {p50:.0} us, p99 {p99:.0} us; ledger alone {}/s; floor {}/s raw inserts; ratio {ratio:.2}); {AGENTS} agents {}/s (round p99 {round_p99:.0} us)",
                group(per_s(guest)),
                group(per_s(direct_t)),
                group(per_s(floor)),
                group(per_s(eight)),
            ),
        )
        .field("backend", "embedded")
        .field("transfers", n)
        .field("guest_transfers_per_s", per_s(guest).round())
        .field("direct_transfers_per_s", per_s(direct_t).round())
        .field("floor_inserts_per_s", per_s(floor).round())
        .field("ratio_vs_floor", round2(ratio))
        .field("p50_us", round1(p50))
        .field("p99_us", round1(p99))
        .field("agents", AGENTS)
        .field("agents_transfers_per_s", per_s(eight).round())
        .field("agents_round_p99_us", round1(round_p99))
        .target("1 agent >= 0.5x the bare insert rate", ratio >= 0.5),
    ])
}
