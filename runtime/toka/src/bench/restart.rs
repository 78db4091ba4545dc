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

use toka_runtime::host::stdio::OutputCounters;
use toka_runtime::host::{self, Budget, Instance};
use toka_runtime::publisher::{AgentPublisher, PublishGrant};

use toka_runtime::host::engine::MemoryLayout;

use super::{Outcome, Session, Timer, Timing, build_runtime_with, median, round2, sink_config};

/// Nanoseconds per `handle` call through Toka's [`Instance`] (its engine,
/// store limits, deadline and fault containment) in a tight loop on one
/// thread: the dispatch cost without the bus, for the breakdown.
pub(super) fn instance_call_ns(
    s: &Session,
    payload: &bytes::Bytes,
    calls: u64,
    layout: Option<MemoryLayout>,
) -> anyhow::Result<Timing> {
    let fresh = Fresh::new(s, layout)?;
    let mut instance = fresh.instance()?;
    instance.init(&fresh.agent.settings)?;
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

/// Everything a worker needs to build one agent's instance, on the engine
/// of a runtime with the given layout.
struct Fresh {
    engine: wasmtime::Engine,
    module: host::Module,
    publisher: Arc<AgentPublisher>,
    output: Arc<OutputCounters>,
    agent: toka_core::AgentConfig,
    budget: Budget,
}

impl Fresh {
    fn new(s: &Session, layout: Option<MemoryLayout>) -> anyhow::Result<Self> {
        let config = sink_config(&s.modules, 1, "bench.>", 1, 1024)?;
        let agent = config.agents[0].clone();
        let rt = build_runtime_with(config, layout)?;
        let engine = rt.engine().clone();
        let linker = host::new_linker(&engine).map_err(|e| anyhow::anyhow!("{e:#}"))?;
        let module = host::module::load(&engine, &linker, &s.sink)?;
        let publisher = Arc::new(AgentPublisher::new(
            Arc::from(agent.name.as_str()),
            PublishGrant::Patterns(agent.publish.clone()),
            agent.limits.max_payload_bytes,
            Some((agent.limits.publish_rate, agent.limits.publish_burst)),
            rt.bus().clone(),
        ));
        Ok(Fresh {
            engine,
            module,
            publisher,
            output: Arc::new(OutputCounters::default()),
            budget: Budget::from_limits(&agent.limits, false),
            agent,
        })
    }

    /// A ready instance of the sink, as the worker builds one.
    fn instance(&self) -> anyhow::Result<Instance> {
        Ok(Instance::new(
            &self.engine,
            &self.module,
            self.publisher.clone(),
            self.output.clone(),
            &self.agent.limits,
            self.budget,
        )?)
    }

    /// Per instance: build it (and call `init` if asked), then drop it.
    fn time(&self, init: bool, n: u64) -> anyhow::Result<Timing> {
        let timer = Timer::start();
        for _ in 0..n {
            let mut instance = self.instance()?;
            if init {
                instance.init(&self.agent.settings)?;
            }
            drop(instance);
        }
        Ok(timer.per(n))
    }
}

pub(super) fn fresh_instance(s: &mut Session) -> anyhow::Result<Vec<Outcome>> {
    // The layout the runtime picks for one agent (pooled), and on-demand
    // for comparison.
    let pooled = Fresh::new(s, None)?;
    let on_demand = Fresh::new(s, Some(MemoryLayout::OnDemand))?;
    let compact = Fresh::new(s, Some(MemoryLayout::Compact { growth: 0 }))?;
    let n = s.scale.instances;
    pooled.time(true, n / 10)?;
    on_demand.time(true, n / 10)?;
    compact.time(true, n / 10)?;
    let mut runs = Vec::new();
    for _ in 0..s.scale.repeats {
        runs.push([
            pooled.time(false, n)?,
            s.raw.instantiate_ns(n, false)?,
            pooled.time(true, n)?,
            s.raw.instantiate_ns(n, true)?,
            on_demand.time(true, n)?,
            compact.time(true, n)?,
        ]);
    }
    let wall = |i: usize| median(runs.iter().map(|r| r[i].wall).collect()) / 1000.0;
    let (fresh, raw, ready, raw_ready) = (wall(0), wall(1), wall(2), wall(3));
    let (demand, compact) = (wall(4), wall(5));
    let ratio = fresh / raw;
    let ready_ratio = ready / raw_ready;
    Ok(vec![
        Outcome::new(
            "restart_fresh_instance",
            format!(
                "{fresh:.1} us vs raw pooled instantiate {raw:.1} us (ratio {ratio:.2}); ready after init {ready:.1} us vs raw {raw_ready:.1} us (ratio {ready_ratio:.2}); ready with the on-demand layout {demand:.1} us, compact {compact:.1} us"
            ),
        )
        .field("fresh_instance_us", round2(fresh))
        .field("raw_pooled_instantiate_us", round2(raw))
        .field("ratio_vs_raw", round2(ratio))
        .field("fresh_ready_us", round2(ready))
        .field("raw_ready_us", round2(raw_ready))
        .field("ready_ratio_vs_raw", round2(ready_ratio))
        .field("fresh_ready_on_demand_us", round2(demand))
        .field("fresh_ready_compact_us", round2(compact))
        .field("instances", n)
        .target("<= 1.2x raw pooled instantiate", ratio <= 1.2),
    ])
}
