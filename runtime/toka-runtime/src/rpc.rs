//! Request/reply between agents (`toka:runtime/request`, served by the
//! `responder` export of world `service`).
//!
//! A request goes to exactly one running server whose `serve` grant covers
//! its kind; several servers of a kind take turns (round robin). Two paths:
//!
//! - **Inline.** When the chosen server is idle (its slot lock is free, its
//!   instance live) and its own `timeout_ms` fits in the request's timeout,
//!   the requesting thread runs the server's `serve` itself: a round trip is
//!   two guest calls and no thread hand-off. The server's own deadline
//!   bounds the call, so a slow server faults on its own budget; a request
//!   whose timeout is shorter than the server's budget never runs inline,
//!   so no requester can make a server fault by asking for a short timeout.
//! - **Queued.** Otherwise the request waits in the server's queue (at most
//!   `[requests] queue`; past it `busy`), the server serves it between its
//!   events on its own turn, and the requester waits for the reply through
//!   [`wait::bounded`](toka_capability::wait::bounded): at most the
//!   request's timeout, with a stand-in worker so the pool keeps its size.
//!
//! The timeout is the smallest of the `timeout-ms` asked for, `[requests]
//! max_timeout` and what is left of the caller's own call. Loops never
//! deadlock: every agent waiting on a request records whom it waits on, and
//! a request that would wait on an agent whose chain of waits leads back to
//! the caller (itself, A -> B -> A, or longer) is answered `loop` at once,
//! as is a chain deeper than `[requests] max_depth`. An instance is never
//! re-entered: a server only runs `serve` while it holds its own slot.
//!
//! The slot lock is taken with `try_lock` by everyone but its brief holders;
//! a turn that finds it held leaves a `missed` mark, and whoever releases
//! the slot hands the agent back to the run queue ([`handoff`]).

use std::cell::Cell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering, fence};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use toka_capability::wait::{self, MAX_WAITING, WaitState};
use toka_core::PatternSet;
use toka_core::config::RequestsConfig;
use toka_core::text::{MAX_ERROR, MAX_KIND, bounded};
use toka_core::topic::{is_system_kind, validate_kind};

use crate::host::CallError;
use crate::host::bindings::request::RequestError;
use crate::host::instance::Incoming;
use crate::worker::{Health, Slot, WasmAgent, WorkerContext};

/// `waiting_on` of an agent that waits on nobody.
pub(crate) const NONE: usize = usize::MAX;
/// The host call, as waits and faults name it.
const CALL: &str = "toka:runtime/request.request";
/// Serves run inline on one thread at most this deep: each level may use
/// the engine's whole wasm stack (512 KiB) of the thread's native stack.
const MAX_INLINE: u32 = 4;

/// Request round-trip times, recorded only while a benchmark asks for them
/// (one relaxed load per request otherwise).
pub mod latency {
    use std::sync::atomic::{AtomicBool, Ordering};

    use parking_lot::Mutex;

    static ON: AtomicBool = AtomicBool::new(false);
    static SAMPLES: Mutex<Vec<u64>> = Mutex::new(Vec::new());

    /// Start (or stop) recording the nanoseconds each `request` takes.
    pub fn record(on: bool) {
        ON.store(on, Ordering::Relaxed);
    }

    /// The samples recorded so far, emptied.
    pub fn take() -> Vec<u64> {
        std::mem::take(&mut SAMPLES.lock())
    }

    pub(crate) fn on() -> bool {
        ON.load(Ordering::Relaxed)
    }

    pub(crate) fn add(ns: u64) {
        SAMPLES.lock().push(ns);
    }
}

thread_local! {
    /// Inline serves in progress on this thread.
    static INLINE: Cell<u32> = const { Cell::new(0) };
}

/// One request waiting in a server's queue.
pub(crate) struct Pending {
    kind: Box<str>,
    payload: Vec<u8>,
    source: Arc<str>,
    /// The chain depth the server's own requests continue from.
    depth: u32,
    /// When the requester stops waiting.
    deadline: Instant,
    reply: tokio::sync::oneshot::Sender<Result<Vec<u8>, RequestError>>,
}

