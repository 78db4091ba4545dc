//! The restart path: how long Toka takes to get a fresh, ready agent
//! instance (what a restart after a fault costs, backoff aside), beside raw
//! pooled `InstancePre::instantiate` of the same guest in the same run.
//!
//! Toka's instance is built exactly as a worker builds one on a restart —
//! [`Instance::new`] on the runtime's own engine (the memory layout it picked
//! for one agent), with the agent's publisher, limits and deadline — then
//! `init` is called, which a raw instantiation does not do: the ratio is
//! against the stricter number.

use std::sync::Arc;
use std::time::Instant;

use toka_runtime::host::stdio::OutputCounters;
use toka_runtime::host::{self, Budget, Instance};
use toka_runtime::publisher::{AgentPublisher, PublishGrant};

use super::dispatch::round2;
use super::{Outcome, Session, Timer, Timing, build_runtime, median, sink_config};

/// Nanoseconds per `handle` call through Toka's [`Instance`] (its engine,
/// store limits, deadline and fault containment) in a tight loop on one
/// thread: the dispatch cost without the bus, for the breakdown.
pub(super) fn instance_call_ns(
    s: &Session,
    payload: &bytes::Bytes,
    calls: u64,
) -> anyhow::Result<Timing> {
    let config = sink_config(&s.modules, 1, "bench.>", 1, 1024)?;
    let agent = config.agents[0].clone();
    let rt = build_runtime(config)?;
    let engine = rt.engine().clone();
    let linker = host::new_linker(&engine).map_err(|e| anyhow::anyhow!("{e:#}"))?;
    let module = host::module::load(&engine, &linker, &s.sink)?;
    let publisher = Arc::new(AgentPublisher::new(
        Arc::from(agent.name.as_str()),
        PublishGrant::Patterns(agent.publish.clone()),
        agent.limits.max_payload_bytes,
        None,
        rt.bus().clone(),
    ));
    let budget = Budget::from_limits(&agent.limits, false);
    let mut instance = Instance::new(
        &engine,
        &module,
        publisher,
        Arc::new(OutputCounters::default()),
        &agent.limits,
        budget,
    )?;
    instance.init(&agent.settings)?;
    let event = toka_core::Event {
        id: 1,
        kind: toka_core::Kind::new("bench.event")?,
        source: Arc::from("bench"),
        timestamp_ms: 0,
        payload: payload.clone(),
    };
    let mut run = |n: u64| -> anyhow::Result<Timing> {
        let timer = Timer::start();
        for _ in 0..n {
            instance.handle(&event)?;
        }
        Ok(timer.per(n))
    };
    run((calls / 10).max(1000))?;
    run(calls)
}

pub(super) fn fresh_instance(s: &mut Session) -> anyhow::Result<Vec<Outcome>> {
    let config = sink_config(&s.modules, 1, "bench.>", 1, 1024)?;
    let agent = config.agents[0].clone();
    let rt = build_runtime(config)?;
    let engine = rt.engine().clone();
    let wrap = |e: wasmtime::Error| anyhow::anyhow!("{e:#}");
    let linker = host::new_linker(&engine).map_err(wrap)?;
    let module = host::module::load(&engine, &linker, &s.sink)?;
    let publisher = Arc::new(AgentPublisher::new(
        Arc::from(agent.name.as_str()),
        PublishGrant::Patterns(agent.publish.clone()),
        agent.limits.max_payload_bytes,
        Some((agent.limits.publish_rate, agent.limits.publish_burst)),
        rt.bus().clone(),
    ));
    let output = Arc::new(OutputCounters::default());
    let budget = Budget::from_limits(&agent.limits, false);
    let fresh = |init: bool, n: u64| -> anyhow::Result<f64> {
        let start = Instant::now();
        for _ in 0..n {
            let mut instance = Instance::new(
                &engine,
                &module,
                publisher.clone(),
                output.clone(),
                &agent.limits,
                budget,
            )?;
            if init {
                instance.init(&agent.settings)?;
            }
            drop(instance);
        }
        Ok(start.elapsed().as_nanos() as f64 / n as f64)
    };
    let n = s.scale.instances;
    fresh(true, n / 10)?;
    let (mut ready, mut bare, mut raw) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..s.scale.repeats {
        raw.push(s.raw.instantiate_ns(n)?);
        ready.push(fresh(true, n)?);
        bare.push(fresh(false, n)?);
    }
    let (ready, bare, raw) = (median(ready), median(bare), median(raw));
    let ratio = ready / raw;
    Ok(vec![
        Outcome::new(
            "restart_fresh_instance",
            format!(
                "{:.1} us ready ({:.1} us without init); raw pooled instantiate {:.1} us; ratio {ratio:.2}",
                ready / 1000.0,
                bare / 1000.0,
                raw / 1000.0
            ),
        )
        .field("fresh_ready_us", round2(ready / 1000.0))
        .field("fresh_instantiate_us", round2(bare / 1000.0))
        .field("raw_pooled_instantiate_us", round2(raw / 1000.0))
        .field("ratio_vs_raw", round2(ratio))
        .field("instances", n)
        .target("<= 1.2x raw pooled instantiate", ratio <= 1.2),
    ])
}
