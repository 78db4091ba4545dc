//! The host side of `toka:runtime/secrets` (feature `host`): reads from the
//! encrypted store, only for names the agent's `secrets` grant allows.
//!
//! "Not granted" and "no such secret" give the guest the same
//! `access-denied`, so an agent cannot probe which secrets exist. Every read
//! is logged with the agent and the name; a value is never logged.

use std::sync::Arc;

use toka_capability::bindings::{secrets, types};
use toka_capability::{CapError, Capability, Has, OpenCx, View};
use toka_core::{AgentConfig, RuntimeConfig};
use wasmtime::component::{HasData, Linker};

use crate::{Grant, MasterKey, SecretStore};

/// Longest secret name echoed into a log record.
const MAX_LOGGED_NAME: usize = 256;

/// The `secrets` capability.
#[derive(Debug)]
pub struct Secrets {
    store: Arc<SecretStore>,
}

/// The master key the runtime's stores are sealed with (`[secrets]
/// key_file`, or `TOKA_MASTER_KEY`).
pub fn master_key(config: &RuntimeConfig) -> Result<MasterKey, CapError> {
    MasterKey::resolve(config.secrets.key_file.as_deref())
        .map_err(|e| CapError::shared(format!("capabilities need the master key: {e}")))
}

/// The secret store, opened once for every capability that reads it
/// (secrets, and auth for its token key).
pub fn store(config: &RuntimeConfig, cx: &mut OpenCx) -> Result<Arc<SecretStore>, CapError> {
    cx.shared(|| {
        let master = master_key(config)?;
        let Some(path) = &config.secrets.path else {
            return Err(CapError::shared(
                "an agent is granted `secrets` (or `auth` tokens) but no secret store is configured: set `[secrets] path` (or `[event_bus] secret_store`)",
            ));
        };
        SecretStore::open(path, master)
            .map_err(|e| CapError::shared(format!("secret store {}: {e}", path.display())))
    })
}

impl Capability for Secrets {
    const NAME: &'static str = "secrets";
    const AGENT_KEYS: &'static [&'static str] = &["secrets"];
    const INTERFACES: &'static [(&'static str, &'static str)] = &[(
        "toka:runtime/secrets",
        "toka secrets: read the secrets the `secrets` grant names",
    )];
    type Grant = Grant;
    type AgentState = SecretsCtx;

    fn grant(agent: &AgentConfig) -> Result<Option<Grant>, CapError> {
        if agent.grants.secrets.is_empty() {
            return Ok(None);
        }
        Grant::new(&agent.grants.secrets)
            .map(Some)
            .map_err(|e| CapError::agent(agent, format!("`secrets`: {e}")))
    }

    fn open(
        config: &RuntimeConfig,
        _granted: &[(&AgentConfig, &Grant)],
        cx: &mut OpenCx,
    ) -> Result<Self, CapError> {
        Ok(Secrets {
            store: store(config, cx)?,
        })
    }

    fn for_agent(&self, agent: &AgentConfig, grant: Grant) -> Result<SecretsCtx, CapError> {
        Ok(SecretsCtx::new(&agent.name, grant, self.store.clone()))
    }

    fn link<T: Has<Self>>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
        secrets::add_to_linker::<T, SecretsData>(linker, |t| SecretsHost(t.view()))
    }

    fn describe(grant: &Grant) -> String {
        let patterns: Vec<&str> = grant.patterns().collect();
        format!("secrets: {}", patterns.join(", "))
    }
}

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

/// `toka:runtime/secrets` as an agent calls it: its [`View`].
#[derive(Debug)]
pub struct SecretsHost<'a>(pub View<'a, Secrets>);

/// The [`HasData`] marker linking [`SecretsHost`].
#[derive(Debug)]
pub struct SecretsData;

impl HasData for SecretsData {
    type Data<'a> = SecretsHost<'a>;
}

impl secrets::Host for SecretsHost<'_> {
    fn get(&mut self, name: String) -> Result<Vec<u8>, types::Error> {
        match self.0.state {
            Some(ctx) => ctx.get(&name),
            None => {
                tracing::warn!(agent = %self.0.agent, "secret read denied: agent holds no `secrets` grant");
                Err(types::Error::AccessDenied)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrets::Host as _;
    use wasmtime::component::ResourceTable;

    fn store(dir: &std::path::Path) -> Arc<SecretStore> {
        let store = SecretStore::open(dir.join("s"), MasterKey::generate().unwrap()).unwrap();
        store.set("stripe/live", b"sk_live_1").unwrap();
        store.set("aws/key", b"AKIA").unwrap();
        Arc::new(store)
    }

    #[test]
    fn a_granted_name_is_read_and_everything_else_is_denied_alike() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = SecretsCtx::new(
            "billing",
            Grant::new(["stripe/*"]).unwrap(),
            store(dir.path()),
        );
        let mut table = ResourceTable::new();
        let mut host = SecretsHost(View {
            agent: "billing",
            state: Some(&ctx),
            table: &mut table,
            wait: &Default::default(),
            extensions: &mut Default::default(),
        });
        assert_eq!(host.get("stripe/live".into()).unwrap(), b"sk_live_1");
        // Exists but not granted, and granted but absent: one answer.
        assert!(matches!(
            host.get("aws/key".into()),
            Err(types::Error::AccessDenied)
        ));
        assert!(matches!(
            host.get("stripe/none".into()),
            Err(types::Error::AccessDenied)
        ));
    }

    #[test]
    fn an_agent_without_the_grant_is_denied() {
        let mut table = ResourceTable::new();
        let mut host = SecretsHost(View::<Secrets> {
            agent: "stranger",
            state: None,
            table: &mut table,
            wait: &Default::default(),
            extensions: &mut Default::default(),
        });
        assert!(matches!(
            host.get("stripe/live".into()),
            Err(types::Error::AccessDenied)
        ));
    }
}
