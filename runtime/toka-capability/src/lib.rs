//! The capability seam of the Toka host.
//!
//! A capability (secrets, vault, auth, and every one after them) is one
//! crate: a wasmtime-free core the CLI uses, plus, behind its `host`
//! feature, one type implementing [`Capability`]. The kernel lists that
//! type once (`capabilities! { ... }` in `toka-runtime`'s `host::caps`) and
//! derives from the list everything that used to be edited by hand: the
//! per-agent state, opening shared stores, linking, the interfaces
//! `toka inspect` reports as provided, the grant lines `toka check` prints
//! and the `--version` feature list.
//!
//! The shape follows Spin's `Factor` and wasmtime-wasi's view pattern: a
//! capability's WIT `Host` impls are written against a borrowed
//! [`View`] (the calling agent's name, its grant state, the resource table),
//! not against the kernel's store data, so a capability never depends on the
//! kernel and its impls are tested without wasm (call them on a `View`).
//!
//! ```ignore
//! impl Capability for Vault {
//!     const NAME: &'static str = "vault";
//!     // ...
//!     fn link<T: Has<Self>>(l: &mut Linker<T>) -> wasmtime::Result<()> {
//!         vault::add_to_linker::<T, VaultData>(l, |t| VaultHost(t.view()))
//!     }
//! }
//! ```
//!
//! # Layout
//! - [`bindings`]: the one `bindgen!` of `wit/` (world `agent`);
//! - [`resources`]: the host types behind WIT resources;
//! - [`wait`]: host calls that wait, bounded by the caller's deadline;
//! - this file: [`Capability`], [`View`], [`Has`], [`OpenCx`], [`CapError`].
#![deny(missing_docs)]

pub mod bindings;
pub mod resources;
pub mod wait;

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::Arc;

use toka_core::{AgentConfig, PublishError, RuntimeConfig};
use wasmtime::component::{Linker, ResourceTable};

/// Why a grant cannot be honoured, or a capability cannot open.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct CapError {
    /// The agent whose grant failed, if one agent is to blame.
    pub agent: Option<String>,
    /// What is wrong, naming the config key.
    pub message: String,
}

impl CapError {
    /// A failure of a shared store or setting, not one agent's.
    pub fn shared(message: impl Into<String>) -> Self {
        CapError {
            agent: None,
            message: message.into(),
        }
    }

    /// A failure of `agent`'s grant, named with its location.
    pub fn agent(agent: &AgentConfig, message: impl Into<String>) -> Self {
        CapError {
            agent: Some(agent.name.clone()),
            message: format!(
                "agent `{}` ({}): {}",
                agent.name,
                agent.location,
                message.into()
            ),
        }
    }
}

/// One host capability.
///
/// Lifecycle: [`Capability::grant`] per agent when the runtime is built
/// (`None` = not granted, the default); [`Capability::open`] once, only if
/// some agent holds a grant (so a config granting nothing never asks for a
/// key or opens a store); [`Capability::for_agent`] per granted agent, its
/// state shared by all the agent's instances; [`Capability::link`] once
/// into the linker every agent uses, for granted and ungranted agents alike
/// (an ungranted agent's calls see `state: None` and are denied as values).
pub trait Capability: Sized + Send + Sync + 'static {
    /// The capability's name: its cargo feature, `toka check` label, log field.
    const NAME: &'static str;
    /// The `[[agents]]` keys it owns.
    const AGENT_KEYS: &'static [&'static str];
    /// The WIT interfaces it serves (without version) and the line
    /// `toka inspect` prints for a component importing each.
    const INTERFACES: &'static [(&'static str, &'static str)];
    /// What one agent was granted, as configured.
    type Grant: Send + Sync + 'static;
    /// One granted agent's state, shared by its instances.
    type AgentState: Send + Sync + 'static;

    /// `agent`'s grant, or `None` when it holds none; an error names the key.
    fn grant(agent: &AgentConfig) -> Result<Option<Self::Grant>, CapError>;

    /// Open what the granted agents need (stores, keys), failing fast.
    fn open(
        config: &RuntimeConfig,
        granted: &[(&AgentConfig, &Self::Grant)],
        cx: &mut OpenCx,
    ) -> Result<Self, CapError>;

    /// The state of one granted agent.
    fn for_agent(
        &self,
        agent: &AgentConfig,
        grant: Self::Grant,
    ) -> Result<Self::AgentState, CapError>;

    /// Link the capability's interfaces, their calls reaching `T`'s view.
    fn link<T: Has<Self>>(linker: &mut Linker<T>) -> wasmtime::Result<()>;

    /// One line describing `grant` for `toka check`.
    fn describe(grant: &Self::Grant) -> String;
}

