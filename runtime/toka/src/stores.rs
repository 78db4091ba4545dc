//! The stores sealed under the master key, as a configuration names them:
//! where the key comes from (`TOKA_MASTER_KEY`, else `[secrets] key_file`,
//! else the default key file), which stores exist for
//! [`toka_keyring`]'s rotation to cover, and the settling of an
//! interrupted rotation before anything opens a store.
//!
//! `toka secrets` and `toka vault` get their key through [`master_key`];
//! `toka run` and `toka check` go through [`prepare_runtime`]; `toka
//! secrets rotate-key` rotates over [`sealed`]. The protocol itself (the
//! `<key file>.new`, its lock, rolling forward or back) is the keyring's.
//!
//! No store is named here: [`sealed`] is the kernel's list
//! (`toka_runtime::host::caps::sealed`), each capability naming its own
//! stores (`Capability::sealed`), so a new sealed store joins rotation with
//! its capability and no edit here.

use std::fmt;

use anyhow::anyhow;
use toka_core::RuntimeConfig;
use toka_keyring::{KeyFile, MASTER_KEY_ENV, MasterKey, Sealed};
use toka_runtime::host::caps::{self, SealedEntry};

use crate::exit::bad;

/// Where the master key came from; errors and messages name it.
#[derive(Debug, Clone)]
pub(crate) enum KeyOrigin {
    Env,
    File(KeyFile),
}

impl fmt::Display for KeyOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyOrigin::Env => f.write_str(MASTER_KEY_ENV),
            KeyOrigin::File(file) => write!(f, "key file {}", file.path().display()),
        }
    }
}

/// The configured key file, or the default one
/// ([`toka_keyring::default_key_file`]).
pub(crate) fn key_file(cfg: &RuntimeConfig) -> anyhow::Result<KeyFile> {
    match &cfg.secrets.key_file {
        Some(path) => Ok(KeyFile::new(path)),
        None => toka_keyring::default_key_file()
            .map(KeyFile::new)
            .ok_or_else(|| {
                bad(anyhow!(
                    "no master key file: set [secrets] key_file, {MASTER_KEY_ENV}, HOME or XDG_CONFIG_HOME"
                ))
            }),
    }
}

/// The master key: `TOKA_MASTER_KEY` if set, else the key file, after any
/// rotation interrupted there is settled.
pub(crate) fn master_key(cfg: &RuntimeConfig) -> anyhow::Result<(MasterKey, KeyOrigin)> {
    if let Some(key) = MasterKey::from_env()? {
        return Ok((key, KeyOrigin::Env));
    }
    let file = key_file(cfg)?;
    settle(cfg, &file)?;
    let key = file.read()?;
    Ok((key, KeyOrigin::File(file)))
}

/// Readies `cfg` for `toka run`/`toka check` as the secrets commands see
/// it: the default key file when none is configured (so the key `toka
/// secrets init` created is the one the runtime reads), and a rotation
/// interrupted before this start settled first, so the runtime never opens
/// the stores under different keys.
pub(crate) fn prepare_runtime(cfg: &mut RuntimeConfig) -> anyhow::Result<()> {
    if cfg.secrets.key_file.is_none() {
        cfg.secrets.key_file = toka_keyring::default_key_file();
    }
    // A key from the environment has no `.new` beside it to settle.
    if MasterKey::from_env()?.is_some() {
        return Ok(());
    }
    match &cfg.secrets.key_file {
        Some(path) => settle(cfg, &KeyFile::new(path)),
        None => Ok(()),
    }
}

/// Settles a rotation interrupted at `file`, if any (see
/// [`toka_keyring::settle`]).
fn settle(cfg: &RuntimeConfig, file: &KeyFile) -> anyhow::Result<()> {
    let mut stores = sealed(cfg);
    toka_keyring::settle(file, &mut stores)
        .map_err(|e| explain(e, &KeyOrigin::File(file.clone()), &stores))?;
    Ok(())
}

