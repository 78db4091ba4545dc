//! The host side of `toka:runtime/vault` (feature `host`): an agent's own namespace (named
//! after it) when `vault = true`, plus the shared namespaces in
//! `vault_shared`; nothing else.
//!
//! The quota (`vault_quota_mb`) applies to each namespace the agent writes;
//! the largest blob is `[vault] max_blob_mb`. Integrity failures reach the
//! guest as `invalid("corrupt ...")` and the operator's log as errors.

use std::sync::Arc;

use toka_capability::bindings::{types, vault};
use toka_capability::{CapError, Capability, Has, OpenCx, Sealed, View};
use toka_core::{AgentConfig, RuntimeConfig};
use wasmtime::component::{HasData, Linker};

use crate::{Entry, Limits, SealedVault, Vault as Store, VaultKey};

/// HKDF context deriving the vault key from the master key (the CLI uses
/// the same one).
pub const KEY_CONTEXT: &str = toka_keyring::contexts::VAULT;

/// Default `[[agents]] vault_quota_mb`: the total size, in MiB, of each
/// namespace an agent writes ([`DEFAULT_QUOTA_BYTES`](crate::DEFAULT_QUOTA_BYTES),
/// the one place it is written).
pub const DEFAULT_QUOTA_MB: u64 = crate::DEFAULT_QUOTA_BYTES >> 20;

