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

use wasmtime::{Config, Engine};

/// Granularity of call deadlines.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Engine settings chosen by the operator's configuration.
#[derive(Debug, Clone, Default)]
pub struct EngineOptions {
    /// Meter fuel (set when any agent has a `fuel` limit).
    pub fuel: bool,
}

/// Build the engine Toka runs every agent on.
pub fn new_engine(options: &EngineOptions) -> wasmtime::Result<Engine> {
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
