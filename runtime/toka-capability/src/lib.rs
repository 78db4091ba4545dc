//! The capability seam of the Toka host.
//!
//! A capability (secrets, vault, auth, and every one after them) is one
//! crate: a wasmtime-free core the CLI uses, plus, behind its `host`
//! feature, one type implementing [`Capability`]. The kernel lists that
//! type once, with the `[[agents]]` keys it owns (`registered! { ... }` in
//! `toka-runtime`'s `host::caps`), and derives from the list everything
//! that used to be edited by hand: the keys the configuration loader
//! declares, the per-agent state, opening shared stores, linking, the
//! interfaces `toka inspect` reports as provided, the grant lines `toka
//! check` prints, the `--version` feature list and the stores key rotation
//! re-keys. A capability parses its own grant from
//! [`AgentConfig::keys`] in [`Capability::grant`].
//!
//! The shape follows Spin's `Factor` and wasmtime-wasi's view pattern: a
//! capability's WIT `Host` impls are written against a borrowed
//! [`View`] (the calling agent's name, its grant state, the resource table),
//! not against the kernel's store data, so a capability never depends on the
//! kernel and its impls are tested without wasm (call them on a `View`).
//!
//! ```text
//! impl Capability for Vault {
//!     const NAME: &'static str = "vault";
//!     // ...
//!     fn link<T: Has<Self>>(l: &mut Linker<T>) -> wasmtime::Result<()> {
//!         vault::add_to_linker::<T, VaultData>(l, |t| VaultHost(t.view()))
//!     }
//! }
//! ```
//!
//! # Key rotation
//!
//! A capability that keeps a store sealed under the master key (the secret
//! store, the vault; durable key-value and the ledger next) takes part in
//! `toka secrets rotate-key` by implementing [`Capability::sealed`]: the
//! kernel lists every built capability's stores from its registry, and the
//! CLI rotates over that list, so no command names a store. The hook is
//! written in terms of the keyring's `Sealed` (re-exported here as
//! [`Sealed`]) only with this crate's `keyring` feature, which the `host`
//! feature of each such capability crate enables (its `sealed` does not
//! compile otherwise). Without it (a build in which no capability seals
//! anything, the lean kernel) [`Sealed`] is a stand-in trait nothing
//! implements: the hook and the kernel's list exist in every build, empty
//! there, and the kernel never depends on the keyring.
//!
//! # Layout
//! - [`bindings`]: the one `bindgen!` of `wit/` (world `agent`);
//! - [`resources`]: the host types behind WIT resources;
//! - [`wait`]: host calls that wait, bounded by the caller's deadline;
//! - this file: [`Capability`], [`View`], [`Has`], [`OpenCx`], [`CapError`]
//!   and its [`CapErrorKind`].
#![deny(missing_docs)]

pub mod bindings;
pub mod resources;
pub mod wait;

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::Arc;

use toka_core::{AgentConfig, ConfigError, PublishError, RuntimeConfig};
use wasmtime::component::{Linker, ResourceTable};

/// Why a grant cannot be honoured, or a capability cannot open.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct CapError {
    /// The agent whose grant failed, if one agent is to blame.
    pub agent: Option<String>,
    /// What is wrong, naming the config key.
    pub message: String,
    /// Whose fault it is: the operator's input, or a failure (the `toka`
    /// command's exit code, 2 or 1, follows it).
    pub kind: CapErrorKind,
}

/// Whether a [`CapError`] is the operator's to fix in the input, or a
/// failure the input does not explain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CapErrorKind {
    /// The operator's input is wrong or missing: a malformed grant, a store a
    /// grant needs that is not configured, a master key that is missing or
    /// does not open the store. Fixed by editing the configuration or the
    /// environment (`toka` exits 2).
    Config,
    /// Something failed that the input does not explain: I/O, a store's
    /// data corrupt or held by another process, the random number generator
    /// (`toka` exits 1).
    Failure,
}

impl CapError {
    /// The operator's mistake in a shared store or setting, not one agent's.
    pub fn shared(message: impl Into<String>) -> Self {
        CapError {
            agent: None,
            message: message.into(),
            kind: CapErrorKind::Config,
        }
    }

    /// A shared store or setting failed for a reason the configuration does
    /// not explain (I/O, corruption): [`CapErrorKind::Failure`].
    pub fn failure(message: impl Into<String>) -> Self {
        CapError {
            kind: CapErrorKind::Failure,
            ..CapError::shared(message)
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
            kind: CapErrorKind::Config,
        }
    }

