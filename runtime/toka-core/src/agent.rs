//! The native agent trait: Rust agents compiled into the host, beside wasm ones.
//!
//! ```
//! use std::sync::Arc;
//! use toka_core::{Agent, Context, Event, PatternSet};
//!
//! struct Logger;
//!
//! impl Agent for Logger {
//!     fn interest(&self) -> PatternSet {
//!         PatternSet::parse(&["*"]).unwrap()
//!     }
//!
//!     async fn handle(&self, event: Arc<Event>, _cx: &Context) -> anyhow::Result<()> {
//!         println!("{} from {}", event.kind, event.source);
//!         Ok(())
//!     }
//! }
//! ```

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;

use crate::event::Event;
use crate::topic::PatternSet;

/// Why the bus refused a publish. Mirrors the WIT `error` variant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// Outside the publisher's grant, or a runtime (`toka.*`) kind.
    #[error("access denied")]
    AccessDenied,
    /// Payload larger than the limit (bytes).
    #[error("payload larger than {0} bytes")]
    TooLarge(u64),
    /// Publisher exceeded its rate limit.
    #[error("rate limited")]
    RateLimited,
    /// Malformed kind.
    #[error("invalid: {0}")]
    Invalid(String),
    /// The runtime is shutting down.
    #[error("the bus is shutting down")]
    Unavailable,
}

/// Something that can publish on the bus on an agent's behalf.
///
/// The runtime hands each native agent a [`Context`] wrapping one of these,
/// bound to that agent's name and grants.
pub trait Publisher: Send + Sync {
    /// Publish `payload` under `kind`; returns the new event id.
    fn publish(&self, kind: &str, payload: Bytes) -> Result<u64, PublishError>;
}

/// What a native agent gets from the runtime while handling events.
#[derive(Clone)]
pub struct Context {
    name: Arc<str>,
    publisher: Arc<dyn Publisher>,
}

impl Context {
    /// Build a context; used by the runtime and by tests of native agents.
    pub fn new(name: Arc<str>, publisher: Arc<dyn Publisher>) -> Self {
        Context { name, publisher }
    }

    /// The agent's configured name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Publish an event as this agent (subject to its `publish` grant).
    pub fn publish(&self, kind: &str, payload: impl Into<Bytes>) -> Result<u64, PublishError> {
        self.publisher.publish(kind, payload.into())
    }
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context").field("name", &self.name).finish()
    }
}

/// A native Rust agent, the seed's `Agent` trait.
///
/// `interest` is what the agent asks to receive; the runtime delivers the
/// events matching it, intersected with nothing else: a native agent is
/// compiled into the host and trusted like the host. (Wasm agents, which are
/// not trusted, receive only what the operator's `subscribe` grant allows.)
pub trait Agent: Send + Sync + 'static {
    /// Event kinds this agent wants.
    fn interest(&self) -> PatternSet;

    /// Handle one event. Events arrive one at a time, in publish order.
    fn handle(
        &self,
        event: Arc<Event>,
        cx: &Context,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;
}
