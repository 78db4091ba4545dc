//! Running wasm agents: a fixed pool of worker threads takes agents with
//! queued events from a run queue and feeds them their events in batches.
//!
//! Guest calls are synchronous, so a wasm agent costs no thread and no task
//! while idle: it is just its mailbox, its `Store` and a flag. An agent is in
//! the run queue at most once (the `scheduled` flag), so exactly one worker
//! handles it at a time and it sees its events in order. After a batch the
//! agent goes to the back of the queue, so one busy agent cannot starve the
//! others; a guest stuck in a loop holds its worker only until its deadline.
//!
//! Faults are handled here: the faulting event goes to `toka.dead-letter`,
//! the `Store` is dropped, and the [`Supervisor`] decides between a restart
//! after backoff (events wait in the mailbox meanwhile) and quarantine.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender, TryRecvError};
use parking_lot::Mutex;
use toka_core::event::kinds;
use toka_core::text::{MAX_ERROR, bounded};
use toka_core::{AgentConfig, Event};
use wasmtime::Engine;

use crate::bus::Bus;
use crate::host::caps::AgentCaps;
use crate::host::stdio::OutputCounters;
use crate::host::{Budget, CallError, Fault, Instance, Module, ModuleError};
use crate::mailbox::{Mailbox, Wake};
use crate::publisher::AgentPublisher;
use crate::rpc::{AgentRpc, ServerState, handoff, serve_queued};
use crate::supervisor::{Supervisor, Verdict};

/// Events handled per turn before the agent yields its worker.
const BATCH: usize = 64;
/// Run-queue message telling a worker to exit.
const STOP: usize = usize::MAX;
/// How long an idle worker polls the run queue before it blocks (see [`next`]).
const SPIN: Duration = Duration::from_micros(50);
/// How long of [`SPIN`] the poll keeps its core without yielding.
const SPIN_BUSY: Duration = Duration::from_micros(5);
/// Queue polls between clock reads while spinning.
const SPIN_READS: u32 = 64;
/// Native stack of worker threads: a request served inline nests the
/// server's guest call (up to 512 KiB of wasm stack each) in the
/// requester's, a few levels deep (see `rpc`). Only touched pages cost memory.
const WORKER_STACK: usize = 16 << 20;

/// Where an agent is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Its module is still compiling (in the background); events wait in
    /// the mailbox.
    Loading,
    /// No instance yet (or the previous one faulted); start one on next turn.
    Pending,
    /// An instance is live.
    Running,
    /// Waiting out a restart backoff.
    Backoff,
    /// Stopped for good after repeated faults; its events are discarded.
    Quarantined,
}

/// Counters for one wasm agent, updated live by the workers; an embedder
/// gets a handle with [`Runtime::agent_stats`](crate::Runtime::agent_stats).
#[derive(Debug, Default)]
pub struct AgentCounters {
    /// Events whose `handle` returned (ok or an error value).
    pub handled: AtomicU64,
    /// `handle` calls that returned an error value.
    pub errors: AtomicU64,
    /// Faults (traps, deadlines, limits, failed starts).
    pub faults: AtomicU64,
    /// Instances started (first start and restarts).
    pub starts: AtomicU64,
    /// Requests this agent's `serve` answered (a reply or an error value).
    pub served: AtomicU64,
    /// Guest stdout/stderr bytes logged and discarded.
    pub output: Arc<OutputCounters>,
}

impl AgentCounters {
    /// Events handled so far (ok or an error value).
    pub fn handled(&self) -> u64 {
        self.handled.load(Ordering::Acquire)
    }

    /// Instances started so far (first start and restarts).
    pub fn starts(&self) -> u64 {
        self.starts.load(Ordering::Acquire)
    }

    /// Requests served so far (a reply or an error value).
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Acquire)
    }

    /// Faults so far.
    pub fn faults(&self) -> u64 {
        self.faults.load(Ordering::Acquire)
    }
}