    /// One of `agent`'s capability keys is malformed: `error`, from the
    /// located getters of [`AgentConfig::keys`], already names the file,
    /// line, column and `agents[i].key`, so it is kept as it is.
    pub fn config(agent: &AgentConfig, error: ConfigError) -> Self {
        CapError {
            agent: Some(agent.name.clone()),
            message: error.to_string(),
            kind: CapErrorKind::Config,
        }
    }

    /// The same error, of `kind`.
    pub fn with_kind(self, kind: CapErrorKind) -> Self {
        CapError { kind, ..self }
    }

    /// True when the operator's input is to blame ([`CapErrorKind::Config`]).
    pub fn is_config(&self) -> bool {
        self.kind == CapErrorKind::Config
    }
}

/// A store sealed under the master key, as key rotation sees it: the
/// keyring's `toka_keyring::Sealed` (feature `keyring`).
#[cfg(feature = "keyring")]
pub use toka_keyring::Sealed;

/// A store sealed under the master key, as key rotation sees it: without
/// the `keyring` feature no capability of the build seals one, and this
/// stand-in, which nothing implements, keeps [`Capability::sealed`]'s
/// signature (see the crate's "Key rotation").
#[cfg(not(feature = "keyring"))]
pub trait Sealed {}

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
    /// The top-level config sections it owns (`[http]`), read in
    /// [`Capability::open`] through `RuntimeConfig::section`; none by default.
    const SECTIONS: &'static [&'static str] = &[];
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

    /// The stores `config` names that this capability keeps sealed under the
    /// master key and that exist, for `toka secrets rotate-key` to re-key
    /// and for an interrupted rotation to be settled over (see the crate's
    /// "Key rotation"). Called whether or not any agent holds a grant: a
    /// store is sealed under the key whoever uses it. Default: none.
    ///
    /// The order of a capability's stores, and of the capabilities in the
    /// kernel's list, is the order they are re-keyed in; it must not change
    /// between versions, since settling an interrupted rotation relies on it.
    fn sealed(config: &RuntimeConfig) -> Vec<Box<dyn Sealed>> {
        let _ = config;
        Vec::new()
    }
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

/// What a [`View`] borrows, owned: an instance's worth of host-side state
/// for calling a capability's host impls without wasm (its tests). Its call
/// deadline is not armed, so a waiting call gets no time: arm `wait` for one.
#[derive(Debug)]
pub struct ViewParts {
    /// The resource table.
    pub table: ResourceTable,
    /// The call's deadline.
    pub wait: wait::WaitState,
    /// The per-instance values.
    pub extensions: http::Extensions,
}

impl Default for ViewParts {
    fn default() -> Self {
        ViewParts {
            table: ResourceTable::new(),
            wait: wait::WaitState::default(),
            extensions: http::Extensions::default(),
        }
    }
}

impl ViewParts {
    /// The view of `agent`, holding `state` (`None`: no grant), over these parts.
    pub fn view<'a, C: Capability>(
        &'a mut self,
        agent: &'a str,
        state: Option<&'a C::AgentState>,
    ) -> View<'a, C> {
        View {
            agent,
            state,
            table: &mut self.table,
            wait: &self.wait,
            extensions: &mut self.extensions,
        }
    }
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

    #[test]
    fn errors_say_whose_fault_they_are() {
        let shared = CapError::shared("no store is configured");
        assert_eq!((shared.kind, shared.agent), (CapErrorKind::Config, None));
        let failed = CapError::failure("disk full");
        assert_eq!(failed.kind, CapErrorKind::Failure);
        assert!(!failed.is_config());
        assert_eq!(failed.to_string(), "disk full");
        assert!(failed.with_kind(CapErrorKind::Config).is_config());

        let config = RuntimeConfig::parse_declared(
            "[[agents]]\nname = \"a\"\nquota = \"big\"\n",
            std::path::Path::new("t.toml"),
            std::path::Path::new("."),
            &toka_core::config::Declared {
                sections: &[],
                agent_keys: &["quota"],
            },
            &|_| None,
        )
        .unwrap();
        let agent = &config.agents[0];
        let err = CapError::agent(agent, "`quota`: too big");
        assert_eq!(err.kind, CapErrorKind::Config);
        assert_eq!(err.to_string(), "agent `a` (t.toml:1:1): `quota`: too big");
        let located = agent.keys().get_uint("quota", 1, 8).unwrap_err();
        let err = CapError::config(agent, located);
        assert_eq!(err.agent.as_deref(), Some("a"));
        assert!(err.is_config());
        assert_eq!(
            err.to_string(),
            "t.toml:3:9: agents[0].quota: expected an integer, found a string"
        );
    }
}
