//! The Toka kernel: an event bus with per-agent mailboxes, a tick scheduler,
//! and a wasmtime host that runs each agent as a sandboxed WebAssembly
//! component with only the capabilities the operator granted.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let config = toka_runtime::host::caps::load("config/minimal.toml")?;
//! toka_runtime::Runtime::new(config)?.run().await?;
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - [`runtime`]: [`Runtime`], building the kernel from a config and running it;
//! - [`bus`]: routing events to mailboxes by topic pattern;
//! - `mailbox`: bounded per-agent queues;
//! - `recycle`: event allocations reused between workers and publishers;
//! - [`publisher`]: the checks between an agent's publish and the bus;
//! - `worker`: the thread pool that feeds wasm agents their events;
//! - `rpc`: request/reply between agents;
//! - [`supervisor`]: restart backoff and quarantine policy;
//! - `scheduler`: `toka.tick` and per-agent periods;
//! - `native`: native Rust [`Agent`](toka_core::Agent)s beside wasm ones;
//! - [`registry`]: the plan (`toka check`) and the run report;
//! - [`host`]: the wasmtime embedding;
//! - `inbound` (feature `http`): `[[http.routes]]` served by components.
#![deny(missing_docs)]

pub mod bus;
pub mod error;
pub mod host;
#[cfg(feature = "http")]
pub(crate) mod inbound;
pub(crate) mod mailbox;
pub(crate) mod native;
pub mod publisher;
pub(crate) mod recycle;
pub mod registry;
pub(crate) mod rpc;
pub mod runtime;
pub(crate) mod scheduler;
pub mod supervisor;
pub(crate) mod worker;

pub use error::{Error, Result};
pub use registry::{AgentReport, Plan, Report};
pub use rpc::latency as request_latency;
pub use runtime::{Runtime, RuntimeOptions, ShutdownHandle};
pub use toka_core;
pub use worker::{AgentCounters, Health};