pub(crate) struct Slot {
    pub(crate) instance: Option<Instance>,
    pub(crate) health: Health,
    supervisor: Supervisor,
    /// Events taken from the mailbox but not yet handled; kept across a
    /// restart so a fault loses only the event that caused it.
    pending: VecDeque<Arc<Event>>,
}

/// One configured wasm agent, alive for the runtime's whole run.
pub(crate) struct WasmAgent {
    pub(crate) index: usize,
    pub(crate) config: AgentConfig,
    pub(crate) module: Arc<ModuleCell>,
    pub(crate) publisher: Arc<AgentPublisher>,
    pub(crate) mailbox: Arc<Mailbox>,
    pub(crate) counters: Arc<AgentCounters>,
    /// The capabilities granted to this agent, shared by its instances.
    pub(crate) caps: Arc<AgentCaps>,
    /// Its side of request/reply (its `request` grant).
    pub(crate) rpc: Arc<AgentRpc>,
    /// Its requests waiting to be served, and its routing marks.
    pub(crate) server: ServerState,
    scheduled: Arc<AtomicBool>,
    queue: Sender<usize>,
    pub(crate) budget: Budget,
    pub(crate) slot: Mutex<Slot>,
}

/// An agent's module: loaded before the run, or compiled in the background
/// while the other agents already run (`RuntimeOptions::background_compile`).
pub(crate) struct ModuleCell {
    /// The module file.
    pub(crate) path: std::path::PathBuf,
    loaded: std::sync::OnceLock<Result<Module, ModuleError>>,
}

impl ModuleCell {
    /// A cell holding `loaded` already.
    pub(crate) fn ready(path: std::path::PathBuf, loaded: Module) -> Arc<Self> {
        let cell = ModuleCell::loading(path);
        let _ = cell.loaded.set(Ok(loaded));
        cell
    }

    /// A cell filled later by [`ModuleCell::fill`].
    pub(crate) fn loading(path: std::path::PathBuf) -> Arc<Self> {
        Arc::new(ModuleCell {
            path,
            loaded: std::sync::OnceLock::new(),
        })
    }

    /// The module, or why it failed to load; `None` while it compiles.
    pub(crate) fn get(&self) -> Option<&Result<Module, ModuleError>> {
        self.loaded.get()
    }

    /// Store the outcome of the background compile and give each of
    /// `agents` (those running this module) its first turn.
    pub(crate) fn fill(&self, loaded: Result<Module, ModuleError>, agents: &[Arc<WasmAgent>]) {
        let _ = self.loaded.set(loaded);
        for agent in agents {
            {
                let mut slot = agent.slot.lock();
                if slot.health == Health::Loading {
                    slot.health = Health::Pending;
                }
            }
            handoff(agent);
            agent.schedule();
        }
    }
}

/// Puts an agent on the run queue when its mailbox gets work.
pub(crate) struct Waker {
    index: usize,
    scheduled: Arc<AtomicBool>,
    queue: Sender<usize>,
}

impl Wake for Waker {
    fn wake(&self) {
        // Read before the swap: while the agent is already scheduled (a busy
        // agent, every push of a stream) the flag's cache line stays shared
        // instead of bouncing between the publisher's core and the worker's.
        if !self.scheduled.load(Ordering::Acquire) && !self.scheduled.swap(true, Ordering::AcqRel) {
            let _ = self.queue.send(self.index);
        }
    }
}

/// The shared run queue.
#[derive(Clone)]
pub(crate) struct RunQueue {
    pub(crate) tx: Sender<usize>,
    rx: Receiver<usize>,
}

impl RunQueue {
    pub(crate) fn new() -> Self {
        let (tx, rx) = crossbeam_channel::unbounded();
        RunQueue { tx, rx }
    }
}

