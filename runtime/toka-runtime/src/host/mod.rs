//! The wasmtime embedding: one [`Engine`](wasmtime::Engine), one
//! [`Linker`](wasmtime::component::Linker), a pre-linked [`Module`] per
//! component file and an [`Instance`] (one `Store`) per live agent.
//!
//! # Layout
//! - [`bindings`]: the `wit/` bindings (generated in `toka-capability`);
//! - [`engine`]: engine settings and the epoch ticker behind call deadlines;
//! - [`file`]: reading a module file safely, header checks;
//! - [`module`]: loading and validating components;
//! - [`cache`]: the on-disk cache of precompiled components;
//! - [`compile`]: compiling a module within a time and memory budget;
//! - [`instance`]: calling `init`/`handle` and classifying faults;
//! - [`state`]: per-store data and the host side of `bus` and `log`;
//! - [`limits`]: store limits and the publish token bucket;
//! - [`stdio`]: guest stdout/stderr into `tracing`, capped;
//! - [`inspect`]: what a component imports and exports, for `toka inspect`;
//! - [`caps`]: the list of capabilities this build links, and everything
//!   derived from it (per-agent state, opening, linking, inspect and check);
//! - [`trust`]: the `[trust]` module signature policy;
//! - [`wait`]: host calls that wait, bounded by the caller's deadline.
//!
//! The capabilities themselves (secrets, vault, auth) live in their own
//! crates, behind their cargo features (see `toka_capability`).

pub mod bindings;
pub mod cache;
pub mod caps;
pub mod compile;
pub mod engine;
pub mod file;
pub mod inspect;
pub mod instance;
pub mod limits;
pub mod module;
pub mod state;
pub mod stdio;
pub mod trust;
pub mod wait;

use wasmtime::Engine;
use wasmtime::component::{HasSelf, Linker};

pub use instance::{Budget, CallError, Fault, FaultKind, Instance};
pub use module::{Module, ModuleError};
pub use state::HostState;

/// The linker every agent is instantiated with: WASI p2 (granting nothing by
/// default), the kernel's `toka:runtime` interfaces, and each capability
/// interface this build has. A guest importing a capability the build lacks
/// fails to load with an error naming the missing import.
pub fn new_linker(engine: &Engine) -> wasmtime::Result<Linker<HostState>> {
    use bindings::toka::runtime as wit;
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    // WASI's own `wasi:io/poll` blocks for as long as the guest asks; this
    // one is bounded by the call's deadline (see `wait`).
    linker.allow_shadowing(true);
    wasmtime_wasi::p2::bindings::sync::io::poll::add_to_linker::<HostState, wait::Poll>(
        &mut linker,
        HostState::poll,
    )?;
    linker.allow_shadowing(false);
    wit::types::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)?;
    wit::bus::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)?;
    wit::log::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)?;
    wit::request::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)?;
    link_capabilities(&mut linker)?;
    Ok(linker)
}

/// Generates `link_capabilities`: each registered capability's `link`.
macro_rules! linker {
    ($( #[cfg($meta:meta)] $field:ident : $ty:ty = [$($key:literal),* $(,)?] ),* $(,)?) => {
        fn link_capabilities(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
            $( #[cfg($meta)] <$ty as toka_capability::Capability>::link(linker)?; )*
            let _ = linker;
            Ok(())
        }
    };
}
caps::registered!(linker);
