//! Native Rust agents (the seed's [`Agent`] trait) running beside wasm ones.
//!
//! Each native agent is a tokio task draining its own mailbox; it publishes
//! through the same [`AgentPublisher`] checks as a wasm agent (any kind but
//! the runtime's own `toka.*`). A panic in a native agent's `handle` is caught:
//! the event is dead-lettered (reason `panic`) and the agent goes on with its
//! next event, so one buggy agent cannot stop the task that serves it.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::FutureExt as _;
use toka_core::{Agent, Context, Event, PatternSet};
use tokio::sync::Notify;

use crate::bus::Bus;
use crate::mailbox::{Mailbox, Wake};

const BATCH: usize = 64;

type BoxFuture<'a> = Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send + 'a>>;

/// Object-safe face of [`Agent`] (its `handle` returns `impl Future`).
pub(crate) trait DynAgent: Send + Sync {
    fn interest(&self) -> PatternSet;
    fn handle<'a>(&'a self, event: Arc<Event>, cx: &'a Context) -> BoxFuture<'a>;
}

impl<A: Agent> DynAgent for A {
    fn interest(&self) -> PatternSet {
        Agent::interest(self)
    }
    fn handle<'a>(&'a self, event: Arc<Event>, cx: &'a Context) -> BoxFuture<'a> {
        Box::pin(Agent::handle(self, event, cx))
    }
}

impl Wake for Notify {
    fn wake(&self) {
        self.notify_one();
    }
}

/// A registered native agent.
pub(crate) struct NativeAgent {
    pub(crate) name: Arc<str>,
    pub(crate) agent: Arc<dyn DynAgent>,
    pub(crate) mailbox: Arc<Mailbox>,
    pub(crate) notify: Arc<Notify>,
    pub(crate) context: Context,
    pub(crate) handled: Arc<AtomicU64>,
}

impl NativeAgent {
    /// Run until the task is aborted at shutdown.
    pub(crate) fn spawn(&self, bus: Bus) -> tokio::task::JoinHandle<()> {
        let agent = self.agent.clone();
        let mailbox = self.mailbox.clone();
        let notify = self.notify.clone();
        let cx = self.context.clone();
        let handled = self.handled.clone();
        let name = self.name.clone();
        tokio::spawn(async move {
            let mut batch = VecDeque::new();
            loop {
                mailbox.drain_into(&mut batch, BATCH);
                if batch.is_empty() {
                    notify.notified().await;
                    continue;
                }
                while let Some(event) = batch.pop_front() {
                    let call = std::panic::AssertUnwindSafe(agent.handle(event.clone(), &cx));
                    match call.catch_unwind().await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => {
                            tracing::warn!(agent = %name, event = event.id, error = %e, "native agent returned an error");
                        }
                        Err(panic) => {
                            let message = panic_message(&*panic);
                            tracing::error!(agent = %name, event = event.id, message, "native agent panicked; event dead-lettered");
                            bus.publish_system(
                                toka_core::event::kinds::DEAD_LETTER,
                                serde_json::to_vec(&serde_json::json!({
                                    "agent": &*name,
                                    "event_id": event.id,
                                    "kind": event.kind.as_str(),
                                    "reason": "panic",
                                    "message": message,
                                }))
                                .expect("json")
                                .into(),
                            );
                        }
                    }
                    handled.fetch_add(1, Ordering::Relaxed);
                    bus.done(1);
                }
            }
        })
    }
}

/// The text of a panic payload (`panic!` gives `&str` or `String`).
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".into())
}
