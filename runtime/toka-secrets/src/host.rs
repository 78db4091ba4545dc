//! The host side of `toka:runtime/secrets` (feature `host`): reads from the
//! encrypted store, only for names the agent's `secrets` grant allows.
//!
//! "Not granted" and "no such secret" give the guest the same
//! `access-denied`, so an agent cannot probe which secrets exist. Every read
//! is logged with the agent and the name; a value is never logged.

use std::sync::Arc;

use toka_capability::bindings::{secrets, types};
use toka_capability::{CapError, CapErrorKind, Capability, Has, OpenCx, Sealed, View};
use toka_core::{AgentConfig, RuntimeConfig};
use wasmtime::component::{HasData, Linker};

use crate::{Grant, MasterKey, SealedStore, SecretStore};

/// Longest secret name echoed into a log record.
const MAX_LOGGED_NAME: usize = 256;

/// The `secrets` capability.
#[derive(Debug)]
pub struct Secrets {
    store: Arc<SecretStore>,
}

/// The master key the runtime's stores are sealed with (`[secrets]
/// key_file`, or `TOKA_MASTER_KEY`).
///
/// A key that is missing or malformed is the operator's to fix
/// ([`CapErrorKind::Config`]); a key file that cannot be read is a failure.
pub fn master_key(config: &RuntimeConfig) -> Result<MasterKey, CapError> {
    MasterKey::resolve(config.secrets.key_file.as_deref()).map_err(|e| {
        CapError::shared(format!("capabilities need the master key: {e}"))
            .with_kind(kind(e.is_operator_error()))
    })
}

