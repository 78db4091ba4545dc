//! Request/reply round trips: one requester, one server, 64 B each way,
//! beside two raw wasmtime calls of the sink (the floor: a round trip is at
//! least the requester's call out and the server's call in).
//!
//! The requester is the probe guest running `request-loop N echo.x`: N
//! requests inside one `handle` call, so the figure is the round trip and
//! not event dispatch. Each request's time is recorded by the host
//! (`toka_runtime::request_latency`) for p50/p99.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use toka_core::RuntimeConfig;

use super::{Outcome, Running, Session, build_runtime, group, median, round1, round2, wait_until};

const LIMIT: Duration = Duration::from_secs(300);

fn config(modules: &Path) -> anyhow::Result<RuntimeConfig> {
    let text = format!(
        r#"
        modules_dir = {modules:?}
        [event_bus]
        workers = 1
        scheduler_tick_ms = 3600000
        [[agents]]
        name = "requester"
        module = "probe.wasm"
        subscribe = ["bench.cmd"]
        publish = ["probe.*"]
        request = ["echo.>"]
        timeout_ms = 120000
        [[agents]]
        name = "server"
        module = "probe.wasm"
        serve = ["echo.>"]
        timeout_ms = 100
        "#,
        modules = modules.display().to_string(),
    );
    RuntimeConfig::parse_str(&text, Path::new("bench.toml"), Path::new("."), &[])
        .context("bench config")
}

/// Round trips per second and their p50/p99, beside the raw floor.
pub(super) fn roundtrip(s: &mut Session) -> anyhow::Result<Vec<Outcome>> {
    anyhow::ensure!(
        s.modules.join("probe.wasm").exists(),
        "probe.wasm not found in {}",
        s.modules.display()
    );
    let n = if s.scale.quick { 100_000 } else { 1_000_000 };
    let rt = build_runtime(config(&s.modules)?)?;
    let server = rt.agent_stats("server").expect("configured");
    let cx = rt.injector("bench");
    let running = Running::start(rt)?;
    let run = |count: u64| -> anyhow::Result<f64> {
        let before = server.served();
        let start = Instant::now();
        cx.publish("bench.cmd", format!("request-loop {count} echo.x"))
            .map_err(|e| anyhow::anyhow!("publish: {e}"))?;
        wait_until("the round trips", LIMIT, || {
            server.served() >= before + count
        })?;
        Ok(start.elapsed().as_nanos() as f64 / count as f64)
    };
    run(n / 10)?;
    let mut walls = Vec::new();
    let mut samples = Vec::new();
    for _ in 0..s.scale.repeats {
        toka_runtime::request_latency::record(true);
        walls.push(run(n)?);
        toka_runtime::request_latency::record(false);
        samples.extend(toka_runtime::request_latency::take());
    }
    let report = running.stop()?;
    anyhow::ensure!(
        report.agents.iter().all(|a| a.faults == 0 && a.errors == 0),
        "a round trip failed: {report:?}"
    );
    let raw = s.raw.call_ns(&[0x5a; 64], s.scale.calls)?;
    let floor = 2.0 * raw.wall;
    let ns = median(walls);
    samples.sort_unstable();
    let pct = |p: f64| samples[((samples.len() - 1) as f64 * p) as usize] as f64 / 1000.0;
    let (p50, p99) = (pct(0.50), pct(0.99));
    let per_s = 1e9 / ns;
    let ratio = ns / floor;
    Ok(vec![
        Outcome::new(
            "request_roundtrip",
            format!(
                "{} round trips/s, {ns:.0} ns each; p50 {p50:.2} us, p99 {p99:.2} us; floor (2 raw calls) {floor:.0} ns; ratio {ratio:.2}",
                group(per_s)
            ),
        )
        .field("roundtrips_per_s", per_s.round())
        .field("ns_per_roundtrip", round1(ns))
        .field("p50_us", round2(p50))
        .field("p99_us", round2(p99))
        .field("floor_ns", round1(floor))
        .field("ratio_vs_floor", round2(ratio))
        .target(
            "p50 <= 5 us, >= 100,000/s",
            p50 <= 5.0 && per_s >= 100_000.0,
        ),
    ])
}
