//! Which capabilities each agent holds, resolved once when the runtime is
//! built and enforced again on every call.
//!
//! The operator grants capabilities per agent in `[[agents]]` (`secrets`,
//! `vault`, `vault_shared`, `auth`); everything is denied by default. At
//! startup [`Capabilities::open`] opens the shared stores only if some agent
//! needs them (so a config without grants never asks for a master key), and
//! fails fast, naming the agent and key, when a grant cannot be honoured:
//! a malformed pattern, a capability this build lacks, a store that is not
//! configured. Each agent then gets an [`AgentCaps`] that its instances'
//! [`HostState`](super::HostState) consults on every call.

use std::sync::Arc;

use toka_core::{AgentConfig, RuntimeConfig};

/// The capabilities compiled into this build, by name (`toka --version`).
pub const BUILT: &[&str] = &[
    #[cfg(feature = "secrets")]
    "secrets",
    #[cfg(feature = "vault")]
    "vault",
    #[cfg(feature = "auth")]
    "auth",
];

/// Why a grant cannot be honoured.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct CapError {
    /// The agent whose grant failed, if one agent is to blame.
    pub agent: Option<String>,
    /// What is wrong, naming the config key.
    pub message: String,
}

impl CapError {
    #[cfg_attr(
        not(feature = "secrets"),
        expect(dead_code, reason = "only capabilities report shared-store errors")
    )]
    fn shared(message: impl Into<String>) -> Self {
        CapError {
            agent: None,
            message: message.into(),
        }
    }

    fn agent(agent: &AgentConfig, message: impl Into<String>) -> Self {
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

/// The capabilities one agent holds. Cheap to clone into every instance.
#[derive(Default, Clone)]
pub struct AgentCaps {
    /// Secret names the agent may read, and the store.
    #[cfg(feature = "secrets")]
    pub secrets: Option<Arc<super::secrets::SecretsCtx>>,
    /// Vault namespaces the agent may use, and the vault.
    #[cfg(feature = "vault")]
    pub vault: Option<Arc<super::vault::VaultCtx>>,
    /// Auth operations the agent may call.
    #[cfg(feature = "auth")]
    pub auth: Option<Arc<super::auth::AuthCtx>>,
}

impl std::fmt::Debug for AgentCaps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("AgentCaps");
        #[cfg(feature = "secrets")]
        d.field("secrets", &self.secrets.is_some());
        #[cfg(feature = "vault")]
        d.field("vault", &self.vault.is_some());
        #[cfg(feature = "auth")]
        d.field("auth", &self.auth.is_some());
        d.finish()
    }
}

/// The shared stores, opened only when some agent is granted them.
#[derive(Default)]
pub struct Capabilities {
    #[cfg(feature = "secrets")]
    secrets: Option<Arc<toka_secrets::SecretStore>>,
    #[cfg(feature = "vault")]
    vault: Option<Arc<toka_vault::Vault>>,
    #[cfg(feature = "auth")]
    token_key: Option<Arc<toka_auth::SigningKey>>,
    #[cfg(feature = "vault")]
    max_blob_bytes: u64,
}

impl std::fmt::Debug for Capabilities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capabilities").finish_non_exhaustive()
    }
}

