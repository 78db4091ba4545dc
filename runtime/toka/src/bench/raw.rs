//! The floor: the same `sink` guest driven straight through wasmtime, with
//! the same bindings (`toka_runtime::host::bindings`) and none of Toka — no
//! bus, no mailbox, no worker, no limits. Store data is the least the guest's
//! imports need (an empty WASI context, host functions that do nothing).
//!
//! The engine uses the fastest settings wasmtime 48 offers for a call and an
//! instantiation, keeping the one safety setting Toka cannot do without
//! (epoch interruption, which backs every call's deadline):
//! `concurrency_support(false)` (halves a component call), the default 4 GiB
//! reservation and 32 MiB guard (no bounds checks), copy-on-write memory
//! images, and the pooling allocator with its default limits.

use super::{Timer, Timing};
use std::path::Path;

use anyhow::Context as _;
use toka_runtime::host::bindings::{Agent, AgentPre, bus, log, types};
use toka_runtime::host::engine::EpochTicker;
use toka_runtime::host::module::LoadOptions;
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store,
};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// Store data of a raw instance.
pub struct RawState {
    wasi: WasiCtx,
    table: ResourceTable,
}

impl RawState {
    fn new() -> Self {
        RawState {
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
        }
    }
}

impl WasiView for RawState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl types::Host for RawState {}

impl bus::Host for RawState {
    fn publish(&mut self, _kind: String, _payload: Vec<u8>) -> Result<u64, types::Error> {
        Ok(0)
    }
}

impl log::Host for RawState {
    fn log(&mut self, _level: log::Level, _message: String, _fields: Vec<log::Field>) {}
}

/// The sink, compiled and pre-linked on the floor's engine.
pub struct Raw {
    engine: Engine,
    pre: AgentPre<RawState>,
    _epoch: EpochTicker,
}

impl Raw {
    /// Load `sink.wasm` from `path` on a fresh best-settings engine.
    pub fn new(path: &Path) -> anyhow::Result<Self> {
        let mut pool = PoolingAllocationConfig::new();
        // Enough for every instance the restart scenario holds at once.
        pool.total_component_instances(64)
            .total_core_instances(64 * 8)
            .total_memories(64 * 2)
            .total_tables(64 * 8)
            .pagemap_scan(Enabled::Auto)
            .linear_memory_keep_resident(2 << 20)
            .table_keep_resident(2 << 20);
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .concurrency_support(false)
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(|e| anyhow::anyhow!("{e:#}"))?;
        Self::with_engine(engine, path)
    }

    /// The sink on `engine`.
    pub fn with_engine(engine: Engine, path: &Path) -> anyhow::Result<Self> {
        // Read like every module file (regular, bounded), compiled in
        // process: the bench's floor is raw wasmtime.
        let wasm = toka_runtime::host::module::read(path, LoadOptions::default().max_bytes)?;
        let component = Component::new(&engine, &wasm)
            .map_err(|e| anyhow::anyhow!("{e:#}"))
            .with_context(|| format!("compiling {}", path.display()))?;
        let mut linker = Linker::<RawState>::new(&engine);
        let wrap = |e: wasmtime::Error| anyhow::anyhow!("{e:#}");
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(wrap)?;
        types::add_to_linker::<RawState, HasSelf<RawState>>(&mut linker, |s| s).map_err(wrap)?;
        bus::add_to_linker::<RawState, HasSelf<RawState>>(&mut linker, |s| s).map_err(wrap)?;
        log::add_to_linker::<RawState, HasSelf<RawState>>(&mut linker, |s| s).map_err(wrap)?;
        let pre = linker.instantiate_pre(&component).map_err(wrap)?;
        let pre = AgentPre::new(pre).map_err(wrap)?;
        let epoch = EpochTicker::start(&engine);
        Ok(Raw {
            engine,
            pre,
            _epoch: epoch,
        })
    }

    fn instance(&self) -> anyhow::Result<(Store<RawState>, Agent)> {
        let mut store = Store::new(&self.engine, RawState::new());
        store.set_epoch_deadline(u64::MAX / 2);
        let agent = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| anyhow::anyhow!("{e:#}"))?;
        agent
            .toka_runtime_handler()
            .call_init(&mut store, &[])
            .map_err(|e| anyhow::anyhow!("{e:#}"))?
            .map_err(|e| anyhow::anyhow!("init: {e}"))?;
        Ok((store, agent))
    }

    /// Nanoseconds per `handle` call with `payload`, over `calls` calls in a
    /// tight loop on one instance (after a warm-up): wall time and the
    /// thread's CPU time.
    pub fn call_ns(&self, payload: &[u8], calls: u64) -> anyhow::Result<Timing> {
        let (mut store, agent) = self.instance()?;
        let handler = agent.toka_runtime_handler();
        let mut run = |n: u64| -> anyhow::Result<Timing> {
            let timer = Timer::start();
            for id in 0..n {
                let event = types::Event {
                    id,
                    kind: "bench.event",
                    source: "bench",
                    timestamp_ms: 0,
                    payload,
                };
                handler
                    .call_handle(&mut store, event)
                    .map_err(|e| anyhow::anyhow!("{e:#}"))?
                    .map_err(|e| anyhow::anyhow!("handle: {e}"))?;
            }
            Ok(timer.per(n))
        };
        run((calls / 10).max(1000))?;
        run(calls)
    }

    /// Nanoseconds per `Store::new` + pooled `InstancePre::instantiate` (and
    /// `init`, if asked), then the store's drop, which returns the slot to
    /// the pool; over `n`.
    pub fn instantiate_ns(&self, n: u64, init: bool) -> anyhow::Result<Timing> {
        let run = |n: u64| -> anyhow::Result<Timing> {
            let timer = Timer::start();
            for _ in 0..n {
                let mut store = Store::new(&self.engine, RawState::new());
                store.set_epoch_deadline(u64::MAX / 2);
                let agent = self
                    .pre
                    .instantiate(&mut store)
                    .map_err(|e| anyhow::anyhow!("{e:#}"))?;
                if init {
                    agent
                        .toka_runtime_handler()
                        .call_init(&mut store, &[])
                        .map_err(|e| anyhow::anyhow!("{e:#}"))?
                        .map_err(|e| anyhow::anyhow!("init: {e}"))?;
                }
                std::hint::black_box(&agent);
            }
            Ok(timer.per(n))
        };
        run((n / 10).max(100))?;
        run(n)
    }
}