impl WasmAgent {
    /// The waker for agent `index`, and the flag it shares with the agent.
    pub(crate) fn waker(index: usize, queue: &RunQueue) -> (Arc<Waker>, Arc<AtomicBool>) {
        let scheduled = Arc::new(AtomicBool::new(false));
        let waker = Arc::new(Waker {
            index,
            scheduled: scheduled.clone(),
            queue: queue.tx.clone(),
        });
        (waker, scheduled)
    }

    #[expect(clippy::too_many_arguments, reason = "assembled once, by the runtime")]
    pub(crate) fn new(
        index: usize,
        config: AgentConfig,
        module: Arc<ModuleCell>,
        publisher: Arc<AgentPublisher>,
        mailbox: Arc<Mailbox>,
        scheduled: Arc<AtomicBool>,
        queue: &RunQueue,
        fuel_metered: bool,
        caps: Arc<AgentCaps>,
        rpc: Arc<AgentRpc>,
    ) -> Self {
        let budget = Budget::from_limits(&config.limits, fuel_metered);
        let supervisor = Supervisor::new(&config.limits);
        WasmAgent {
            index,
            caps,
            rpc,
            server: ServerState::new(),
            config,
            module,
            publisher,
            mailbox,
            counters: Arc::default(),
            scheduled,
            queue: queue.tx.clone(),
            budget,
            slot: Mutex::new(Slot {
                instance: None,
                health: Health::Pending,
                supervisor,
                pending: VecDeque::new(),
            }),
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.config.name
    }

    /// Put the agent on the run queue unless it already is.
    pub(crate) fn schedule(&self) {
        if !self.scheduled.swap(true, Ordering::AcqRel) {
            let _ = self.queue.send(self.index);
        }
    }

    pub(crate) fn health(&self) -> Health {
        let health = self.slot.lock().health;
        handoff(self);
        health
    }

    /// Put the agent on the run queue again, its `scheduled` flag still set
    /// by the turn that could not take its slot (see [`handoff`]).
    pub(crate) fn requeue(&self) {
        let _ = self.queue.send(self.index);
    }
}

/// What a worker needs besides the agents.
pub(crate) struct WorkerContext {
    pub(crate) engine: Engine,
    pub(crate) bus: Bus,
    pub(crate) agents: Arc<[Arc<WasmAgent>]>,
    pub(crate) timers: tokio::runtime::Handle,
    /// Set when the drain deadline has passed: workers stop between events
    /// and leave the rest unhandled.
    pub(crate) abandon: AtomicBool,
}

/// The running worker threads, and the pool their stand-ins share.
pub(crate) struct Workers {
    handles: Vec<std::thread::JoinHandle<()>>,
    pool: Arc<Pool>,
}

impl Workers {
    /// Wait for the workers (told to stop with [`stop_workers`]) and then
    /// for every stand-in thread to exit, so nothing of the run (its
    /// agents, their stores) outlives it.
    pub(crate) fn join(self) {
        for w in self.handles {
            let _ = w.join();
        }
        self.pool.stopped.store(true, Ordering::Release);
        while self.pool.live.load(Ordering::Acquire) > 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Start `n` worker threads on `queue`.
pub(crate) fn spawn_workers(n: usize, queue: &RunQueue, cx: Arc<WorkerContext>) -> Workers {
    let pool = Arc::new(Pool {
        rx: queue.rx.clone(),
        tx: queue.tx.clone(),
        cx,
        idle: AtomicUsize::new(0),
        starts: crossbeam_channel::unbounded(),
        stopped: AtomicBool::new(false),
        live: AtomicUsize::new(0),
    });
    let handles = (0..n)
        .map(|i| {
            let pool = pool.clone();
            std::thread::Builder::new()
                .name(format!("toka-worker-{i}"))
                .stack_size(WORKER_STACK)
                .spawn(move || {
                    work(&pool, None);
                })
                .expect("spawn a worker thread")
        })
        .collect();
    Workers { handles, pool }
}

/// What every worker thread, and every stand-in, serves.
struct Pool {
    rx: Receiver<usize>,
    tx: Sender<usize>,
    cx: Arc<WorkerContext>,
    /// Stand-in threads parked between waits, and how they are handed the
    /// next one (see [`start_stand_in`]).
    idle: AtomicUsize,
    starts: (Sender<Arc<AtomicBool>>, Receiver<Arc<AtomicBool>>),
    /// Set once the workers have exited: parked stand-ins leave.
    stopped: AtomicBool,
    /// Stand-in threads alive (serving or parked).
    live: AtomicUsize,
}

/// How often a parked stand-in looks whether the pool has stopped.
const STAND_IN_POLL: Duration = Duration::from_millis(20);

/// How long a stand-in thread stays parked for the next wait before it
/// exits: waits come in bursts (a driver's requests, a key-value
/// commit per event), and a thread spawned per wait costs more than the
/// commit it stands in for.
const STAND_IN_KEEP: Duration = Duration::from_secs(2);

/// How long an idle stand-in waits for work before it checks whether the
/// wait it stands in for is over.
const STAND_IN_IDLE: Duration = Duration::from_millis(10);

/// A worker's loop; `retire` is set for stand-ins, which leave once it is.
/// Returns `true` when the pool is stopping (a STOP or a closed queue).
fn work(pool: &Arc<Pool>, retire: Option<&AtomicBool>) -> bool {
    // A guest that waits in a host call on this thread gets a stand-in.
    let for_stand_in = pool.clone();
    crate::host::wait::set_stand_in(Some(std::rc::Rc::new(move || {
        start_stand_in(&for_stand_in).map(|s| Box::new(s) as Box<dyn std::any::Any>)
    })));
    loop {
        let index = match retire {
            None => next(&pool.rx),
            Some(retire) => {
                if retire.load(Ordering::Acquire) {
                    break;
                }
                match pool.rx.recv_timeout(STAND_IN_IDLE) {
                    Ok(index) => Some(index),
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) => continue,
                    Err(crossbeam_channel::RecvTimeoutError::Disconnected) => None,
                }
            }
        };
        match index {
            None => {
                crate::host::wait::set_stand_in(None);
                return true;
            }
            Some(STOP) => {
                if retire.is_some() {
                    // Each STOP is meant for one of the pool's own workers.
                    let _ = pool.tx.send(STOP);
                }
                crate::host::wait::set_stand_in(None);
                return true;
            }
            Some(index) => turn(&pool.cx, &pool.cx.agents[index]),
        }
    }
    crate::host::wait::set_stand_in(None);
    false
}

/// A stand-in worker serving the run queue while a guest on this thread
/// waits in a host call; it leaves (after its current turn) when dropped.
struct StandIn {
    retire: Arc<AtomicBool>,
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.retire.store(true, Ordering::Release);
    }
}

/// Start a stand-in worker for `pool`, so the pool keeps its size while
/// this worker is parked in a host call (see [`crate::host::wait`]).
///
/// A parked stand-in thread is reused when there is one; otherwise one is
/// spawned. After its wait ends a stand-in parks for [`STAND_IN_KEEP`].
fn start_stand_in(pool: &Arc<Pool>) -> Result<StandIn, String> {
    let retire = Arc::new(AtomicBool::new(false));
    if claim_idle(&pool.idle) {
        // A parked thread is counted in `idle` until claimed: it will take this.
        let _ = pool.starts.0.send(retire.clone());
        return Ok(StandIn { retire });
    }
    let flag = retire.clone();
    let for_thread = pool.clone();
    pool.live.fetch_add(1, Ordering::AcqRel);
    let spawned = std::thread::Builder::new()
        .name("toka-stand-in".into())
        .stack_size(WORKER_STACK)
        .spawn(move || {
            stand_in(&for_thread, flag);
            for_thread.live.fetch_sub(1, Ordering::AcqRel);
        });
    if let Err(e) = spawned {
        pool.live.fetch_sub(1, Ordering::AcqRel);
        return Err(format!("cannot start a stand-in worker: {e}"));
    }
    Ok(StandIn { retire })
}

/// Take one parked stand-in, if any is counted.
fn claim_idle(idle: &AtomicUsize) -> bool {
    idle.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
        .is_ok()
}

/// A stand-in thread: serve for one wait, then park for the next.
fn stand_in(pool: &Arc<Pool>, mut flag: Arc<AtomicBool>) {
    loop {
        if work(pool, Some(&flag)) {
            return;
        }
        pool.idle.fetch_add(1, Ordering::AcqRel);
        let parked = Instant::now();
        loop {
            match pool.starts.1.recv_timeout(STAND_IN_POLL) {
                Ok(next) => {
                    flag = next;
                    break;
                }
                // Leave once the pool stops or the keep time is over,
                // unless a starter has just claimed this thread (its flag
                // is then on the way).
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                    let done =
                        pool.stopped.load(Ordering::Acquire) || parked.elapsed() >= STAND_IN_KEEP;
                    if done && claim_idle(&pool.idle) {
                        return;
                    }
                }
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
            }
        }
    }
}

