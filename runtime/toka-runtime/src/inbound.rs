//! Serving `[[http.routes]]` (feature `http`): each route's agent runs in a
//! fresh instance per request, from its module's `wasi:http/incoming-handler`
//! export, with the agent's own capabilities, publish grant and limits.
//!
//! A routed agent is served per request only: it has no mailbox, handles no
//! events and has no `init` (a `wasi:http/proxy` component has neither), so
//! `subscribe`, `every` and `serve` are refused on it. It may publish and
//! request within its grants, so a webhook can become events. A fresh
//! instance per request is what `wasmtime serve` does for p2 components
//! (`max_instance_reuse_count = 1`): no state leaks between requests, and a
//! faulting request harms only itself. A fault is dead-lettered like an
//! event's (with the request's method and path instead of an event) and
//! answered 500.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use toka_core::config::{DirGrant, Limits};
use toka_core::event::kinds;
use toka_core::text::{MAX_ERROR, bounded};
use toka_http::host::server::{Call, Handler, Refused};
use wasmtime::Engine;

use crate::bus::Bus;
use crate::host::caps::AgentCaps;
use crate::host::instance::{self, Budget};
use crate::host::limits::store_limits;
use crate::host::state::{HostState, LogBudget};
use crate::publisher::AgentPublisher;
use crate::rpc::AgentRpc;
use crate::worker::{AgentCounters, ModuleCell};

/// One route's agent.
#[derive(Clone)]
pub(crate) struct Target {
    pub(crate) name: Arc<str>,
    pub(crate) module: Arc<ModuleCell>,
    pub(crate) caps: Arc<AgentCaps>,
    /// Its `dirs` grant, preopened for each request's instance.
    pub(crate) dirs: Arc<[DirGrant]>,
    pub(crate) publisher: Arc<AgentPublisher>,
    pub(crate) limits: Limits,
    pub(crate) budget: Budget,
    pub(crate) counters: Arc<AgentCounters>,
    /// Its `request` grant (a routed agent may ask the servers).
    pub(crate) rpc: Arc<AgentRpc>,
}

/// The [`Handler`] the listener calls: route index → [`Target`].
pub(crate) struct Routes {
    pub(crate) engine: Engine,
    pub(crate) bus: Bus,
    /// Per route; `None` when the agent's module failed to load.
    pub(crate) targets: Vec<Option<Target>>,
}

impl Handler for Routes {
    fn handle(&self, route: usize, call: Call) -> Result<(), Refused> {
        let Some(t) = &self.targets[route] else {
            return Err(Refused::Unavailable("its module failed to load".into()));
        };
        let module = match t.module.get() {
            None => return Err(Refused::Unavailable("its module is still compiling".into())),
            Some(Err(e)) => return Err(Refused::Unavailable(e.to_string())),
            Some(Ok(m)) => m,
        };
        let Some(proxy) = &module.proxy else {
            return Err(Refused::Unavailable(
                "its module does not export wasi:http/incoming-handler".into(),
            ));
        };
        let method = call.request.method().to_string();
        let path = bounded(call.request.uri().path(), MAX_ERROR).into_owned();
        let state = HostState::new(
            t.publisher.clone(),
            store_limits(&t.limits),
            t.limits.stdout_bytes,
            LogBudget::from_limits(&t.limits),
            t.counters.output.clone(),
        )
        .with_caps(t.caps.clone());
        let mut state = match state.with_dirs(&t.dirs) {
            Ok(state) => state,
            Err(e) => {
                tracing::error!(agent = %t.name, error = %e, "http handler could not start; answered 503");
                return Err(Refused::Unavailable(e));
            }
        };
        state.rpc = Some(t.rpc.clone());
        t.counters.starts.fetch_add(1, Ordering::Relaxed);
        match instance::serve_http(&self.engine, proxy, state, t.budget, call) {
            Ok(()) => {
                t.counters.served.fetch_add(1, Ordering::Release);
                Ok(())
            }
            Err(fault) => {
                t.counters.faults.fetch_add(1, Ordering::Relaxed);
                let message = bounded(&fault.message, MAX_ERROR);
                tracing::warn!(agent = %t.name, %method, path, reason = fault.kind.as_str(), %message, "http handler faulted; answered 500");
                self.bus.publish_system(
                    kinds::DEAD_LETTER,
                    bytes::Bytes::from(
                        serde_json::json!({
                            "agent": &*t.name,
                            "http": { "method": method, "path": path },
                            "reason": fault.kind.as_str(),
                            "message": message,
                        })
                        .to_string(),
                    ),
                );
                Err(Refused::Fault(fault.to_string()))
            }
        }
    }
}
