//! The host side of `toka:runtime/secrets`: reads from the encrypted store,
//! only for names the agent's `secrets` grant allows.
//!
//! "Not granted" and "no such secret" give the guest the same
//! `access-denied`, so an agent cannot probe which secrets exist. Every read
//! is logged with the agent and the name; a value is never logged.

use std::sync::Arc;

use toka_secrets::{Grant, SecretStore};

use super::bindings::{secrets, types};
use super::state::HostState;

/// Longest secret name echoed into a log record.
const MAX_LOGGED_NAME: usize = 256;

/// One agent's view of the secret store.
pub struct SecretsCtx {
    agent: Arc<str>,
    grant: Grant,
    store: Arc<SecretStore>,
}

impl std::fmt::Debug for SecretsCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretsCtx")
            .field("agent", &self.agent)
            .field("grant", &self.grant)
            .finish_non_exhaustive()
    }
}

impl SecretsCtx {
    /// `agent` may read the names `grant` allows from `store`.
    pub fn new(agent: &str, grant: Grant, store: Arc<SecretStore>) -> Self {
        SecretsCtx {
            agent: agent.into(),
            grant,
            store,
        }
    }

    /// The value of `name`, or the one answer a guest gets for everything else.
    pub fn get(&self, name: &str) -> Result<Vec<u8>, types::Error> {
        let logged = &*toka_core::text::bounded(name, MAX_LOGGED_NAME);
        if !self.grant.allows(name) {
            tracing::warn!(agent = %self.agent, name = logged, "secret read denied: not granted");
            return Err(types::Error::AccessDenied);
        }
        match self.store.get(name) {
            Ok(Some(value)) => {
                tracing::info!(agent = %self.agent, name = logged, "secret read");
                Ok(value.expose().to_vec())
            }
            Ok(None) => {
                tracing::warn!(agent = %self.agent, name = logged, "secret read denied: no such secret");
                Err(types::Error::AccessDenied)
            }
            Err(e) => {
                tracing::error!(agent = %self.agent, name = logged, error = %e, "secret store failed");
                Err(types::Error::Unavailable)
            }
        }
    }
}

impl secrets::Host for HostState {
    fn get(&mut self, name: String) -> Result<Vec<u8>, types::Error> {
        match &self.caps.secrets {
            Some(ctx) => ctx.get(&name),
            None => {
                tracing::warn!(agent = %self.publisher.name(), "secret read denied: agent holds no `secrets` grant");
                Err(types::Error::AccessDenied)
            }
        }
    }
}
