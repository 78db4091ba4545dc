//! Native Rust agents (the seed's [`Agent`] trait) running beside wasm ones.
//!
//! Each native agent is a tokio task draining its own mailbox; it publishes
//! through the same [`AgentPublisher`] checks as a wasm agent (any kind but
//! the runtime's own `toka.*`).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

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
                    if let Err(e) = agent.handle(event.clone(), &cx).await {
                        tracing::warn!(agent = %name, event = event.id, error = %e, "native agent returned an error");
                    }
                    handled.fetch_add(1, Ordering::Relaxed);
                    bus.done(1);
                }
            }
        })
    }
}
