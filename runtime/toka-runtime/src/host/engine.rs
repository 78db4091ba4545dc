//! The one wasmtime [`Engine`] and the epoch ticker that enforces per-call
//! deadlines.
//!
//! Every setting that changes generated code lives here, summed up by
//! [`Codegen`] so the precompiled cache can key on it. Deadlines use epoch interruption rather than fuel:
//! it costs a load and compare per loop back-edge instead of a counter
//! update per instruction. A single host thread advances the epoch every
//! [`EPOCH_TICK`]; a call's deadline is its timeout rounded up to ticks.
//!
//! # Memory layout
//!
//! Where instances and linear memories live is a trade-off between speed and
//! how many agents fit, and the binding limit is the kernel's
//! `vm.max_map_count` (65,530 by default): every guard region, reservation
//! larger than the memory and copy-on-write image splits a memory into more
//! maps. wasmtime's default layout costs about four maps per memory (a Rust
//! guest's stack pages, its data image, its heap, the reserved rest), so it
//! stops near 16,000 instances. [`MemoryLayout::for_agents`] picks, from the
//! agent count and the limit it reads from `/proc`:
//!
//! - **pooled** (up to 4,095 agents by default): each memory reserves 4 GiB
//!   plus a 32 MiB guard, so compiled code has no bounds checks; instances
//!   come from pools sized to the agent count (exhausting a pool fails that
//!   agent's start, it never grows), and a freed slot is reset in place, so
//!   a restart costs about as much as raw pooled instantiation.
//! - **compact with room to grow**: memories mapped at their size plus
//!   1 MiB, no guard, no image (two maps each); code checks bounds
//!   explicitly, and a memory that outgrows its mapping is copied.
//! - **dense compact** (when even that would not fit): nothing to grow into,
//!   so neighbouring memories merge into a handful of maps and any number of
//!   agents fits; every growth copies the memory, which suits many small,
//!   idle agents.
//!
//! Agents keep their `memory_mb` limit in every layout. An operator who
//! wants the faster layouts at larger counts raises the limit instead, e.g.
//! `sysctl -w vm.max_map_count=1048576`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::limits::MAX_TABLE_ELEMENTS;

/// The wasmtime version this host is built on (pinned exactly in the
/// workspace `Cargo.toml`; wasmtime 48 exports no version constant, so a
/// test checks this one against `Cargo.lock`). Part of [`Codegen`].
pub const WASMTIME_VERSION: &str = "48.0.8";

/// Bump whenever [`base_config`] or [`new_engine_with`] changes a setting
/// that affects generated code, so artifacts compiled before the change get
/// another cache key. (wasmtime's own check on deserialization refuses them
/// anyway; this keeps them from even being looked up.)
const SETTINGS_REVISION: u32 = 1;

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
/// Compact layout, when the maps allow: room a memory gets to grow into.
const COMPACT_GROWTH: u64 = 1 << 20;
/// Memory maps a live pooled memory costs (a Rust guest's stack pages, its
/// copy-on-write data image, its heap, the rest of its slot).
const MAPS_PER_POOLED_MEMORY: usize = 4;
/// Most agents the pooled layout serves: each pooled memory reserves 4 GiB
/// of address space plus its guard, two per agent, and 47-bit user space
/// holds 128 TiB.
pub const MAX_POOLED_AGENTS: usize = 8192;
/// Linux's default `vm.max_map_count`.
const DEFAULT_MAX_MAP_COUNT: usize = 65_530;

/// Engine settings chosen by the operator's configuration.
#[derive(Debug, Clone, Default)]
pub struct EngineOptions {
    /// Meter fuel (set when any agent has a `fuel` limit).
    pub fuel: bool,
}

impl EngineOptions {
    /// What `config` needs: fuel metering when any agent has a `fuel`
    /// limit. The runtime and `toka compile --config` both ask here, so a
    /// precompiled cache matches the run.
    pub fn for_config(config: &toka_core::RuntimeConfig) -> Self {
        EngineOptions {
            fuel: config.agents.iter().any(|a| a.limits.fuel.is_some()),
        }
    }
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
    /// resets a slot. Fastest; each live memory keeps about four memory
    /// maps.
    Pooled {
        /// Agents the pools are sized for.
        agents: u32,
    },
    /// Each memory mapped at its size plus `growth` bytes to grow into, with
    /// no guard and no copy-on-write image. With `growth` 0 neighbouring
    /// memories merge into a handful of maps: any agent count fits.
    /// Compiled code checks bounds explicitly, and a memory that outgrows its
    /// mapping is moved (copied) into a larger one; with `growth` 0 that is
    /// every growth.
    Compact {
        /// Bytes reserved after each memory (each costs one more map).
        growth: u64,
    },
}