/// A server's request queue and the marks that route around it.
#[derive(Default)]
pub(crate) struct ServerState {
    pub(crate) queue: parking_lot::Mutex<VecDeque<Pending>>,
    /// The agent this one waits on in a request, or [`NONE`].
    pub(crate) waiting_on: AtomicUsize,
    /// `queue`'s length, kept beside it for [`ServerState::has_queued`].
    queued: AtomicUsize,
    /// A turn found the slot held (see [`handoff`]).
    pub(crate) missed: AtomicBool,
    /// False once the agent is quarantined or its module failed: it is no
    /// longer a responder.
    pub(crate) gone: AtomicBool,
}

impl ServerState {
    pub(crate) fn new() -> Self {
        ServerState {
            waiting_on: AtomicUsize::new(NONE),
            ..Default::default()
        }
    }

    /// Whether requests wait in the queue.
    ///
    /// One atomic load, not the lock: every turn of every agent asks, and
    /// almost none has requests waiting. A push stores the length before
    /// it schedules the agent, so the turn it wakes sees it.
    pub(crate) fn has_queued(&self) -> bool {
        self.queued.load(Ordering::Acquire) > 0
    }

    /// The next waiting request, if any (the lock only when there is one).
    fn pop(&self) -> Option<Pending> {
        if !self.has_queued() {
            return None;
        }
        let mut queue = self.queue.lock();
        let next = queue.pop_front();
        self.queued.store(queue.len(), Ordering::Release);
        next
    }

    /// The agent stops serving: it leaves the routing, and the requests
    /// waiting for it are answered `no-responders` (their senders dropped).
    pub(crate) fn retire(&self) {
        self.gone.store(true, Ordering::Release);
        let mut queue = self.queue.lock();
        queue.clear();
        self.queued.store(0, Ordering::Release);
    }
}

/// Where requests go: the serving agents and their grants.
pub(crate) struct Router {
    cfg: RequestsConfig,
    /// `(agent index, serve grant)`, set once the agents are built.
    servers: OnceLock<Vec<(usize, PatternSet)>>,
    /// The workers' context, set when the runtime starts running.
    cx: OnceLock<Weak<WorkerContext>>,
    next: AtomicUsize,
}

impl Router {
    pub(crate) fn new(cfg: RequestsConfig) -> Self {
        Router {
            cfg,
            servers: OnceLock::new(),
            cx: OnceLock::new(),
            next: AtomicUsize::new(0),
        }
    }

    /// The serving agents, by index (once, after the agents are built).
    pub(crate) fn set_servers(&self, servers: Vec<(usize, PatternSet)>) {
        let _ = self.servers.set(servers);
    }

    /// Requests can be served from now on.
    pub(crate) fn start(&self, cx: &Arc<WorkerContext>) {
        let _ = self.cx.set(Arc::downgrade(cx));
    }
}

/// One agent's side of request/reply: its grant and the router.
pub struct AgentRpc {
    /// The agent's worker index; `None` for a routed agent (served per
    /// HTTP request, not a worker: it serves nothing, so no chain of
    /// requests can wait on it, and it needs no loop mark).
    index: Option<usize>,
    name: Arc<str>,
    grant: PatternSet,
    max_payload: u64,
    router: Arc<Router>,
}

impl std::fmt::Debug for AgentRpc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentRpc")
            .field("agent", &self.name)
            .field("grant", &self.grant)
            .finish_non_exhaustive()
    }
}

/// Clears the caller's `waiting_on` when its request ends.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.store(NONE, Ordering::SeqCst);
    }
}

impl AgentRpc {
    pub(crate) fn new(
        index: Option<usize>,
        name: Arc<str>,
        grant: PatternSet,
        max_payload: u64,
        router: Arc<Router>,
    ) -> Self {
        AgentRpc {
            index,
            name,
            grant,
            max_payload,
            router,
        }
    }

    /// The guest's `request`, from a call at chain depth `depth` (0 in
    /// `init`/`handle`, n while serving a request of depth n).
    pub(crate) fn request(
        &self,
        wait: &WaitState,
        depth: u32,
        kind: &str,
        payload: Vec<u8>,
        timeout_ms: u32,
    ) -> Result<Vec<u8>, RequestError> {
        let started = latency::on().then(Instant::now);
        let reply = self.route(wait, depth, kind, payload, timeout_ms);
        if let Some(started) = started {
            latency::add(started.elapsed().as_nanos() as u64);
        }
        reply
    }

