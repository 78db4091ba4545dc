//! The wasmtime embedding: one [`Engine`](wasmtime::Engine), one
//! [`Linker`](wasmtime::component::Linker), a pre-linked [`Module`] per
//! component file and an [`Instance`] (one `Store`) per live agent.
//!
//! # Layout
//! - [`bindings`]: the one `bindgen!` of `wit/`;
//! - [`engine`]: engine settings and the epoch ticker behind call deadlines;
//! - [`module`]: loading and validating components;
//! - [`cache`]: the on-disk cache of precompiled components;
//! - [`instance`]: calling `init`/`handle` and classifying faults;
//! - [`state`]: per-store data and the host side of `bus` and `log`;
//! - [`limits`]: store limits and the publish token bucket;
//! - [`stdio`]: guest stdout/stderr into `tracing`, capped;
//! - [`inspect`]: what a component imports and exports, for `toka inspect`.

pub mod bindings;
pub mod cache;
pub mod engine;
pub mod inspect;
pub mod instance;
pub mod limits;
pub mod module;
pub mod state;
pub mod stdio;

use wasmtime::Engine;
use wasmtime::component::{HasSelf, Linker};

pub use instance::{Budget, CallError, Fault, FaultKind, Instance};
pub use module::{Module, ModuleError};
pub use state::HostState;

/// The linker every agent is instantiated with: WASI p2 (granting nothing by
/// default) plus the `toka:runtime` interfaces.
pub fn new_linker(engine: &Engine) -> wasmtime::Result<Linker<HostState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    bindings::Agent::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)?;
    Ok(linker)
}
