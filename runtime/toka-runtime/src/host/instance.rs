//! One live agent instance: its `Store`, its bindings, and calls into
//! `init`/`handle` under the agent's deadline and fuel budget.
//!
//! A call ends in one of three ways: it returns, the guest returns an error
//! value (the instance is fine), or it faults (trap, deadline, fuel, memory
//! limit, stack overflow). After a fault wasmtime refuses further calls into
//! the instance, so the caller drops it and instantiates a fresh one from the
//! module's `InstancePre`.

use std::sync::Arc;
use std::time::Duration;

use toka_core::Event;
use toka_core::config::{DirGrant, Limits};
use wasmtime::{Engine, Store, Trap};

use super::bindings::{Agent, types};
use super::caps::AgentCaps;
use super::engine::deadline_ticks;
use super::limits::store_limits;
use super::module::Module;
use super::state::{HostState, LogBudget};
use super::stdio::OutputCounters;
use super::wait::WaitDeadline;
use crate::publisher::AgentPublisher;

/// What kind of fault stopped an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// The call ran past its `timeout_ms` deadline.
    Deadline,
    /// The call used up its `fuel`.
    Fuel,
    /// The instance tried to grow memory (or a table) past its limit.
    MemoryLimit,
    /// The guest overflowed its wasm stack.
    StackOverflow,
    /// Any other trap: `unreachable`, a panic, out-of-bounds access, ...
    Trap,
    /// Instantiation failed before any guest code ran.
    Instantiate,
    /// Host code serving the guest panicked (a bug in a host function or a
    /// capability): the instance is dropped like any faulted one, and the
    /// panic stays contained to this agent.
    HostPanic,
}

impl FaultKind {
    /// Short stable name used in logs and dead-letter payloads.
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Deadline => "deadline",
            FaultKind::Fuel => "fuel",
            FaultKind::MemoryLimit => "memory-limit",
            FaultKind::StackOverflow => "stack-overflow",
            FaultKind::Trap => "trap",
            FaultKind::Instantiate => "instantiate",
            FaultKind::HostPanic => "host-panic",
        }
    }
}

/// A fault that killed an instance.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}: {message}", kind.as_str())]
pub struct Fault {
    /// The class of fault.
    pub kind: FaultKind,
    /// wasmtime's description.
    pub message: String,
}

impl Fault {
    fn classify(err: &wasmtime::Error) -> Fault {
        if let Some(wait) = err.chain().find_map(|e| e.downcast_ref::<WaitDeadline>()) {
            return Fault {
                kind: FaultKind::Deadline,
                message: wait.to_string(),
            };
        }
        let kind = match err.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => FaultKind::Deadline,
            Some(Trap::OutOfFuel) => FaultKind::Fuel,
            Some(Trap::StackOverflow) => FaultKind::StackOverflow,
            _ => {
                let text = format!("{err:#}");
                if text.contains("forcing trap when growing") {
                    FaultKind::MemoryLimit
                } else {
                    FaultKind::Trap
                }
            }
        };
        // The root cause is the reason ("wasm trap: interrupt", "forcing trap
        // when growing memory ..."); the outer layers are a wasm backtrace.
        let message = err.root_cause().to_string();
        let message = message.lines().next().unwrap_or_default().to_string();
        Fault { kind, message }
    }
}

/// Run `f`, turning a panic that unwinds out of host code into a fault.
///
/// wasmtime carries a host function's panic across the guest's frames and
/// resumes it in the caller; without this, one buggy capability would kill a
/// worker thread and strand every agent scheduled on it.
fn contain<T>(f: impl FnOnce() -> wasmtime::Result<T>) -> Result<T, Fault> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(Fault::classify(&e)),
        Err(panic) => {
            let message = crate::native::panic_message(&*panic);
            tracing::error!(
                message,
                "host code panicked while serving a guest; stopping that instance"
            );
            Err(Fault {
                kind: FaultKind::HostPanic,
                message,
            })
        }
    }
}

/// Why a call did not succeed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// The guest returned an error value; the instance is still usable.
    #[error("returned an error: {0}")]
    Returned(String),
    /// The instance faulted and must be dropped.
    #[error("{0}")]
    Fault(Fault),
}

/// Per-call budget.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Epoch ticks until the call is interrupted.
    pub ticks: u64,
    /// The same deadline as a duration, for host calls that wait.
    pub timeout: Duration,
    /// Fuel per call, when the engine meters fuel.
    pub fuel: Option<u64>,
}