    /// [`AgentRpc::request`] without the latency sample.
    fn route(
        &self,
        wait: &WaitState,
        depth: u32,
        kind: &str,
        payload: Vec<u8>,
        timeout_ms: u32,
    ) -> Result<Vec<u8>, RequestError> {
        if let Err(e) = validate_kind(kind) {
            let shown = bounded(kind, MAX_KIND);
            return Err(RequestError::Invalid(format!("kind `{shown}` {e}")));
        }
        if is_system_kind(kind) || !self.grant.matches(kind) {
            tracing::debug!(agent = %self.name, kind = %bounded(kind, MAX_KIND), "request refused: not granted");
            return Err(RequestError::AccessDenied);
        }
        if payload.len() as u64 > self.max_payload {
            return Err(RequestError::TooLarge(self.max_payload));
        }
        let Some(cx) = self.router.cx.get().and_then(Weak::upgrade) else {
            return Err(RequestError::Unavailable);
        };
        if !cx.bus.is_open() {
            return Err(RequestError::Unavailable);
        }
        let cfg = &self.router.cfg;
        if depth >= cfg.max_depth {
            return Err(RequestError::Loop);
        }
        let timeout = Duration::from_millis(u64::from(timeout_ms))
            .min(cfg.max_timeout)
            .min(wait.remaining());
        if timeout.is_zero() {
            return Err(RequestError::Timeout);
        }
        let servers = self.router.servers.get().map_or(&[][..], Vec::as_slice);
        let mut candidates = servers
            .iter()
            .filter(|(i, grant)| {
                grant.matches(kind) && !cx.agents[*i].server.gone.load(Ordering::Acquire)
            })
            .map(|(i, _)| *i)
            .peekable();
        if candidates.peek().is_none() {
            return Err(RequestError::NoResponders);
        }
        // Never oneself: with no other server, a self-request is a loop.
        let candidates: Vec<usize> = candidates.filter(|i| Some(*i) != self.index).collect();
        if candidates.is_empty() {
            return Err(RequestError::Loop);
        }
        let _waiting = self.index.map(|i| Waiting(&cx.agents[i].server.waiting_on));
        let start = self.router.next.fetch_add(1, Ordering::Relaxed);
        let n = candidates.len();
        let request = Incoming {
            kind,
            payload: &payload,
            source: &self.name,
            deadline_ms: timeout.as_millis().min(u128::from(u32::MAX)) as u32,
        };
        for k in 0..n {
            let server = candidates[(start + k) % n];
            if self.waits_on_me(&cx, server) {
                return Err(RequestError::Loop);
            }
            if let Some(reply) = try_inline(&cx, server, request, depth + 1, timeout) {
                return reply;
            }
        }
        // Every server is busy: queue on the one with the fewest waiting.
        let server = (0..n)
            .map(|k| candidates[(start + k) % n])
            .min_by_key(|i| cx.agents[*i].server.queued.load(Ordering::Acquire))
            .expect("at least one candidate");
        if self.waits_on_me(&cx, server) {
            return Err(RequestError::Loop);
        }
        if wait::waiting() >= MAX_WAITING {
            return Err(RequestError::Busy);
        }
        let agent = &cx.agents[server];
        let (tx, rx) = tokio::sync::oneshot::channel();
        {
            let mut queue = agent.server.queue.lock();
            if queue.len() >= cfg.queue {
                return Err(RequestError::Busy);
            }
            queue.push_back(Pending {
                kind: kind.into(),
                payload,
                source: self.name.clone(),
                depth: depth + 1,
                deadline: Instant::now() + timeout,
                reply: tx,
            });
            agent.server.queued.store(queue.len(), Ordering::Release);
        }
        agent.schedule();
        match wait::bounded(wait, CALL, async {
            tokio::time::timeout(timeout, rx).await
        }) {
            Ok(Ok(Ok(reply))) => reply,
            // The server left (quarantined) before it served the request.
            Ok(Ok(Err(_))) => Err(RequestError::NoResponders),
            Ok(Err(_)) | Err(_) => Err(RequestError::Timeout),
        }
    }

