//! The capabilities this build links: one registration line each in
//! [`capabilities!`] below, and everything the kernel derives from the list.
//!
//! The operator grants capabilities per agent in `[[agents]]` (`secrets`,
//! `vault`, `vault_shared`, `auth`, `kv`, `kv_shared`); everything is
//! denied by default. At startup [`Capabilities::open`] asks each
//! capability for each agent's grant and opens the capability only if some
//! agent holds one (so a config without grants never asks for a master key
//! or opens a store), failing fast, naming the
//! agent and key, when a grant cannot be honoured: a malformed pattern, a
//! capability this build lacks, a store that is not configured. Each agent
//! then gets an [`AgentCaps`] that its instances' views read on every call.
//!
//! A new capability is a crate implementing [`Capability`] behind its
//! `host` feature, plus one line in [`capabilities!`]: its state field, its
//! `open`/`for_agent` calls, its linking, its `toka inspect` interfaces,
//! its `toka check` lines and its `--version` name all follow from it.

use std::sync::Arc;

pub use toka_capability::CapError;
#[allow(unused_imports, reason = "used only when a capability is built in")]
use toka_capability::{Capability, OpenCx};
use toka_core::{AgentConfig, RuntimeConfig};

/// Agent state that holds capability `C`'s state for one agent (the kernel's
/// store data gives each capability its view from it).
pub trait Holds<C: Capability> {
    /// `C`'s state for this agent, or `None` when it holds no grant.
    fn holds(&self) -> Option<&C::AgentState>;
}

/// Derives, from the one list in [`registered!`], [`BUILT`], [`INTERFACES`],
/// [`AgentCaps`] (and its [`Holds`] impls) and [`Capabilities`].
macro_rules! define {
    ($( #[cfg($meta:meta)] $field:ident : $ty:ty ),* $(,)?) => {
        /// The capabilities compiled into this build, by name (`toka --version`).
        pub const BUILT: &[&str] = &[$( #[cfg($meta)] <$ty as Capability>::NAME, )*];

        /// Every WIT interface the capabilities of this build serve, with
        /// the line `toka inspect` prints for it.
        pub const INTERFACES: &[&[(&str, &str)]] = &[$( #[cfg($meta)] <$ty as Capability>::INTERFACES, )*];

        /// The capabilities one agent holds. Cheap to clone into every instance.
        #[derive(Default)]
        pub struct AgentCaps {
            $(
                #[cfg($meta)]
                $field: Option<Arc<<$ty as Capability>::AgentState>>,
            )*
            /// One line per granted capability, for `toka check`.
            pub grants: Vec<String>,
        }

        impl std::fmt::Debug for AgentCaps {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct("AgentCaps").field("grants", &self.grants).finish()
            }
        }

        /// The opened capabilities: each only when some agent holds it.
        #[derive(Default)]
        pub struct Capabilities {
            $(
                #[cfg($meta)]
                $field: Option<$ty>,
            )*
        }

        impl std::fmt::Debug for Capabilities {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct("Capabilities").finish_non_exhaustive()
            }
        }

        impl Capabilities {
            /// Check every agent's grants against this build and open what they need.
            pub fn open(config: &RuntimeConfig) -> Result<Self, CapError> {
                not_built(config)?;
                #[allow(unused_mut, unused_variables, reason = "empty without capabilities")]
                let mut cx = OpenCx::default();
                #[allow(unused_mut, reason = "empty without capabilities")]
                let mut caps = Capabilities::default();
                $(
                    #[cfg($meta)]
                    {
                        let grants = config
                            .agents
                            .iter()
                            .map(|a| Ok(<$ty as Capability>::grant(a)?.map(|g| (a, g))))
                            .collect::<Result<Vec<_>, CapError>>()?;
                        let granted: Vec<_> = grants.iter().flatten().map(|(a, g)| (*a, g)).collect();
                        if !granted.is_empty() {
                            caps.$field = Some(<$ty as Capability>::open(config, &granted, &mut cx)?);
                        }
                    }
                )*
                Ok(caps)
            }

            /// The capabilities `agent` holds.
            pub fn for_agent(&self, agent: &AgentConfig) -> Result<Arc<AgentCaps>, CapError> {
                #[allow(unused_mut, reason = "empty without capabilities")]
                let mut caps = AgentCaps::default();
                $(
                    #[cfg($meta)]
                    if let Some(grant) = <$ty as Capability>::grant(agent)? {
                        let opened = self.$field.as_ref().expect("opened for any grant");
                        caps.grants.push(<$ty as Capability>::describe(&grant));
                        caps.$field = Some(Arc::new(opened.for_agent(agent, grant)?));
                    }
                )*
                let _ = agent;
                Ok(Arc::new(caps))
            }
        }

        $(
            #[cfg($meta)]
            impl Holds<$ty> for AgentCaps {
                fn holds(&self) -> Option<&<$ty as Capability>::AgentState> {
                    self.$field.as_deref()
                }
            }
        )*
    };
}

/// The registered capabilities: one line each. Every list the kernel needs
/// is derived from this one by passing a macro to it (`define` here; the
/// linker's in `host::new_linker`).
macro_rules! registered {
    ($derive:ident) => {
        $derive! {
            #[cfg(feature = "secrets")] secrets: toka_secrets::host::Secrets,
            #[cfg(feature = "vault")] vault: toka_vault::host::Vault,
            #[cfg(feature = "auth")] auth: toka_auth::host::Auth,
            #[cfg(feature = "kv")] kv: toka_kv::host::Kv,
        }
    };
}
pub(crate) use registered;

registered!(define);
/// A grant of a capability this build does not have is the operator's
/// error, named with the agent and the rebuild that fixes it.
fn not_built(config: &RuntimeConfig) -> Result<(), CapError> {
    for agent in &config.agents {
        let g = &agent.grants;
        let wanted = [
            ("secrets", !g.secrets.is_empty()),
            ("vault", g.vault || !g.vault_shared.is_empty()),
            ("auth", !g.auth.is_empty()),
            // A build without `kv` does not declare its keys, so a grant
            // arrives as free-form settings.
            (
                "kv",
                agent
                    .settings
                    .iter()
                    .any(|(k, v)| (k == "kv" && v == "true") || k == "kv_shared"),
            ),
        ];
        for (feature, granted) in wanted {
            if granted && !BUILT.contains(&feature) {
                return Err(CapError::agent(
                    agent,
                    format!(
                        "`{feature}` is granted but this build has no `{feature}` capability (rebuild `toka` with `--features {feature}`)"
                    ),
                ));
            }
        }
    }
    Ok(())
}
