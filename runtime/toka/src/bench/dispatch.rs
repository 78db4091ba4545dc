//! Events through the bus: throughput into one agent (against the raw call
//! floor, side by side), fan-out of one kind to many agents, and
//! publish→handled latency at a tenth of the peak rate.
//!
//! The publisher is the bench's own thread publishing through
//! [`Runtime::injector`](toka_runtime::Runtime::injector), exactly as an
//! embedder would. It keeps at most a window of events in flight so the
//! mailboxes never overflow (a run with drops reports them and fails).

use std::time::{Duration, Instant};

use bytes::Bytes;
use toka_core::Context;
use toka_runtime::bus::Bus;
use toka_runtime::host::engine::MemoryLayout;

use super::{
    Outcome, Running, Session, Timer, Timing, build_runtime, group, median, round1, round2,
    sink_config, threads_cpu_ns, wait_until,
};

const KIND: &str = "bench.event";
/// Payload bytes. Static, so publishing a copy is a pointer copy: the
/// publisher's own payload handling stays out of Toka's figures (a payload
/// built per event costs its producer an allocation, not Toka).
static PAYLOAD: [u8; 4096] = [0x5a; 4096];
/// Events warmed up before measuring (also waits out the agent's `init`).
const WARMUP: u64 = 20_000;
const LIMIT: Duration = Duration::from_secs(300);

/// Publish `n` copies of `payload`, keeping at most about `window` copies
/// queued or being handled. Returns the time spent waiting for room: what
/// is left of the publisher's time is its own cost.
fn pump(cx: &Context, bus: &Bus, payload: &Bytes, n: u64, window: u64) -> anyhow::Result<Duration> {
    let mut waited = Duration::ZERO;
    for i in 0..n {
        if i % 16 == 0 && bus.in_flight() > window {
            let start = Instant::now();
            while bus.in_flight() > window {
                std::hint::spin_loop();
            }
            waited += start.elapsed();
        }
        cx.publish(KIND, payload.clone())
            .map_err(|e| anyhow::anyhow!("publish: {e}"))?;
    }
    Ok(waited)
}

/// Dispatch into one agent, 64 B and 4 KiB, beside the raw call.
pub(super) fn one_agent(s: &mut Session) -> anyhow::Result<Vec<Outcome>> {
    let mut rows = Vec::new();
    for (label, size, events) in [
        ("64b", 64usize, s.scale.events_64b),
        ("4k", 4096, s.scale.events_4k),
    ] {
        let payload = Bytes::from_static(&PAYLOAD[..size]);
        // One worker: the other core is the publisher's.
        let window = 4096;
        let config = sink_config(&s.modules, 1, "bench.>", 1, 4 * window as usize)?;
        let rt = build_runtime(config)?;
        let stats = rt.agent_stats("sink0").expect("sink0 is configured");
        let bus = rt.bus().clone();
        let cx = rt.injector("bench");
        let running = Running::start(rt)?;
        pump(&cx, &bus, &payload, WARMUP, window)?;
        wait_until("the warm-up events", LIMIT, || stats.handled() >= WARMUP)?;

        let mut runs = Vec::new();
        for _ in 0..s.scale.repeats {
            let raw = s.raw.call_ns(&payload, s.scale.calls)?;
            let direct = super::restart::instance_call_ns(s, &payload, s.scale.calls, None)?;
            let before = stats.handled();
            let worker_cpu = threads_cpu_ns("toka-worker");
            let start = Instant::now();
            let publisher = Timer::start();
            let waited = pump(&cx, &bus, &payload, events, window)?;
            let mut publisher = publisher.per(events);
            publisher.cpu -= waited.as_nanos() as f64 / events as f64;
            wait_until("the events", LIMIT, || stats.handled() >= before + events)?;
            let wall = start.elapsed().as_nanos() as f64 / events as f64;
            let cpu =
                threads_cpu_ns("toka-worker").saturating_sub(worker_cpu) as f64 / events as f64;
            runs.push((Timing { wall, cpu }, raw, direct, publisher));
        }
        let report = running.stop()?;
        anyhow::ensure!(
            report.bus.dropped == 0,
            "{} events dropped; the window is too large for the mailbox",
            report.bus.dropped
        );
        let pick =
            |f: fn(&(Timing, Timing, Timing, Timing)) -> f64| median(runs.iter().map(f).collect());
        let publisher_cpu_ns = pick(|r| r.3.cpu);
        let (ns, raw_ns, direct_ns) = (pick(|r| r.0.wall), pick(|r| r.1.wall), pick(|r| r.2.wall));
        let (cpu_ns, raw_cpu_ns, direct_cpu_ns) =
            (pick(|r| r.0.cpu), pick(|r| r.1.cpu), pick(|r| r.2.cpu));
        let per_s = 1e9 / ns;
        let ratio = ns / raw_ns;
        if size == 64 {
            s.peak_64b = Some(per_s);
        }
        let mut row = Outcome::new(
            format!("dispatch_1_agent_{label}"),
            format!(
                "{} events/s, {ns:.0} ns/event; raw call {raw_ns:.0} ns, Toka instance call {direct_ns:.0} ns; ratio {ratio:.2}",
                group(per_s)
            ),
        )
        .field("events_per_s", per_s.round())
        .field("ns_per_event", round1(ns))
        .field("raw_ns_per_call", round1(raw_ns))
        .field("instance_ns_per_call", round1(direct_ns))
        .field("worker_cpu_ns_per_event", round1(cpu_ns))
        .field("publisher_cpu_ns_per_event", round1(publisher_cpu_ns))
        .field("raw_cpu_ns_per_call", round1(raw_cpu_ns))
        .field("instance_cpu_ns_per_call", round1(direct_cpu_ns))
        .field("ratio_vs_raw", round2(ratio))
        .field("payload_bytes", size);
        if size == 64 {
            // The dense layout's explicit bounds checks, for the README.
            let compact = MemoryLayout::Compact { growth: 0 };
            let compact =
                super::restart::instance_call_ns(s, &payload, s.scale.calls, Some(compact))?;
            row = row.field("instance_compact_ns_per_call", round1(compact.wall));
            row = row.target(
                "ratio <= 1.25 and >= 1,000,000/s",
                ratio <= 1.25 && per_s >= 1e6,
            );
        }
        rows.push(row);
    }
    Ok(rows)
}