/// The kind of a capability error whose cause says whether it is the
/// operator's (`is_operator_error` of the keyring's and the stores' errors).
pub fn kind(is_operator_error: bool) -> CapErrorKind {
    if is_operator_error {
        CapErrorKind::Config
    } else {
        CapErrorKind::Failure
    }
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
        // A wrong key is the operator's; a store that fails or is damaged is not.
        SecretStore::open(path, master).map_err(|e| {
            CapError::shared(format!("secret store {}: {e}", path.display()))
                .with_kind(kind(e.is_operator_error()))
        })
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

    /// `secrets = ["stripe/*", "db/password"]`: the name patterns the agent
    /// may read; absent or `[]` grants nothing.
    fn grant(agent: &AgentConfig) -> Result<Option<Grant>, CapError> {
        let patterns = agent
            .keys()
            .get_strings("secrets")
            .map_err(|e| CapError::config(agent, e))?
            .unwrap_or_default();
        if patterns.is_empty() {
            return Ok(None);
        }
        Grant::new(&patterns)
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

    /// The secret store, if one exists where the configuration puts it
    /// (auth's token key is in it too).
    fn sealed(config: &RuntimeConfig) -> Vec<Box<dyn Sealed>> {
        let path = config.secrets.path.as_deref().filter(|p| p.exists());
        path.map(|p| Box::new(SealedStore::new(p)) as Box<dyn Sealed>)
            .into_iter()
            .collect()
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
    use toka_capability::ViewParts;

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
        let mut parts = ViewParts::default();
        let mut host = SecretsHost(parts.view::<Secrets>("billing", Some(&ctx)));
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

    /// A config naming `store` (if any) and the key file `key`.
    fn config(store: Option<&std::path::Path>, key: &std::path::Path) -> RuntimeConfig {
        let path = store.map_or(String::new(), |p| format!("path = {:?}\n", p));
        RuntimeConfig::parse_str(
            &format!("[secrets]\n{path}key_file = {key:?}\n"),
            std::path::Path::new("t.toml"),
            std::path::Path::new("."),
            &[],
        )
        .unwrap()
    }

    #[test]
    fn opening_the_store_says_whose_fault_a_failure_is() {
        if std::env::var_os(toka_keyring::MASTER_KEY_ENV).is_some() {
            return; // The environment's key would win over the key files here.
        }
        let dir = tempfile::tempdir().unwrap();
        let (key, other) = (dir.path().join("master.key"), dir.path().join("other.key"));
        let master = MasterKey::create_key_file(&key).unwrap();
        MasterKey::create_key_file(&other).unwrap();
        let db = dir.path().join("s.db");
        drop(SecretStore::open(&db, master).unwrap());
        let open = |cfg: &RuntimeConfig| super::store(cfg, &mut OpenCx::default()).map(|_| ());

        // The operator's to fix: nothing configured, no key, the wrong key.
        let err = open(&config(None, &key)).unwrap_err();
        assert_eq!(err.kind, CapErrorKind::Config);
        assert!(
            err.message.contains("no secret store is configured"),
            "{err}"
        );
        let err = open(&config(Some(&db), &dir.path().join("absent.key"))).unwrap_err();
        assert_eq!(err.kind, CapErrorKind::Config, "{err}");
        let err = open(&config(Some(&db), &other)).unwrap_err();
        assert_eq!(err.kind, CapErrorKind::Config, "{err}");
        assert!(err.message.contains("wrong master key"), "{err}");

        // Not the operator's: the store cannot be read (a file in its place).
        let in_the_way = dir.path().join("file.db");
        std::fs::write(&in_the_way, b"not a database").unwrap();
        let err = open(&config(Some(&in_the_way), &key)).unwrap_err();
        assert_eq!(err.kind, CapErrorKind::Failure, "{err}");

        open(&config(Some(&db), &key)).unwrap();
    }

    #[test]
    fn the_store_takes_part_in_key_rotation_once_it_exists() {
        let dir = tempfile::tempdir().unwrap();
        let (db, key) = (dir.path().join("s.db"), dir.path().join("k"));
        assert!(Secrets::sealed(&config(None, &key)).is_empty());
        assert!(
            Secrets::sealed(&config(Some(&db), &key)).is_empty(),
            "not created yet"
        );
        drop(SecretStore::open(&db, MasterKey::generate().unwrap()).unwrap());
        let sealed = Secrets::sealed(&config(Some(&db), &key));
        let names: Vec<&str> = sealed.iter().map(|s| s.name()).collect();
        assert_eq!(names, [format!("the secret store at {}", db.display())]);
    }

    /// `[[agents]] name = "a"` plus `keys`, loaded as the runtime loads it.
    fn agent(keys: &str) -> AgentConfig {
        let config = RuntimeConfig::parse_declared(
            &format!("[[agents]]\nname = \"a\"\n{keys}\n"),
            std::path::Path::new("t.toml"),
            std::path::Path::new("."),
            &toka_core::Declared {
                sections: &[],
                agent_keys: Secrets::AGENT_KEYS,
            },
            &|_| None,
        )
        .unwrap();
        config.agents[0].clone()
    }

    #[test]
    fn the_grant_is_parsed_from_the_agents_own_key() {
        assert!(
            Secrets::grant(&agent("")).unwrap().is_none(),
            "denied by default"
        );
        assert!(Secrets::grant(&agent("secrets = []")).unwrap().is_none());
        let grant = Secrets::grant(&agent(r#"secrets = ["stripe/*", "db/password"]"#))
            .unwrap()
            .unwrap();
        assert_eq!(Secrets::describe(&grant), "secrets: stripe/*, db/password");

        let err = Secrets::grant(&agent("secrets = \"stripe/*\"")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "t.toml:3:11: agents[0].secrets: expected an array of strings, found a string"
        );
        let err = Secrets::grant(&agent(r#"secrets = ["stripe/[a-z]"]"#)).unwrap_err();
        assert!(err.is_config());
        assert!(
            err.to_string()
                .starts_with("agent `a` (t.toml:1:1): `secrets`: "),
            "{err}"
        );
    }

    #[test]
    fn an_agent_without_the_grant_is_denied() {
        let mut parts = ViewParts::default();
        let mut host = SecretsHost(parts.view::<Secrets>("stranger", None));
        assert!(matches!(
            host.get("stripe/live".into()),
            Err(types::Error::AccessDenied)
        ));
    }
}