impl MemoryLayout {
    /// The layout for a runtime of `agents` wasm agents, the fastest whose
    /// memory maps fit in half of `vm.max_map_count` (read from `/proc`;
    /// the other half is the rest of the process's), assuming up to two
    /// memories per agent:
    /// - [`Pooled`](MemoryLayout::Pooled) at about four maps per memory, up
    ///   to [`MAX_POOLED_AGENTS`] (its reservations' share of the address
    ///   space): 4,095 agents under Linux's default limit of 65,530;
    /// - [`Compact`](MemoryLayout::Compact) with 1 MiB to grow into (two maps
    ///   per memory) while that fits;
    /// - else `Compact` with nothing to grow into (memories merge into a
    ///   handful of maps, however many agents).
    pub fn for_agents(agents: usize) -> Self {
        Self::for_agents_and_limit(agents, max_map_count().unwrap_or(DEFAULT_MAX_MAP_COUNT))
    }

    fn for_agents_and_limit(agents: usize, max_map_count: usize) -> Self {
        let budget = max_map_count / 2;
        let memories = agents.saturating_mul(POOL_MEMORIES as usize);
        if agents <= MAX_POOLED_AGENTS && memories.saturating_mul(MAPS_PER_POOLED_MEMORY) <= budget
        {
            MemoryLayout::Pooled {
                agents: agents as u32,
            }
        } else if memories.saturating_mul(2) <= budget {
            MemoryLayout::Compact {
                growth: COMPACT_GROWTH,
            }
        } else {
            MemoryLayout::Compact { growth: 0 }
        }
    }
}

/// Everything Toka chooses that the machine code of a compiled component
/// depends on: wasmtime's version, the target, fuel metering and the memory
/// layout's bounds-checking strategy. Two engines with the same `Codegen`
/// load each other's precompiled components; the module cache keys
/// artifacts on it.
///
/// It is computed from the settings, not from the engine, so a runtime-only
/// build (no Cranelift, hence no compiler flags to hash) finds the artifacts
/// a full build's `toka compile` wrote. What it cannot see (the CPU features
/// Cranelift detected on the compiling machine) wasmtime checks itself when
/// it deserializes an artifact, refusing one this CPU cannot run.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Codegen(String);

impl Codegen {
    /// The code an engine built by [`new_engine_with`]`(options, layout)`
    /// generates.
    pub fn new(options: &EngineOptions, layout: MemoryLayout) -> Self {
        // The pool size changes where instances live, not the code: pooled
        // and on-demand engines share guard-region code.
        let memory = match layout {
            MemoryLayout::OnDemand | MemoryLayout::Pooled { .. } => "guarded".to_string(),
            MemoryLayout::Compact { growth } => format!("compact+{growth}"),
        };
        Codegen(format!(
            "wasmtime {WASMTIME_VERSION}; {}-{}; settings r{SETTINGS_REVISION}; fuel {}; memory {memory}",
            std::env::consts::ARCH,
            std::env::consts::OS,
            if options.fuel { "on" } else { "off" },
        ))
    }

    /// A readable summary, e.g. `wasmtime 48.0.8; x86_64-linux; settings
    /// r1; fuel off; memory guarded`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Codegen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
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
    match layout {
        MemoryLayout::OnDemand => Engine::new(&base_config(options)),
        MemoryLayout::Pooled { agents } => {
            // Resetting freed slots in place needs PAGEMAP_SCAN (Linux 6.7):
            // without it "keep resident" would memset the whole region on
            // every free, so then slots are given back to the kernel instead.
            let mut config = base_config(options);
            config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool(agents, true)));
            Engine::new(&config).or_else(|_| {
                let mut config = base_config(options);
                config
                    .allocation_strategy(InstanceAllocationStrategy::Pooling(pool(agents, false)));
                Engine::new(&config)
            })
        }
        MemoryLayout::Compact { growth } => {
            let mut config = base_config(options);
            config
                .memory_reservation(0)
                .memory_guard_size(0)
                .guard_before_linear_memory(false)
                .memory_reservation_for_growth(growth)
                .memory_init_cow(false);
            Engine::new(&config)
        }
    }
}

fn base_config(options: &EngineOptions) -> Config {
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
        .memory_init_cow(true);
    #[cfg(feature = "compiler")]
    config.parallel_compilation(true);
    config
}