/// Largest accepted `[[agents]] vault_quota_mb`, in MiB (1 TiB).
pub const MAX_QUOTA_MB: u64 = 1 << 20;

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

    /// `vault = true` (the agent's own namespace, named after it),
    /// `vault_shared = [...]` (further namespaces) and `vault_quota_mb`
    /// (default [`DEFAULT_QUOTA_MB`], at most [`MAX_QUOTA_MB`]); neither of
    /// the first two grants nothing. Every key is checked even then.
    fn grant(agent: &AgentConfig) -> Result<Option<VaultGrant>, CapError> {
        let keys = agent.keys();
        let located = |e| CapError::config(agent, e);
        let own = keys.get_bool("vault").map_err(located)?.unwrap_or(false);
        let shared = keys
            .get_strings("vault_shared")
            .map_err(located)?
            .unwrap_or_default();
        let quota_mb = keys
            .get_uint("vault_quota_mb", 1, MAX_QUOTA_MB)
            .map_err(located)?
            .unwrap_or(DEFAULT_QUOTA_MB);
        Ok((own || !shared.is_empty()).then_some(VaultGrant {
            own,
            shared,
            quota_mb,
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
        // A wrong key is the operator's; a vault that fails, is damaged or
        // is held by another process is not.
        let store = Store::open(path, key).map_err(|e| {
            CapError::shared(format!("vault {}: {e}", path.display()))
                .with_kind(toka_secrets::host::kind(e.is_operator_error()))
        })?;
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

    /// The vault, if one exists where `[vault] path` puts it.
    fn sealed(config: &RuntimeConfig) -> Vec<Box<dyn Sealed>> {
        let dir = config
            .vault
            .path
            .as_deref()
            .filter(|dir| Store::exists(dir));
        dir.map(|dir| Box::new(SealedVault::new(dir)) as Box<dyn Sealed>)
            .into_iter()
            .collect()
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
    use toka_capability::ViewParts;
    use vault::Host as _;

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
        let mut parts = ViewParts::default();
        let mut host = VaultHost(parts.view::<Vault>("archive", Some(&ctx)));
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
    fn the_vault_takes_part_in_key_rotation_once_it_exists() {
        let dir = tempfile::tempdir().unwrap();
        let vault = dir.path().join("v");
        let config = |text: &str| {
            RuntimeConfig::parse_str(text, std::path::Path::new("t.toml"), dir.path(), &[]).unwrap()
        };
        let configured = config("[vault]\npath = \"v\"\n");
        assert!(Vault::sealed(&config("")).is_empty());
        std::fs::create_dir(&vault).unwrap();
        assert!(
            Vault::sealed(&configured).is_empty(),
            "a directory is not a vault"
        );
        drop(Store::open(&vault, VaultKey::from_bytes([3; 32])).unwrap());
        let sealed = Vault::sealed(&configured);
        let names: Vec<&str> = sealed.iter().map(|s| s.name()).collect();
        assert_eq!(names, [format!("the vault at {}", vault.display())]);
    }

    #[test]
    fn opening_the_vault_says_whose_fault_a_failure_is() {
        use toka_capability::CapErrorKind;
        use toka_secrets::MasterKey;

        if std::env::var_os(toka_keyring::MASTER_KEY_ENV).is_some() {
            return; // The environment's key would win over the key files here.
        }
        let dir = tempfile::tempdir().unwrap();
        let (key, other) = (dir.path().join("master.key"), dir.path().join("other.key"));
        let master = MasterKey::create_key_file(&key).unwrap();
        MasterKey::create_key_file(&other).unwrap();
        let vault = dir.path().join("v");
        drop(Store::open(&vault, VaultKey::from_bytes(*master.derive(KEY_CONTEXT))).unwrap());
        let open = |path: Option<&std::path::Path>, key: &std::path::Path| {
            let path = path.map_or(String::new(), |p| format!("[vault]\npath = {p:?}\n"));
            let cfg = RuntimeConfig::parse_str(
                &format!("[secrets]\nkey_file = {key:?}\n{path}"),
                std::path::Path::new("t.toml"),
                std::path::Path::new("."),
                &[],
            )
            .unwrap();
            Vault::open(&cfg, &[], &mut OpenCx::default()).map(|_| ())
        };

        let err = open(None, &key).unwrap_err();
        assert_eq!(err.kind, CapErrorKind::Config);
        assert!(err.message.contains("no vault is configured"), "{err}");
        let err = open(Some(&vault), &other).unwrap_err();
        assert_eq!(err.kind, CapErrorKind::Config, "{err}");
        assert!(err.message.contains("wrong key"), "{err}");

        // A damaged manifest is not the operator's to fix in the config.
        std::fs::write(vault.join("manifest"), b"garbage").unwrap();
        let err = open(Some(&vault), &key).unwrap_err();
        assert_eq!(err.kind, CapErrorKind::Failure, "{err}");
    }

    /// `[[agents]] name = "a"` plus `keys`, loaded as the runtime loads it.
    fn agent_with(keys: &str) -> AgentConfig {
        let config = RuntimeConfig::parse_declared(
            &format!("[[agents]]\nname = \"a\"\n{keys}\n"),
            std::path::Path::new("t.toml"),
            std::path::Path::new("."),
            &toka_core::Declared {
                sections: &[],
                agent_keys: Vault::AGENT_KEYS,
            },
            &|_| None,
        )
        .unwrap();
        config.agents[0].clone()
    }

    #[test]
    fn the_grant_is_parsed_from_the_agents_own_keys_with_one_default_quota() {
        let grant = |keys: &str| Vault::grant(&agent_with(keys));
        assert_eq!(grant("").unwrap(), None, "denied by default");
        assert_eq!(grant("vault = false\nvault_shared = []").unwrap(), None);
        assert_eq!(
            grant("vault_quota_mb = 8").unwrap(),
            None,
            "a quota grants nothing"
        );
        let own = grant("vault = true").unwrap().unwrap();
        assert_eq!(own.quota_mb, 64);
        assert_eq!(DEFAULT_QUOTA_MB << 20, crate::DEFAULT_QUOTA_BYTES);
        let g = grant("vault_shared = [\"reports\"]\nvault_quota_mb = 8")
            .unwrap()
            .unwrap();
        assert_eq!(
            g,
            VaultGrant {
                own: false,
                shared: vec!["reports".into()],
                quota_mb: 8
            }
        );
        assert_eq!(Vault::describe(&g), "vault: reports (quota 8 MiB each)");

        let err = grant("vault = true\nvault_quota_mb = 0").unwrap_err();
        assert!(err.is_config());
        assert_eq!(
            err.to_string(),
            format!(
                "t.toml:4:18: agents[0].vault_quota_mb: must be between 1 and {MAX_QUOTA_MB}, got 0"
            )
        );
        let err = grant("vault = \"yes\"").unwrap_err();
        assert_eq!(
            err.to_string(),
            "t.toml:3:9: agents[0].vault: expected a boolean, found a string"
        );
    }

    /// The runtime passes `[vault] max_blob_mb << 20` on every call, so the
    /// core's default must be this crate's.
    #[test]
    fn the_blob_size_default_is_the_cores() {
        assert_eq!(
            toka_core::config::DEFAULT_MAX_BLOB_MB << 20,
            crate::DEFAULT_MAX_BLOB_BYTES
        );
    }

    #[test]
    fn an_agent_without_the_grant_is_denied() {
        let mut parts = ViewParts::default();
        let mut host = VaultHost(parts.view::<Vault>("stranger", None));
        assert!(matches!(host.list(None), Err(types::Error::AccessDenied)));
        assert!(matches!(
            host.get(Some("reports".into()), "a".into()),
            Err(types::Error::AccessDenied)
        ));
    }
}
