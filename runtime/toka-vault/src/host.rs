//! The host side of `toka:runtime/vault` (feature `host`): an agent's own namespace (named
//! after it) when `vault = true`, plus the shared namespaces in
//! `vault_shared`; nothing else.
//!
//! The quota (`vault_quota_mb`) applies to each namespace the agent writes;
//! the largest blob is `[vault] max_blob_mb`. Integrity failures reach the
//! guest as `invalid("corrupt ...")` and the operator's log as errors.

use std::sync::Arc;

use toka_capability::bindings::{types, vault};
use toka_capability::{CapError, Capability, Has, OpenCx, View};
use toka_core::{AgentConfig, RuntimeConfig};
use wasmtime::component::{HasData, Linker};

use crate::{Entry, Limits, Vault as Store, VaultKey};

/// HKDF context deriving the vault key from the master key (the CLI uses
/// the same one).
pub const KEY_CONTEXT: &str = toka_keyring::contexts::VAULT;

/// The `vault` capability.
#[derive(Debug)]
pub struct Vault {
    store: Arc<Store>,
    max_blob_bytes: u64,
}

/// What `vault`, `vault_shared` and `vault_quota_mb` grant one agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultGrant {
    own: bool,
    shared: Vec<String>,
    quota_mb: u64,
}

impl Capability for Vault {
    const NAME: &'static str = "vault";
    const AGENT_KEYS: &'static [&'static str] = &["vault", "vault_shared", "vault_quota_mb"];
    const INTERFACES: &'static [(&'static str, &'static str)] = &[(
        "toka:runtime/vault",
        "toka vault: encrypted blobs in the namespaces the `vault` grants name",
    )];
    type Grant = VaultGrant;
    type AgentState = VaultCtx;

    fn grant(agent: &AgentConfig) -> Result<Option<VaultGrant>, CapError> {
        let g = &agent.grants;
        Ok((g.vault || !g.vault_shared.is_empty()).then(|| VaultGrant {
            own: g.vault,
            shared: g.vault_shared.clone(),
            quota_mb: g.vault_quota_mb,
        }))
    }

    fn open(
        config: &RuntimeConfig,
        _granted: &[(&AgentConfig, &VaultGrant)],
        _cx: &mut OpenCx,
    ) -> Result<Self, CapError> {
        let master = toka_secrets::host::master_key(config)?;
        let Some(path) = &config.vault.path else {
            return Err(CapError::shared(
                "an agent is granted `vault` but no vault is configured: set `[vault] path`",
            ));
        };
        let key = VaultKey::from_bytes(*master.derive(KEY_CONTEXT));
        let store = Store::open(path, key)
            .map_err(|e| CapError::shared(format!("vault {}: {e}", path.display())))?;
        Ok(Vault {
            store: Arc::new(store),
            max_blob_bytes: config.vault.max_blob_mb << 20,
        })
    }

    fn for_agent(&self, agent: &AgentConfig, grant: VaultGrant) -> Result<VaultCtx, CapError> {
        Ok(VaultCtx::new(agent, grant, self.store.clone()).with_max_blob(self.max_blob_bytes))
    }

    fn link<T: Has<Self>>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
        vault::add_to_linker::<T, VaultData>(linker, |t| VaultHost(t.view()))
    }

    fn describe(grant: &VaultGrant) -> String {
        let mut spaces = Vec::new();
        if grant.own {
            spaces.push("own".to_string());
        }
        spaces.extend(grant.shared.iter().cloned());
        format!(
            "vault: {} (quota {} MiB each)",
            spaces.join(", "),
            grant.quota_mb
        )
    }
}

/// One agent's view of the vault.
pub struct VaultCtx {
    agent: Arc<str>,
    own: Option<String>,
    shared: Vec<String>,
    limits: Limits,
    vault: Arc<Store>,
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
    /// The namespaces `grant` allows `agent`, in `vault`.
    pub fn new(agent: &AgentConfig, grant: VaultGrant, vault: Arc<Store>) -> Self {
        VaultCtx {
            agent: agent.name.as_str().into(),
            own: grant.own.then(|| agent.name.clone()),
            shared: grant.shared,
            limits: Limits {
                max_blob_bytes: crate::DEFAULT_MAX_BLOB_BYTES,
                quota_bytes: grant.quota_mb << 20,
            },
            vault,
        }
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

    fn fail(&self, e: crate::Error) -> types::Error {
        use crate::Error as E;
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

/// `toka:runtime/vault` as an agent calls it: its [`View`].
#[derive(Debug)]
pub struct VaultHost<'a>(pub View<'a, Vault>);

/// The [`HasData`] marker linking [`VaultHost`].
#[derive(Debug)]
pub struct VaultData;

impl HasData for VaultData {
    type Data<'a> = VaultHost<'a>;
}

impl VaultHost<'_> {
    fn vault_ctx(&self) -> Result<&VaultCtx, types::Error> {
        self.0.state.ok_or_else(|| {
            tracing::warn!(agent = %self.0.agent, "vault access denied: agent holds no `vault` grant");
            types::Error::AccessDenied
        })
    }
}

impl vault::Host for VaultHost<'_> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use vault::Host as _;
    use wasmtime::component::ResourceTable;

    fn agent() -> AgentConfig {
        let config = RuntimeConfig::parse_str(
            "[[agents]]\nname = \"archive\"\n",
            std::path::Path::new("t.toml"),
            std::path::Path::new("."),
            &[],
        )
        .unwrap();
        config.agents[0].clone()
    }

    fn ctx(dir: &std::path::Path) -> VaultCtx {
        let store = Store::open(&dir.join("v"), VaultKey::from_bytes([9; 32])).unwrap();
        let grant = VaultGrant {
            own: true,
            shared: vec!["reports".into()],
            quota_mb: 1,
        };
        VaultCtx::new(&agent(), grant, Arc::new(store)).with_max_blob(1024)
    }

    #[test]
    fn granted_namespaces_work_and_others_are_denied() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = ctx(dir.path());
        let mut table = ResourceTable::new();
        let mut host = VaultHost(View {
            agent: "archive",
            state: Some(&ctx),
            table: &mut table,
            wait: &Default::default(),
            extensions: &mut Default::default(),
        });
        let put = |h: &mut VaultHost<'_>, ns: Option<&str>| {
            h.put(
                ns.map(Into::into),
                "a.txt".into(),
                "text/plain".into(),
                b"hi".to_vec(),
            )
        };
        assert_eq!(put(&mut host, None).unwrap().size, 2);
        assert_eq!(put(&mut host, Some("reports")).unwrap().size, 2);
        let (_, data) = host.get(None, "a.txt".into()).unwrap().unwrap();
        assert_eq!(data, b"hi");
        assert!(matches!(
            put(&mut host, Some("payroll")),
            Err(types::Error::AccessDenied)
        ));
        assert!(matches!(
            host.get(Some("payroll".into()), "a.txt".into()),
            Err(types::Error::AccessDenied)
        ));
        assert!(matches!(
            host.put(None, "big".into(), "x/y".into(), vec![0; 2048]),
            Err(types::Error::TooLarge(1024))
        ));
    }

    #[test]
    fn an_agent_without_the_grant_is_denied() {
        let mut table = ResourceTable::new();
        let mut host = VaultHost(View::<Vault> {
            agent: "stranger",
            state: None,
            table: &mut table,
            wait: &Default::default(),
            extensions: &mut Default::default(),
        });
        assert!(matches!(host.list(None), Err(types::Error::AccessDenied)));
        assert!(matches!(
            host.get(Some("reports".into()), "a".into()),
            Err(types::Error::AccessDenied)
        ));
    }
}
