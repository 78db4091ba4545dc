//! The host side of `toka:runtime/vault`: an agent's own namespace (named
//! after it) when `vault = true`, plus the shared namespaces in
//! `vault_shared`; nothing else.
//!
//! The quota (`vault_quota_mb`) applies to each namespace the agent writes;
//! the largest blob is `[vault] max_blob_mb`. Integrity failures reach the
//! guest as `invalid("corrupt ...")` and the operator's log as errors.

use std::sync::Arc;

use toka_core::AgentConfig;
use toka_vault::{Entry, Limits, Vault};

use super::bindings::{types, vault};
use super::state::HostState;

/// HKDF context deriving the vault key from the master key (the CLI uses
/// the same one).
pub const KEY_CONTEXT: &str = "toka-vault/v1";

/// One agent's view of the vault.
pub struct VaultCtx {
    agent: Arc<str>,
    own: Option<String>,
    shared: Vec<String>,
    limits: Limits,
    vault: Arc<Vault>,
}

impl std::fmt::Debug for VaultCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultCtx")
            .field("agent", &self.agent)
            .field("own", &self.own)
            .field("shared", &self.shared)
            .finish_non_exhaustive()
    }
}

impl VaultCtx {
    /// The namespaces `agent`'s grants allow, in `vault`.
    pub fn new(agent: &AgentConfig, vault: Arc<Vault>) -> Result<Self, String> {
        let g = &agent.grants;
        Ok(VaultCtx {
            agent: agent.name.as_str().into(),
            own: g.vault.then(|| agent.name.clone()),
            shared: g.vault_shared.clone(),
            limits: Limits {
                max_blob_bytes: toka_vault::DEFAULT_MAX_BLOB_BYTES,
                quota_bytes: g.vault_quota_mb << 20,
            },
            vault,
        })
    }

    /// Set the largest blob (`[vault] max_blob_mb`).
    pub fn with_max_blob(mut self, bytes: u64) -> Self {
        self.limits.max_blob_bytes = bytes;
        self
    }

    fn namespace(&self, ns: Option<String>) -> Result<String, types::Error> {
        let granted = match &ns {
            None => self.own.clone(),
            Some(ns) if self.own.as_deref() == Some(ns.as_str()) || self.shared.contains(ns) => {
                Some(ns.clone())
            }
            Some(_) => None,
        };
        granted.ok_or_else(|| {
            let asked = ns
                .as_deref()
                .map_or("<own>".into(), |n| toka_core::text::bounded(n, 128));
            let asked = &*asked;
            tracing::warn!(agent = %self.agent, namespace = asked, "vault access denied: namespace not granted");
            types::Error::AccessDenied
        })
    }

    fn fail(&self, e: toka_vault::Error) -> types::Error {
        use toka_vault::Error as E;
        match e {
            E::TooLarge { .. } => types::Error::TooLarge(self.limits.max_blob_bytes),
            E::QuotaExceeded { quota, .. } => types::Error::TooLarge(quota),
            E::InvalidNamespace { .. } | E::InvalidName { .. } | E::InvalidContentType { .. } => {
                types::Error::Invalid(e.to_string())
            }
            e if e.is_corrupt() => {
                tracing::error!(agent = %self.agent, error = %e, "vault integrity check failed");
                types::Error::Invalid(format!("corrupt: {e}"))
            }
            e => {
                tracing::error!(agent = %self.agent, error = %e, "vault failed");
                types::Error::Unavailable
            }
        }
    }
}

fn entry(e: &Entry) -> vault::Entry {
    vault::Entry {
        name: e.name.clone(),
        size: e.size,
        content_type: e.content_type.clone(),
        sha256: e.sha256_hex(),
        created_ms: e.created_ms,
        updated_ms: e.updated_ms,
    }
}

impl HostState {
    fn vault_ctx(&self) -> Result<Arc<VaultCtx>, types::Error> {
        self.caps.vault.clone().ok_or_else(|| {
            tracing::warn!(agent = %self.publisher.name(), "vault access denied: agent holds no `vault` grant");
            types::Error::AccessDenied
        })
    }
}

impl vault::Host for HostState {
    fn put(
        &mut self,
        namespace: Option<String>,
        name: String,
        content_type: String,
        data: Vec<u8>,
    ) -> Result<vault::Entry, types::Error> {
        let cx = self.vault_ctx()?;
        let ns = cx.namespace(namespace)?;
        cx.vault
            .put(&ns, &name, &content_type, &data, &cx.limits)
            .map(|e| entry(&e))
            .map_err(|e| cx.fail(e))
    }

    fn get(
        &mut self,
        namespace: Option<String>,
        name: String,
    ) -> Result<Option<(vault::Entry, Vec<u8>)>, types::Error> {
        let cx = self.vault_ctx()?;
        let ns = cx.namespace(namespace)?;
        match cx.vault.get(&ns, &name) {
            Ok(found) => Ok(found.map(|(e, data)| (entry(&e), data))),
            Err(e) => Err(cx.fail(e)),
        }
    }

    fn delete(&mut self, namespace: Option<String>, name: String) -> Result<bool, types::Error> {
        let cx = self.vault_ctx()?;
        let ns = cx.namespace(namespace)?;
        cx.vault.delete(&ns, &name).map_err(|e| cx.fail(e))
    }

    fn list(&mut self, namespace: Option<String>) -> Result<Vec<vault::Entry>, types::Error> {
        let cx = self.vault_ctx()?;
        let ns = cx.namespace(namespace)?;
        cx.vault
            .list(&ns)
            .map(|es| es.iter().map(entry).collect())
            .map_err(|e| cx.fail(e))
    }
}