/// What a capability's host calls see: the calling agent, its state when it
/// holds a grant (`None`: deny every call), and the instance's resources.
#[derive(Debug)]
pub struct View<'a, C: Capability> {
    /// The calling agent's name (for logs; never trust it for grants: the
    /// grant is `state`).
    pub agent: &'a str,
    /// The agent's state, or `None` when it holds no grant.
    pub state: Option<&'a C::AgentState>,
    /// The instance's resource table.
    pub table: &'a mut ResourceTable,
    /// The deadline of the guest call in progress: a host call that waits
    /// (for a commit, a reply, the network) waits through
    /// [`wait::bounded`] with it, never on its own.
    pub wait: &'a wait::WaitState,
    /// Per-instance values a capability keeps between its calls, keyed by
    /// type (e.g. `wasi:http`'s hooks and context, which its bindings borrow
    /// mutably): empty when the instance starts, dropped with it.
    pub extensions: &'a mut http::Extensions,
}

/// Store data that gives capability `C` its [`View`]; the kernel implements
/// it once per registered capability (derived from its list).
pub trait Has<C: Capability>: Send + 'static {
    /// The view of the agent this store belongs to.
    fn view(&mut self) -> View<'_, C>;
}

/// Shared values capabilities open once and hand each other (the secret
/// store that secrets and auth tokens both use), keyed by type.
#[derive(Default)]
pub struct OpenCx {
    shared: HashMap<TypeId, Arc<dyn Any + Send + Sync>>,
}

impl std::fmt::Debug for OpenCx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenCx")
            .field("shared", &self.shared.len())
            .finish()
    }
}

impl OpenCx {
    /// The shared `T`, made by `make` the first time it is asked for.
    pub fn shared<T: Any + Send + Sync>(
        &mut self,
        make: impl FnOnce() -> Result<T, CapError>,
    ) -> Result<Arc<T>, CapError> {
        if let Some(v) = self.shared.get(&TypeId::of::<T>()) {
            return Ok(v.clone().downcast().expect("keyed by its type"));
        }
        let v = Arc::new(make()?);
        self.shared.insert(TypeId::of::<T>(), v.clone());
        Ok(v)
    }
}

impl From<PublishError> for bindings::types::Error {
    fn from(e: PublishError) -> Self {
        use bindings::types::Error;
        match e {
            PublishError::AccessDenied => Error::AccessDenied,
            PublishError::TooLarge(n) => Error::TooLarge(n),
            PublishError::RateLimited => Error::RateLimited,
            PublishError::Invalid(m) => Error::Invalid(m),
            PublishError::Unavailable => Error::Unavailable,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_values_are_made_once() {
        let mut cx = OpenCx::default();
        let a = cx.shared(|| Ok(7u32)).unwrap();
        let b = cx
            .shared::<u32>(|| panic!("made again"))
            .expect("the first one is kept");
        assert!(Arc::ptr_eq(&a, &b));
        let err = cx
            .shared::<u64>(|| Err(CapError::shared("no store")))
            .unwrap_err();
        assert_eq!(err.to_string(), "no store");
    }
}