/// The next agent to run; `None` once the queue is gone.
///
/// An idle worker polls the queue for up to [`SPIN`] before it blocks: a
/// blocked worker costs the publisher that wakes it a system call and the
/// event the scheduler's wake-up latency (tens of microseconds on a busy or
/// virtualised host), while one that is still polling picks up the next
/// event of a steady stream in well under a microsecond. After the first
/// [`SPIN_BUSY`] it yields between polls, so on a machine with more runnable
/// threads than cores the poll gives its core away rather than burn the
/// publisher's time slice. Past `SPIN` the worker sleeps, so an idle runtime
/// burns no CPU.
fn next(rx: &Receiver<usize>) -> Option<usize> {
    let start = Instant::now();
    loop {
        match rx.try_recv() {
            Ok(index) => return Some(index),
            Err(TryRecvError::Disconnected) => return None,
            Err(TryRecvError::Empty) => {}
        }
        // Poll with reads only; the queue's cache line stays with the sender.
        for _ in 0..SPIN_READS {
            if !rx.is_empty() {
                break;
            }
            std::hint::spin_loop();
        }
        if rx.is_empty() {
            let idle = start.elapsed();
            if idle > SPIN {
                return rx.recv().ok();
            }
            if idle > SPIN_BUSY {
                std::thread::yield_now();
            }
        }
    }
}