/// Pools for `agents` agents; `reset_in_place`: see [`new_engine_with`].
fn pool(agents: u32, reset_in_place: bool) -> PoolingAllocationConfig {
    let mut pool = PoolingAllocationConfig::new();
    let agents = agents.max(1).saturating_add(POOL_SLACK);
    pool.total_component_instances(agents)
        .total_core_instances(agents.saturating_mul(POOL_CORE_INSTANCES))
        .total_memories(agents.saturating_mul(POOL_MEMORIES))
        .total_tables(agents.saturating_mul(POOL_TABLES))
        // Toka never runs guests on fibers: no async stacks (each would
        // cost two memory maps and 2 MiB of address space).
        .total_stacks(0)
        .max_memories_per_module(POOL_MEMORIES)
        .max_tables_per_module(POOL_TABLES)
        .table_elements(MAX_TABLE_ELEMENTS);
    if reset_in_place {
        // A restarted agent reuses its slot: reset only the pages the last
        // instance dirtied and keep them resident, so the new instance's
        // first call takes no page faults.
        pool.pagemap_scan(Enabled::Yes)
            .linear_memory_keep_resident(KEEP_RESIDENT)
            .table_keep_resident(KEEP_RESIDENT);
    }
    pool
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
                        Some(engine) => {
                            super::wait::tick();
                            engine.increment_epoch();
                        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_follows_the_agent_count_and_the_map_limit() {
        let pick = MemoryLayout::for_agents_and_limit;
        assert_eq!(pick(1, 65_530), MemoryLayout::Pooled { agents: 1 });
        assert_eq!(pick(4_095, 65_530), MemoryLayout::Pooled { agents: 4_095 });
        let grow = MemoryLayout::Compact {
            growth: COMPACT_GROWTH,
        };
        assert_eq!(pick(4_096, 65_530), grow);
        assert_eq!(pick(100_000, 65_530), MemoryLayout::Compact { growth: 0 });
        // An operator who raises vm.max_map_count keeps the faster layouts.
        assert_eq!(pick(8_192, 1 << 20), MemoryLayout::Pooled { agents: 8_192 });
        assert_eq!(pick(100_000, 1 << 20), grow);
    }

    #[test]
    fn the_wasmtime_version_matches_the_lockfile() {
        let lock =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.lock"))
                .expect("the workspace Cargo.lock");
        let locked = lock
            .split("[[package]]")
            .find(|p| p.contains("\nname = \"wasmtime\"\n"))
            .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = ")))
            .expect("wasmtime in Cargo.lock");
        assert_eq!(locked.trim_matches('"'), WASMTIME_VERSION);
    }

    #[test]
    fn codegen_follows_the_settings_that_change_code() {
        let off = EngineOptions { fuel: false };
        let on = EngineOptions { fuel: true };
        let pooled = MemoryLayout::Pooled { agents: 10 };
        assert_eq!(
            Codegen::new(&off, MemoryLayout::OnDemand),
            Codegen::new(&off, MemoryLayout::Pooled { agents: 4_000 })
        );
        assert_ne!(Codegen::new(&off, pooled), Codegen::new(&on, pooled));
        assert_ne!(
            Codegen::new(&off, pooled),
            Codegen::new(&off, MemoryLayout::Compact { growth: 0 })
        );
        assert_ne!(
            Codegen::new(&off, MemoryLayout::Compact { growth: 0 }),
            Codegen::new(&off, MemoryLayout::Compact { growth: 1 << 20 })
        );
        assert!(
            Codegen::new(&off, pooled)
                .as_str()
                .contains(WASMTIME_VERSION)
        );
    }

    /// The claim [`Codegen`] makes: engines it calls equal load each
    /// other's artifacts. (Checked on a real component; the unequal ones
    /// only cost a recompile.)
    #[cfg(feature = "compiler")]
    #[test]
    fn engines_with_equal_codegen_share_artifacts() {
        // The smallest component: no imports, no exports.
        let wasm = b"\0asm\x0d\0\x01\0";
        let layouts = [
            MemoryLayout::OnDemand,
            MemoryLayout::Pooled { agents: 1 },
            MemoryLayout::Pooled { agents: 64 },
            MemoryLayout::Compact { growth: 0 },
            MemoryLayout::Compact { growth: 1 << 20 },
        ];
        for fuel in [false, true] {
            let options = EngineOptions { fuel };
            for a in layouts {
                let engine = new_engine_with(&options, a).unwrap();
                let artifact = wasmtime::component::Component::new(&engine, wasm)
                    .unwrap()
                    .serialize()
                    .unwrap();
                for b in layouts {
                    if Codegen::new(&options, a) != Codegen::new(&options, b) {
                        continue;
                    }
                    let other = new_engine_with(&options, b).unwrap();
                    // SAFETY: `artifact` was serialized just above by wasmtime.
                    #[expect(unsafe_code, reason = "deserializing our own artifact")]
                    let loaded =
                        unsafe { wasmtime::component::Component::deserialize(&other, &artifact) };
                    assert!(loaded.is_ok(), "{a:?} -> {b:?}: {:?}", loaded.err());
                }
            }
        }
    }

    #[test]
    fn every_layout_builds() {
        for layout in [
            MemoryLayout::OnDemand,
            MemoryLayout::Pooled { agents: 4 },
            MemoryLayout::Compact { growth: 0 },
            MemoryLayout::Compact { growth: 1 << 20 },
        ] {
            new_engine_with(&EngineOptions::default(), layout).unwrap();
        }
    }
}
