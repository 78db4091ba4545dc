//! The one wasmtime [`Engine`] and the epoch ticker that enforces per-call
//! deadlines.
//!
//! Every setting that changes generated code lives here so the precompiled
//! cache can key on it. Deadlines use epoch interruption rather than fuel:
//! it costs a load and compare per loop back-edge instead of a counter
//! update per instruction. A single host thread advances the epoch every
//! [`EPOCH_TICK`]; a call's deadline is its timeout rounded up to ticks.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::limits::MAX_TABLE_ELEMENTS;

/// Granularity of call deadlines.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Pooled layout: instances beyond the agent count, for the embedder's own.
const POOL_SLACK: u32 = 16;
/// Pooled layout, per agent: core instances (a Rust component has about
/// four), memories (two for a component built with the preview1 adapter)
/// and tables. Exceeding a total fails that agent's instantiation.
const POOL_CORE_INSTANCES: u32 = 16;
const POOL_MEMORIES: u32 = 2;
const POOL_TABLES: u32 = 4;
/// Pooled layout: bytes of a freed memory (and table) reset in place and
/// kept resident rather than given back to the kernel.
const KEEP_RESIDENT: usize = 2 << 20;
/// Compact layout: room a moved memory gets to grow into before it moves again.
const COMPACT_GROWTH: u64 = 0;
/// Memory maps a live pooled memory costs (its image, its accessible
/// pages, the rest of its slot).
const MAPS_PER_POOLED_MEMORY: u32 = 3;
/// Most agents the pooled layout serves: each pooled memory reserves 4 GiB
/// of address space plus its guard (47-bit user space holds 128 TiB).
const MAX_POOLED_AGENTS: usize = 8192;
/// Linux's default `vm.max_map_count`.
const DEFAULT_MAX_MAP_COUNT: usize = 65_530;

/// Engine settings chosen by the operator's configuration.
#[derive(Debug, Clone, Default)]
pub struct EngineOptions {
    /// Meter fuel (set when any agent has a `fuel` limit).
    pub fuel: bool,
}

/// How instances and their linear memories are placed in the host's address
/// space: the trade-off between speed and how many agents fit. See the
/// module docs; [`MemoryLayout::for_agents`] is what the runtime picks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MemoryLayout {
    /// wasmtime's defaults: each memory reserves 4 GiB plus a 32 MiB guard,
    /// so compiled code needs no bounds checks; memory images are mapped
    /// copy-on-write; every instantiation maps and every drop unmaps.
    #[default]
    OnDemand,
    /// The same reservation and guard, with instances, memories and tables
    /// taken from pools preallocated for `agents` agents: instantiation only
    /// resets a slot. Fastest; each live memory keeps about three memory
    /// maps.
    Pooled {
        /// Agents the pools are sized for.
        agents: u32,
    },
    /// Each memory mapped at exactly its size, no guard, no reservation and
    /// no copy-on-write image, so neighbouring memories merge into few maps:
    /// fits any agent count. Compiled code checks bounds explicitly, and a
    /// memory that grows is moved (copied) into a larger mapping.
    Compact,
}

impl MemoryLayout {
    /// The layout for a runtime of `agents` wasm agents: pooled while the
    /// pools' memory maps fit comfortably under `vm.max_map_count` (read from
    /// `/proc`) and their reservations in the address space; compact beyond.
    pub fn for_agents(agents: usize) -> Self {
        let max_maps = max_map_count().unwrap_or(DEFAULT_MAX_MAP_COUNT);
        let pooled_maps = agents.saturating_mul((POOL_MEMORIES * MAPS_PER_POOLED_MEMORY) as usize);
        if agents <= MAX_POOLED_AGENTS && pooled_maps <= max_maps / 2 {
            MemoryLayout::Pooled {
                agents: agents as u32,
            }
        } else {
            MemoryLayout::Compact
        }
    }
}

/// The kernel's `vm.max_map_count`, where `/proc` has it.
pub fn max_map_count() -> Option<usize> {
    std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Build the engine Toka runs every agent on, with the default layout.
pub fn new_engine(options: &EngineOptions) -> wasmtime::Result<Engine> {
    new_engine_with(options, MemoryLayout::default())
}

/// [`new_engine`] with a chosen [`MemoryLayout`].
pub fn new_engine_with(options: &EngineOptions, layout: MemoryLayout) -> wasmtime::Result<Engine> {
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        // Toka calls guests synchronously, one call per store at a time; the
        // concurrent component-model machinery would only add per-call cost.
        .concurrency_support(false)
        .epoch_interruption(true)
        .consume_fuel(options.fuel)
        // 512 KiB of wasm stack: deep enough for ordinary guests, and a
        // runaway recursion traps long before the host thread's stack is at risk.
        .max_wasm_stack(512 * 1024)
        .memory_init_cow(true)
        .parallel_compilation(true);
    match layout {
        MemoryLayout::OnDemand => {}
        MemoryLayout::Pooled { agents } => {
            let mut pool = PoolingAllocationConfig::new();
            let agents = agents.max(1).saturating_add(POOL_SLACK);
            pool.total_component_instances(agents)
                .total_core_instances(agents.saturating_mul(POOL_CORE_INSTANCES))
                .total_memories(agents.saturating_mul(POOL_MEMORIES))
                .total_tables(agents.saturating_mul(POOL_TABLES))
                // Toka never runs guests on fibers: no async stacks (each
                // would cost two memory maps and 2 MiB of address space).
                .total_stacks(0)
                .max_memories_per_module(POOL_MEMORIES)
                .max_tables_per_module(POOL_TABLES)
                .table_elements(MAX_TABLE_ELEMENTS)
                // A restarted agent reuses its slot: reset only the pages
                // the last instance dirtied (found with PAGEMAP_SCAN where
                // the kernel has it) and keep them resident, so the new
                // instance's first call takes no page faults.
                .pagemap_scan(Enabled::Auto)
                .linear_memory_keep_resident(KEEP_RESIDENT)
                .table_keep_resident(KEEP_RESIDENT);
            config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        }
        MemoryLayout::Compact => {
            config
                .memory_reservation(0)
                .memory_guard_size(0)
                .guard_before_linear_memory(false)
                .memory_reservation_for_growth(COMPACT_GROWTH)
                .memory_init_cow(false);
        }
    }
    Engine::new(&config)
}

/// Advances the engine's epoch every [`EPOCH_TICK`] until dropped.
pub struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    /// Start ticking `engine`.
    pub fn start(engine: &Engine) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let engine = engine.weak();
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("toka-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    match engine.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => return,
                    }
                }
            })
            .expect("spawn the epoch thread");
        EpochTicker {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl std::fmt::Debug for EpochTicker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EpochTicker").finish_non_exhaustive()
    }
}

/// Epoch ticks for a deadline of `timeout` (at least one).
pub fn deadline_ticks(timeout: Duration) -> u64 {
    let tick = EPOCH_TICK.as_nanos();
    (timeout.as_nanos().div_ceil(tick) as u64).max(1)
}