/// Tell `n` workers to exit once the queue ahead of the message is done.
pub(crate) fn stop_workers(n: usize, queue: &RunQueue) {
    for _ in 0..n {
        let _ = queue.tx.send(STOP);
    }
}

fn json(value: serde_json::Value) -> Bytes {
    Bytes::from(value.to_string())
}

/// One turn of an agent on a worker: start it if needed, handle a batch.
fn turn(cx: &WorkerContext, agent: &WasmAgent) {
    if cx.abandon.load(Ordering::Relaxed) {
        return;
    }
    let mut slot = match agent.slot.try_lock() {
        Some(slot) => slot,
        None => {
            // A request is being served inline on another thread. Leave a
            // mark; whoever releases the slot requeues the agent (`handoff`).
            agent.server.missed.store(true, Ordering::SeqCst);
            std::sync::atomic::fence(Ordering::SeqCst);
            match agent.slot.try_lock() {
                Some(slot) => slot,
                None => return,
            }
        }
    };
    match slot.health {
        Health::Quarantined => {
            agent.server.retire();
            let n = agent.mailbox.clear() + std::mem::take(&mut slot.pending).len();
            cx.bus.done(n as u64);
        }
        Health::Backoff | Health::Loading => {}
        Health::Pending => start(cx, agent, &mut slot),
        Health::Running => {}
    }
    if slot.health == Health::Running {
        // Requesters are waiting: their requests go before queued events.
        serve_queued(cx, agent, &mut slot, BATCH);
    }
    if slot.health == Health::Running {
        if slot.pending.is_empty() {
            agent.mailbox.drain_into(&mut slot.pending, BATCH);
        }
        run_batch(cx, agent, &mut slot);
    }
    let more = match slot.health {
        Health::Running => {
            !slot.pending.is_empty() || !agent.mailbox.is_empty() || agent.server.has_queued()
        }
        // The backoff timer reschedules; quarantined agents have nothing to do.
        Health::Backoff | Health::Quarantined => false,
        // The module's loader reschedules.
        Health::Loading => false,
        Health::Pending => true,
    };
    drop(slot);
    handoff(agent);
    agent.scheduled.store(false, Ordering::Release);
    // Re-check after clearing the flag: an event pushed between the last
    // check and the store would otherwise wait for the next push.
    // A backoff timer or a module loader that found the flag still set
    // left the agent Pending for us to reschedule.
    // A busy agent (`more`) is rescheduled without taking its lock again.
    if more || {
        let health = agent.health();
        health == Health::Pending
            || (health == Health::Running
                && (!agent.mailbox.is_empty() || agent.server.has_queued()))
    } {
        agent.schedule();
    }
}