impl Budget {
    /// The budget `limits` give one call.
    pub fn from_limits(limits: &Limits, fuel_metered: bool) -> Self {
        let timeout = Duration::from_millis(limits.timeout_ms);
        Budget {
            ticks: deadline_ticks(timeout),
            timeout,
            fuel: fuel_metered.then(|| limits.fuel.unwrap_or(u64::MAX)),
        }
    }
}

/// One request as a server's `responder.serve` receives it.
#[derive(Debug, Clone, Copy, wasmtime::component::ComponentType, wasmtime::component::Lower)]
#[component(record)]
pub struct Incoming<'a> {
    /// The kind asked for.
    pub kind: &'a str,
    /// The request's payload.
    pub payload: &'a [u8],
    /// The requesting agent.
    pub source: &'a str,
    /// Milliseconds the requester still waits.
    #[component(name = "deadline-ms")]
    pub deadline_ms: u32,
}

/// What `serve` returns: the reply, or the server's error message.
type Served = (Result<Vec<u8>, String>,);

/// A live instance of an agent module.
pub struct Instance {
    store: Store<HostState>,
    bindings: Agent,
    /// The `responder.serve` export, for components of world `service`.
    serve: Option<wasmtime::component::Func>,
    budget: Budget,
}

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instance")
            .field("state", self.store.data())
            .finish_non_exhaustive()
    }
}

impl Instance {
    /// Instantiate `module` for the agent behind `publisher`, with no
    /// capabilities beyond the bus and the log.
    pub fn new(
        engine: &Engine,
        module: &Module,
        publisher: Arc<AgentPublisher>,
        output: Arc<OutputCounters>,
        limits: &Limits,
        budget: Budget,
    ) -> Result<Self, Fault> {
        Self::with_caps(
            engine,
            module,
            publisher,
            output,
            Arc::default(),
            &[],
            limits,
            budget,
        )
    }

    /// [`Instance::new`] holding the capabilities `caps` and the preopened
    /// directories `dirs` (the agent's `dirs` grant).
    #[expect(clippy::too_many_arguments, reason = "one per thing an instance holds")]
    pub fn with_caps(
        engine: &Engine,
        module: &Module,
        publisher: Arc<AgentPublisher>,
        output: Arc<OutputCounters>,
        caps: Arc<AgentCaps>,
        dirs: &[DirGrant],
        limits: &Limits,
        budget: Budget,
    ) -> Result<Self, Fault> {
        let state = HostState::new(
            publisher,
            store_limits(limits),
            limits.stdout_bytes,
            LogBudget::from_limits(limits),
            output,
        )
        .with_caps(caps)
        .with_dirs(dirs)
        .map_err(|message| Fault {
            kind: FaultKind::Instantiate,
            message,
        })?;
        let mut store = Store::new(engine, state);
        store.limiter(|s| &mut s.limits);
        store.epoch_deadline_trap();
        // Start functions run during instantiation: budget them too.
        Self::arm(&mut store, budget);
        let (bindings, serve) = contain(|| {
            let pre = module.pre.as_ref().ok_or_else(|| {
                wasmtime::format_err!(
                    "the component exports only `wasi:http/incoming-handler`: it serves `[[http.routes]]` and cannot handle events"
                )
            })?;
            let instance = pre.instance_pre().instantiate(&mut store)?;
            let bindings = Agent::new(&mut store, &instance)?;
            let serve = module
                .responder
                .and_then(|index| instance.get_func(&mut store, index));
            if let Some(serve) = serve {
                // Checked once here, so a mistyped export fails the start,
                // not the first request.
                serve.typed::<(Incoming<'_>,), Served>(&store)?;
            }
            Ok((bindings, serve))
        })
        .map_err(|mut f| {
            if f.kind == FaultKind::Trap {
                f.kind = FaultKind::Instantiate;
            }
            f
        })?;
        let instance = Instance {
            bindings,
            serve,
            store,
            budget,
        };
        instance.store.data().flush_output();
        Ok(instance)
    }

    fn arm(store: &mut Store<HostState>, budget: Budget) {
        store.set_epoch_deadline(budget.ticks);
        store.data_mut().wait.arm(budget.timeout);
        if let Some(fuel) = budget.fuel {
            store
                .set_fuel(fuel)
                .expect("fuel is enabled on the engine when a budget has fuel");
        }
    }

    fn finish<T>(&mut self, result: Result<Result<T, String>, Fault>) -> Result<T, CallError> {
        match result {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(msg)) => Err(CallError::Returned(msg)),
            Err(fault) => {
                self.store.data().flush_output();
                Err(CallError::Fault(fault))
            }
        }
    }