    /// Mark that this agent waits on `server`, then whether `server`'s
    /// chain of waits leads back here (or is longer than any real chain).
    ///
    /// Both sides of a simultaneous A -> B, B -> A store their mark before
    /// they read the other's (sequentially consistent), so at least one of
    /// them sees the cycle.
    fn waits_on_me(&self, cx: &WorkerContext, server: usize) -> bool {
        let Some(index) = self.index else {
            // A routed agent is never a server: nothing waits on it.
            return false;
        };
        let me = &cx.agents[index].server;
        me.waiting_on.store(server, Ordering::SeqCst);
        let mut at = server;
        for _ in 0..=self.router.cfg.max_depth as usize + 1 {
            if at == index {
                return true;
            }
            match cx.agents[at].server.waiting_on.load(Ordering::SeqCst) {
                NONE => return false,
                next => at = next,
            }
        }
        true
    }
}

/// Serve `request` on the requesting thread if `server` is idle and its
/// budget fits in `timeout`; `None` to queue it instead.
fn try_inline(
    cx: &WorkerContext,
    server: usize,
    request: Incoming<'_>,
    depth: u32,
    timeout: Duration,
) -> Option<Result<Vec<u8>, RequestError>> {
    if INLINE.get() >= MAX_INLINE {
        return None;
    }
    let agent = &cx.agents[server];
    let mut slot = agent.slot.try_lock()?;
    let fits = slot.health == Health::Running
        && slot.instance.as_ref().is_some_and(|i| i.serves())
        && agent.budget.timeout <= timeout;
    let reply = fits.then(|| {
        INLINE.set(INLINE.get() + 1);
        let reply = serve_one(cx, agent, &mut slot, request, depth);
        INLINE.set(INLINE.get() - 1);
        reply
    });
    drop(slot);
    handoff(agent);
    reply
}

/// After releasing `agent`'s slot: if a turn found it held meanwhile, put
/// the agent back on the run queue (the turn left its `scheduled` flag set).
pub(crate) fn handoff(agent: &WasmAgent) {
    fence(Ordering::SeqCst);
    if agent.server.missed.swap(false, Ordering::SeqCst) {
        agent.requeue();
    }
}

/// Serve the requests waiting in `agent`'s queue (a batch), between events.
pub(crate) fn serve_queued(cx: &WorkerContext, agent: &WasmAgent, slot: &mut Slot, batch: usize) {
    for _ in 0..batch {
        if slot.health != Health::Running {
            return;
        }
        let Some(pending) = agent.server.pop() else {
            return;
        };
        let left = pending.deadline.saturating_duration_since(Instant::now());
        if pending.reply.is_closed() || left.is_zero() {
            // The requester stopped waiting: nobody would read the reply.
            continue;
        }
        let request = Incoming {
            kind: &pending.kind,
            payload: &pending.payload,
            source: &pending.source,
            deadline_ms: left.as_millis().min(u128::from(u32::MAX)) as u32,
        };
        let reply = serve_one(cx, agent, slot, request, pending.depth);
        let _ = pending.reply.send(reply);
    }
}

/// Call `serve` on `agent`'s live instance; a fault is handled as for an
/// event (dead letter, supervisor) and answered `remote`.
fn serve_one(
    cx: &WorkerContext,
    agent: &WasmAgent,
    slot: &mut Slot,
    request: Incoming<'_>,
    depth: u32,
) -> Result<Vec<u8>, RequestError> {
    let instance = slot
        .instance
        .as_mut()
        .expect("requests are served by running agents");
    instance.state_mut().depth = depth;
    let result = instance.serve(request);
    if let Some(instance) = slot.instance.as_mut() {
        instance.state_mut().depth = 0;
    }
    match result {
        Ok(reply) => {
            agent.counters.served.fetch_add(1, Ordering::Relaxed);
            let limit = agent.config.limits.max_payload_bytes;
            if reply.len() as u64 > limit {
                Err(RequestError::TooLarge(limit))
            } else {
                Ok(reply)
            }
        }
        Err(CallError::Returned(message)) => {
            agent.counters.served.fetch_add(1, Ordering::Relaxed);
            Err(RequestError::Remote(
                bounded(&message, MAX_ERROR).into_owned(),
            ))
        }
        Err(CallError::Fault(f)) => {
            let answer = format!(
                "the server `{}` faulted while serving ({}); it is restarted",
                agent.name(),
                f.kind.as_str()
            );
            crate::worker::fault_on_request(cx, agent, slot, &request, &f);
            Err(RequestError::Remote(answer))
        }
    }
}