fn start(cx: &WorkerContext, agent: &WasmAgent, slot: &mut Slot) {
    let module = match agent.module.get() {
        None => {
            slot.health = Health::Loading;
            return;
        }
        Some(Err(e)) => return unloadable(cx, agent, slot, e),
        Some(Ok(module)) => module,
    };
    if let Some(error) = not_a_server(agent, module) {
        return unloadable(cx, agent, slot, &error);
    }
    agent.counters.starts.fetch_add(1, Ordering::Relaxed);
    let started = Instance::with_caps(
        &cx.engine,
        module,
        agent.publisher.clone(),
        agent.counters.output.clone(),
        agent.caps.clone(),
        &agent.config.dirs,
        &agent.config.limits,
        agent.budget,
    )
    .map_err(CallError::Fault)
    .and_then(|mut instance| {
        instance.state_mut().rpc = Some(agent.rpc.clone());
        let settings = agent.caps.settings.as_deref();
        instance
            .init(settings.unwrap_or(&agent.config.settings))
            .map(|()| instance)
    });
    match started {
        Ok(instance) => {
            slot.instance = Some(instance);
            slot.health = Health::Running;
            tracing::info!(agent = agent.name(), module = %module.path.display(), "agent started");
            cx.bus
                .publish_system(kinds::AGENT_STARTED, Bytes::from(agent.name().to_owned()));
        }
        Err(err) => {
            let reason = match &err {
                // Guest text: bounded here, once, for the log and the
                // `toka.*` payloads alike.
                CallError::Returned(msg) => {
                    format!("init returned an error: {}", bounded(msg, MAX_ERROR))
                }
                CallError::Fault(f) => {
                    format!("failed to start: {}", bounded(&f.to_string(), MAX_ERROR))
                }
            };
            fault(cx, agent, slot, None, &reason);
        }
    }
}

/// The agent's module failed to compile in the background: it never
/// starts (as if left out at start-up), and its events are discarded.
fn unloadable(cx: &WorkerContext, agent: &WasmAgent, slot: &mut Slot, error: &ModuleError) {
    slot.health = Health::Quarantined;
    agent.server.retire();
    agent.mailbox.close();
    let n = agent.mailbox.clear() + std::mem::take(&mut slot.pending).len();
    cx.bus.done(n as u64);
    cx.bus.publish_system(
        kinds::AGENT_QUARANTINED,
        json(serde_json::json!({
            "agent": agent.name(),
            "failures": 0,
            "reason": format!(
                "module failed to load: {}",
                bounded(&error.reason, MAX_ERROR)
            ),
        })),
    );
}