    /// Call the guest's `init` with its configuration.
    pub fn init(&mut self, config: &[(String, String)]) -> Result<(), CallError> {
        Self::arm(&mut self.store, self.budget);
        let pairs: Vec<(&str, &str)> = config
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let (bindings, store) = (&self.bindings, &mut self.store);
        let result = contain(|| bindings.toka_runtime_handler().call_init(store, &pairs));
        self.finish(result)
    }

    /// Whether the component exports `responder.serve` (world `service`).
    pub fn serves(&self) -> bool {
        self.serve.is_some()
    }

    /// The instance's store data (the host side of its calls).
    pub(crate) fn state_mut(&mut self) -> &mut HostState {
        self.store.data_mut()
    }

    /// Call the guest's `responder.serve` with `request`, under the
    /// instance's own budget. A component without the export faults (the
    /// runtime only routes requests to components that have it).
    pub fn serve(&mut self, request: Incoming<'_>) -> Result<Vec<u8>, CallError> {
        Self::arm(&mut self.store, self.budget);
        let Some(serve) = self.serve else {
            return Err(CallError::Fault(Fault {
                kind: FaultKind::Trap,
                message: "the component does not export toka:runtime/responder".into(),
            }));
        };
        let store = &mut self.store;
        let result = contain(|| {
            let typed = serve.typed::<(Incoming<'_>,), Served>(&*store)?;
            let (reply,) = typed.call(&mut *store, (request,))?;
            Ok(reply)
        });
        self.finish(result)
    }

    /// Call the guest's `handle` with `event`.
    pub fn handle(&mut self, event: &Event) -> Result<(), CallError> {
        Self::arm(&mut self.store, self.budget);
        let param = types::Event {
            id: event.id,
            kind: event.kind.as_str(),
            source: &event.source,
            timestamp_ms: event.timestamp_ms,
            payload: &event.payload,
        };
        let (bindings, store) = (&self.bindings, &mut self.store);
        let result = contain(|| bindings.toka_runtime_handler().call_handle(store, param));
        self.finish(result)
    }
}

/// Serve one inbound HTTP request with a fresh instance of `proxy`: its
/// store holds `state` (the routed agent's capabilities, publisher and
/// limits) under `budget`, the same deadline, fuel and memory bounds as an
/// event. Runs on a blocking thread; returns when `handle` returns. The
/// guest answers through `call.respond`, possibly before it returns (a
/// streamed body); a fault before it answers drops the sender, which the
/// listener turns into 500.
#[cfg(feature = "http")]
pub fn serve_http(
    engine: &Engine,
    proxy: &super::module::Proxy,
    state: HostState,
    budget: Budget,
    call: toka_http::host::server::Call,
) -> Result<(), Fault> {
    use toka_http::host::wasmtime_wasi_http::p2::bindings::http::types::Scheme;
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.limits);
    store.epoch_deadline_trap();
    Instance::arm(&mut store, budget);
    let result = contain(|| {
        let mut view = toka_http::host::http_view(
            toka_capability::Has::<toka_http::host::Http>::view(store.data_mut()),
        );
        let request = view.new_incoming_request(Scheme::Http, call.request)?;
        let out = view.new_response_outparam(call.respond)?;
        let proxy = proxy.instantiate(&mut store)?;
        proxy
            .wasi_http_incoming_handler()
            .call_handle(&mut store, request, out)
    })
    .map_err(|mut f| {
        if f.kind == FaultKind::Trap && f.message.contains("instantiat") {
            f.kind = FaultKind::Instantiate;
        }
        f
    });
    store.data().flush_output();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_in_host_code_becomes_a_fault() {
        let fault = contain(|| -> wasmtime::Result<()> { panic!("capability bug") })
            .expect_err("the panic is caught");
        assert_eq!(fault.kind, FaultKind::HostPanic);
        assert_eq!(fault.message, "capability bug");
        assert_eq!(contain(|| Ok(7)).unwrap(), 7, "no panic, no fault");
    }
}