/// One kind fanned out to 10 and 100 agents: deliveries handled per second,
/// from the first publish to the last copy handled.
pub(super) fn fanout(s: &mut Session) -> anyhow::Result<Vec<Outcome>> {
    let payload = Bytes::from_static(&PAYLOAD[..64]);
    let mut rows = Vec::new();
    for agents in [10usize, 100] {
        let window = agents as u64 * 512;
        let config = sink_config(&s.modules, agents, "bench.>", 2, 2 * window as usize)?;
        let rt = build_runtime(config)?;
        let bus = rt.bus().clone();
        let cx = rt.injector("bench");
        let running = Running::start(rt)?;
        pump(&cx, &bus, &payload, WARMUP / agents as u64, window)?;
        wait_until("the warm-up events", LIMIT, || bus.in_flight() == 0)?;

        let publishes = s.scale.fanout_deliveries / agents as u64;
        let mut runs = Vec::new();
        for _ in 0..s.scale.repeats {
            let start = Instant::now();
            pump(&cx, &bus, &payload, publishes, window)?;
            wait_until("the deliveries", LIMIT, || bus.in_flight() == 0)?;
            runs.push(start.elapsed().as_nanos() as f64 / (publishes * agents as u64) as f64);
        }
        let report = running.stop()?;
        anyhow::ensure!(
            report.bus.dropped == 0,
            "{} copies dropped",
            report.bus.dropped
        );
        let ns = median(runs);
        let per_s = 1e9 / ns;
        let mut row = Outcome::new(
            format!("fanout_{agents}_agents"),
            format!("{} deliveries/s, {ns:.0} ns/delivery", group(per_s)),
        )
        .field("agents", agents)
        .field("deliveries_per_s", per_s.round())
        .field("ns_per_delivery", round1(ns));
        if agents == 100 {
            row = row.target(">= 1,000,000 deliveries/s", per_s >= 1e6);
        }
        rows.push(row);
    }
    Ok(rows)
}

/// Publish→handled latency at a steady 10% of the peak rate into one agent.
///
/// The publishing thread also watches the agent's handled counter between
/// publishes, so "handled" is observed within a loop iteration (tens of ns).
pub(super) fn latency(s: &mut Session) -> anyhow::Result<Vec<Outcome>> {
    let peak = match s.peak_64b {
        Some(p) => p,
        None => {
            // Run on its own: measure the peak first (its row is not printed).
            one_agent(s)?;
            s.peak_64b.expect("one_agent measures the peak")
        }
    };
    let rate = peak / 10.0;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let payload = Bytes::from_static(&PAYLOAD[..64]);
    let config = sink_config(&s.modules, 1, "bench.>", 1, 1 << 16)?;
    let rt = build_runtime(config)?;
    let stats = rt.agent_stats("sink0").expect("sink0 is configured");
    let bus = rt.bus().clone();
    let cx = rt.injector("bench");
    let running = Running::start(rt)?;
    pump(&cx, &bus, &payload, WARMUP, 4096)?;
    wait_until("the warm-up events", LIMIT, || stats.handled() >= WARMUP)?;

    let n = s.scale.latency_events as usize;
    let base = stats.handled();
    let mut published: Vec<Instant> = Vec::with_capacity(n);
    let mut latencies: Vec<u64> = Vec::with_capacity(n);
    let observe = |published: &[Instant], latencies: &mut Vec<u64>| {
        let handled = (stats.handled() - base) as usize;
        if handled > latencies.len() {
            let now = Instant::now();
            for t in &published[latencies.len()..handled] {
                latencies.push(now.duration_since(*t).as_nanos() as u64);
            }
        }
    };
    let start = Instant::now();
    for i in 0..n {
        let due = start + interval.mul_f64(i as f64);
        while Instant::now() < due {
            observe(&published, &mut latencies);
        }
        published.push(Instant::now());
        cx.publish(KIND, payload.clone())
            .map_err(|e| anyhow::anyhow!("publish: {e}"))?;
    }
    let deadline = Instant::now() + LIMIT;
    while latencies.len() < n {
        observe(&published, &mut latencies);
        anyhow::ensure!(
            Instant::now() < deadline,
            "timed out waiting for the events"
        );
    }
    let achieved = n as f64 / start.elapsed().as_secs_f64();
    running.stop()?;
    latencies.sort_unstable();
    let pct = |p: f64| latencies[((n as f64 * p) as usize).min(n - 1)] as f64 / 1000.0;
    let (p50, p99, p999, max) = (pct(0.50), pct(0.99), pct(0.999), pct(1.0));
    Ok(vec![
        Outcome::new(
            "latency_10pct_load",
            format!(
                "p50 {p50:.1} us, p99 {p99:.1} us, p99.9 {p999:.1} us at {} events/s",
                group(achieved)
            ),
        )
        .field("events_per_s", achieved.round())
        .field("p50_us", round2(p50))
        .field("p99_us", round2(p99))
        .field("p999_us", round2(p999))
        .field("max_us", round2(max))
        .target("p99 <= 100 us", p99 <= 100.0),
    ])
}