fn run_batch(cx: &WorkerContext, agent: &WasmAgent, slot: &mut Slot) {
    // Cache lines shared with the publishing threads are touched once per
    // batch, not once per event: the bus's in-flight count and the handled
    // count are updated at the end, and the finished events go back for
    // reuse together (see `recycle`).
    let mut batch = std::mem::take(&mut slot.pending);
    let instance = slot
        .instance
        .as_mut()
        .expect("running agents have an instance");
    let mut handled = 0u64;
    let mut fault = None;
    for (i, event) in batch.iter().enumerate() {
        if cx.abandon.load(Ordering::Relaxed) {
            // Shutdown's drain deadline passed: the rest of the batch waits
            // for nobody (it is counted as abandoned).
            fault = Some((i, None));
            break;
        }
        if let Some(next) = batch.get(i + 1) {
            prefetch(next);
        }
        match instance.handle(event) {
            Ok(()) => {}
            Err(CallError::Returned(msg)) => {
                agent.counters.errors.fetch_add(1, Ordering::Relaxed);
                let error = bounded(&msg, MAX_ERROR);
                tracing::warn!(agent = agent.name(), event = event.id, kind = %event.kind, error = %error, "handler returned an error");
            }
            Err(CallError::Fault(f)) => {
                fault = Some((i, Some(f)));
                break;
            }
        }
        handled += 1;
    }
    finish_batch(cx, agent, slot, handled);
    match fault {
        None => {
            crate::recycle::recycle(batch.drain(..));
            // Keep the queue's allocation for the next batch.
            slot.pending = batch;
        }
        Some((at, None)) => {
            slot.pending = batch.split_off(at);
            crate::recycle::recycle(batch.drain(..));
        }
        Some((at, Some(f))) => {
            // The events after the faulting one wait for the restart.
            let mut rest = batch.split_off(at);
            let event = rest.pop_front().expect("the faulting event");
            slot.pending = rest;
            cx.bus.done(1);
            fault_on_event(cx, agent, slot, &event, &f);
        }
    }
}