impl Capabilities {
    /// Check every agent's grants against this build and open what they need.
    pub fn open(config: &RuntimeConfig) -> Result<Self, CapError> {
        #[cfg_attr(
            not(feature = "secrets"),
            expect(unused_mut, reason = "only capabilities fill it in")
        )]
        let mut caps = Capabilities::default();
        for agent in &config.agents {
            let g = &agent.grants;
            let needs = |granted: bool, built: bool, feature: &str| {
                if granted && !built {
                    return Err(CapError::agent(
                        agent,
                        format!(
                            "`{feature}` is granted but this build has no `{feature}` capability (rebuild `toka` with `--features {feature}`)"
                        ),
                    ));
                }
                Ok(())
            };
            needs(!g.secrets.is_empty(), cfg!(feature = "secrets"), "secrets")?;
            needs(
                g.vault || !g.vault_shared.is_empty(),
                cfg!(feature = "vault"),
                "vault",
            )?;
            needs(!g.auth.is_empty(), cfg!(feature = "auth"), "auth")?;
        }
        #[cfg(feature = "vault")]
        {
            caps.max_blob_bytes = config.vault.max_blob_mb << 20;
        }
        #[cfg(feature = "secrets")]
        caps.open_stores(config)?;
        Ok(caps)
    }

    #[cfg(feature = "secrets")]
    fn open_stores(&mut self, config: &RuntimeConfig) -> Result<(), CapError> {
        let wants = |f: fn(&AgentConfig) -> bool| config.agents.iter().any(f);
        let token_ops = |a: &AgentConfig| a.grants.auth.iter().any(|op| op.ends_with("-token"));
        let need_secrets = wants(|a| !a.grants.secrets.is_empty()) || wants(token_ops);
        let need_vault = wants(|a| a.grants.vault || !a.grants.vault_shared.is_empty());
        if !(need_secrets || need_vault) {
            return Ok(());
        }
        let master = toka_secrets::MasterKey::resolve(config.secrets.key_file.as_deref())
            .map_err(|e| CapError::shared(format!("capabilities need the master key: {e}")))?;
        // Derived before the store takes the master key: each capability
        // gets its own subkey.
        #[cfg(feature = "vault")]
        let vault_key = need_vault.then(|| master.derive(super::vault::KEY_CONTEXT));
        if need_secrets {
            let Some(path) = &config.secrets.path else {
                return Err(CapError::shared(
                    "an agent is granted `secrets` (or `auth` tokens) but no secret store is configured: set `[secrets] path` (or `[event_bus] secret_store`)",
                ));
            };
            let store = toka_secrets::SecretStore::open(path, master)
                .map_err(|e| CapError::shared(format!("secret store {}: {e}", path.display())))?;
            self.secrets = Some(Arc::new(store));
        }
        #[cfg(feature = "vault")]
        if need_vault {
            let Some(path) = &config.vault.path else {
                return Err(CapError::shared(
                    "an agent is granted `vault` but no vault is configured: set `[vault] path`",
                ));
            };
            let key = toka_vault::VaultKey::from_bytes(*vault_key.expect("derived when needed"));
            let vault = toka_vault::Vault::open(path, key)
                .map_err(|e| CapError::shared(format!("vault {}: {e}", path.display())))?;
            self.vault = Some(Arc::new(vault));
        }
        #[cfg(feature = "auth")]
        if wants(token_ops) {
            let store = self
                .secrets
                .as_ref()
                .expect("opened above for token grants");
            self.token_key = Some(Arc::new(super::auth::token_key(store)?));
        }
        Ok(())
    }

    /// The capabilities `agent` holds.
    pub fn for_agent(&self, agent: &AgentConfig) -> Result<Arc<AgentCaps>, CapError> {
        #[cfg_attr(
            not(feature = "secrets"),
            expect(unused_mut, reason = "only capabilities fill it in")
        )]
        let mut caps = AgentCaps::default();
        #[cfg(feature = "secrets")]
        if !agent.grants.secrets.is_empty() {
            let grant = toka_secrets::Grant::new(&agent.grants.secrets)
                .map_err(|e| CapError::agent(agent, format!("`secrets`: {e}")))?;
            let store = self.secrets.clone().expect("opened for any secrets grant");
            caps.secrets = Some(Arc::new(super::secrets::SecretsCtx::new(
                &agent.name,
                grant,
                store,
            )));
        }
        #[cfg(feature = "vault")]
        if agent.grants.vault || !agent.grants.vault_shared.is_empty() {
            let vault = self.vault.clone().expect("opened for any vault grant");
            let ctx = super::vault::VaultCtx::new(agent, vault)
                .map_err(|e| CapError::agent(agent, e))?
                .with_max_blob(self.max_blob_bytes);
            caps.vault = Some(Arc::new(ctx));
        }
        #[cfg(feature = "auth")]
        if !agent.grants.auth.is_empty() {
            caps.auth = Some(Arc::new(super::auth::AuthCtx::new(
                &agent.name,
                &agent.grants.auth,
                self.token_key.clone(),
            )));
        }
        let _ = agent;
        Ok(Arc::new(caps))
    }
}