/// A keyring error for the operator: a store the key does not open (each
/// of `stores` judges its own errors) is told as every other command tells
/// it (`wrong key: ... does not open ...`).
pub(crate) fn explain(
    e: toka_keyring::Error,
    origin: &KeyOrigin,
    stores: &[Box<dyn Sealed>],
) -> anyhow::Error {
    if let toka_keyring::Error::Store { store, source, .. } = &e
        && stores
            .iter()
            .any(|s| s.name() == store && s.is_wrong_key(&**source))
    {
        return bad(anyhow!("wrong key: {origin} does not open {store}"));
    }
    e.into()
}

/// The existing stores `cfg` names, sealed under the master key, in the
/// order a rotation re-keys them (the kernel's: the secret store last; see
/// `toka_runtime::host::caps::sealed`).
pub(crate) fn sealed(cfg: &RuntimeConfig) -> Vec<Box<dyn Sealed>> {
    caps::sealed(cfg)
        .into_iter()
        .filter_map(|entry| match entry {
            SealedEntry::Store(store) => Some(store),
            SealedEntry::NotBuilt(name) => not_built(cfg, name),
        })
        .collect()
}

/// The store of `name`, a capability this build lacks, if the configuration
/// puts one where something exists (`[<name>] path`, see
/// [`RuntimeConfig::store_path`]): this build cannot open it, so the
/// keyring refuses a rotation that would strand it (and an interrupted one
/// it cannot decide) rather than guess. A `path` that holds no sealed store
/// gets a needless refusal in such a build, the safe side.
fn not_built(cfg: &RuntimeConfig, name: &str) -> Option<Box<dyn Sealed>> {
    let path = cfg.store_path(name).filter(|path| path.exists())?;
    Some(Box::new(toka_keyring::Unsupported::new(
        format!("the {name} store at {}", path.display()),
        format!("build `toka` with the `{name}` feature (the default)"),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &std::path::Path, text: &str) -> RuntimeConfig {
        RuntimeConfig::parse_declared(text, &dir.join("t.toml"), dir, &caps::declared(), &|_| None)
            .unwrap()
    }

    #[test]
    fn the_stores_come_from_the_registry_the_secret_store_last() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let cfg = config(dir, "[secrets]\npath = \"s.db\"\n[vault]\npath = \"v\"\n");
        assert!(sealed(&cfg).is_empty(), "no store exists yet");

        let key = || MasterKey::generate().unwrap();
        drop(toka_secrets::SecretStore::open(dir.join("s.db"), key()).unwrap());
        #[cfg(feature = "vault")]
        drop(
            toka_vault::Vault::open(&dir.join("v"), toka_vault::VaultKey::from_master(&key()))
                .unwrap(),
        );
        let names: Vec<String> = sealed(&cfg).iter().map(|s| s.name().to_owned()).collect();
        let mut expected = Vec::new();
        #[cfg(feature = "vault")]
        expected.push(format!("the vault at {}", dir.join("v").display()));
        expected.push(format!(
            "the secret store at {}",
            dir.join("s.db").display()
        ));
        assert_eq!(names, expected);
    }

    #[test]
    fn a_store_of_a_capability_this_build_lacks_blocks_rotation() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let cfg = config(dir, "[vault]\npath = \"v\"\n");
        assert!(not_built(&cfg, "vault").is_none(), "nothing there");
        assert!(not_built(&cfg, "ledger").is_none(), "nothing configured");
        std::fs::create_dir(dir.join("v")).unwrap();
        let mut store = not_built(&cfg, "vault").expect("something is there");
        assert_eq!(
            store.name(),
            format!("the vault store at {}", dir.join("v").display())
        );
        let err = store.open(&MasterKey::generate().unwrap()).unwrap_err();
        assert!(err.is::<toka_keyring::UnsupportedError>(), "{err}");
    }
}