/// Start loading `event` into this core's cache while the current event's
/// call runs: the publisher wrote it on another core moments ago, and the
/// call's own work hides the transfer (about 30 ns per event here).
#[cfg(target_arch = "x86_64")]
#[expect(
    unsafe_code,
    reason = "a prefetch is a cache hint: it reads nothing and cannot fault"
)]
fn prefetch(event: &Event) {
    use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
    // The event and, just before it, its `Arc`'s counts (read when the
    // allocation is handed back): every cache line from the first to the last.
    let first = std::ptr::from_ref(event).cast::<i8>().wrapping_sub(16);
    let last = first.wrapping_add(16 + size_of::<Event>() - 1);
    // SAFETY: `_mm_prefetch` never dereferences its argument (any address
    // is allowed), and SSE, which it needs, is part of the x86_64 baseline.
    unsafe {
        _mm_prefetch::<_MM_HINT_T0>(first);
        _mm_prefetch::<_MM_HINT_T0>(first.wrapping_add(64));
        _mm_prefetch::<_MM_HINT_T0>(last);
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn prefetch(_event: &Event) {}

fn finish_batch(cx: &WorkerContext, agent: &WasmAgent, slot: &mut Slot, handled: u64) {
    if handled > 0 {
        agent.counters.handled.fetch_add(handled, Ordering::Release);
        cx.bus.done(handled);
        slot.supervisor.success();
    }
}

fn fault_on_event(
    cx: &WorkerContext,
    agent: &WasmAgent,
    slot: &mut Slot,
    event: &Event,
    f: &Fault,
) {
    cx.bus.publish_system(
        kinds::DEAD_LETTER,
        json(serde_json::json!({
            "agent": agent.name(),
            "event_id": event.id,
            "kind": event.kind.as_str(),
            "reason": f.kind.as_str(),
            "message": bounded(&f.message, MAX_ERROR),
        })),
    );
    fault(
        cx,
        agent,
        slot,
        Some(event),
        &bounded(&f.to_string(), MAX_ERROR),
    );
}

/// A request's `serve` faulted: dead-letter the request (its kind and
/// requester; the payload is the requester's), then stop the instance.
pub(crate) fn fault_on_request(
    cx: &WorkerContext,
    agent: &WasmAgent,
    slot: &mut Slot,
    request: &crate::host::instance::Incoming<'_>,
    f: &Fault,
) {
    cx.bus.publish_system(
        kinds::DEAD_LETTER,
        json(serde_json::json!({
            "agent": agent.name(),
            "request": { "kind": bounded(request.kind, MAX_ERROR), "source": request.source },
            "reason": f.kind.as_str(),
            "message": bounded(&f.message, MAX_ERROR),
        })),
    );
    fault(cx, agent, slot, None, &bounded(&f.to_string(), MAX_ERROR));
}

/// An agent granted `serve` whose module is not a server (world `service`)
/// cannot start: its module is the operator's mistake, named as such.
pub(crate) fn not_a_server(agent: &WasmAgent, module: &Module) -> Option<ModuleError> {
    server_module_error(&agent.config, module)
}

/// [`not_a_server`] for a configured agent and its loaded module.
pub(crate) fn server_module_error(config: &AgentConfig, module: &Module) -> Option<ModuleError> {
    if module.pre.is_none() {
        return Some(ModuleError {
            path: module.path.clone(),
            reason: format!(
                "agent `{}`: the component exports only `wasi:http/incoming-handler`; route it with `[[http.routes]]` (it cannot handle events)",
                config.name
            ),
        });
    }
    (!config.serve.is_empty() && module.responder.is_none()).then(|| ModuleError {
        path: module.path.clone(),
        reason: format!(
            "agent `{}` is granted `serve` but the component does not export `toka:runtime/responder` (build it for world `service`)",
            config.name
        ),
    })
}

/// Stop `agent`'s instance. `reason` goes into the log (quoted, through
/// `Debug`) and the `toka.*` payloads as given: callers bound any guest text
/// in it (`text::bounded`).
fn fault(
    cx: &WorkerContext,
    agent: &WasmAgent,
    slot: &mut Slot,
    event: Option<&Event>,
    reason: &str,
) {
    agent.counters.faults.fetch_add(1, Ordering::Relaxed);
    slot.instance = None;
    let verdict = slot.supervisor.fault(Instant::now());
    tracing::warn!(
        agent = agent.name(),
        event = event.map(|e| e.id),
        reason,
        "agent instance stopped"
    );
    cx.bus.publish_system(
        kinds::AGENT_FAILED,
        json(serde_json::json!({ "agent": agent.name(), "reason": reason })),
    );
    match verdict {
        Verdict::Restart(delay) => {
            slot.health = Health::Backoff;
            tracing::info!(agent = agent.name(), delay = ?delay, "restarting after backoff");
            let agents = cx.agents.clone();
            let index = agent.index;
            cx.timers.spawn(async move {
                tokio::time::sleep(delay).await;
                let agent = &agents[index];
                {
                    let mut slot = agent.slot.lock();
                    if slot.health == Health::Backoff {
                        slot.health = Health::Pending;
                    }
                }
                handoff(agent);
                agent.schedule();
            });
        }
        Verdict::Quarantine { failures } => {
            slot.health = Health::Quarantined;
            agent.server.retire();
            agent.mailbox.close();
            let n = agent.mailbox.clear() + std::mem::take(&mut slot.pending).len();
            cx.bus.done(n as u64);
            tracing::error!(
                agent = agent.name(),
                failures,
                reason,
                "agent quarantined after repeated faults; its events are discarded"
            );
            cx.bus.publish_system(
                kinds::AGENT_QUARANTINED,
                json(serde_json::json!({ "agent": agent.name(), "failures": failures, "reason": reason })),
            );
        }
    }
}
