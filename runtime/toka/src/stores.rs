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

use std::fmt;
use std::path::Path;

use anyhow::anyhow;
use toka_core::RuntimeConfig;
use toka_keyring::{KeyFile, MASTER_KEY_ENV, MasterKey, Sealed};

use crate::exit::bad;

/// The file whose presence means a vault exists in a directory (the first
/// file `Vault::open` writes).
const VAULT_MANIFEST: &str = "manifest";

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
    toka_keyring::settle(file, &mut sealed(cfg))
        .map_err(|e| explain(e, &KeyOrigin::File(file.clone())))?;
    Ok(())
}

/// A keyring error for the operator: a store the key does not open is told
/// as every other command tells it (`wrong key: ... does not open ...`).
pub(crate) fn explain(e: toka_keyring::Error, origin: &KeyOrigin) -> anyhow::Error {
    if let toka_keyring::Error::Store { store, source, .. } = &e
        && is_wrong_key(source)
    {
        return bad(anyhow!("wrong key: {origin} does not open {store}"));
    }
    e.into()
}

fn is_wrong_key(e: &toka_keyring::BoxError) -> bool {
    if let Some(toka_secrets::Error::WrongKey) = e.downcast_ref() {
        return true;
    }
    #[cfg(feature = "vault")]
    if let Some(toka_vault::Error::WrongKey { .. }) = e.downcast_ref() {
        return true;
    }
    false
}

/// The existing stores `cfg` names, sealed under the master key, in the
/// order a rotation re-keys them: the vault (if one exists), then the
/// secret store (if it exists). A new store is one line here.
pub(crate) fn sealed(cfg: &RuntimeConfig) -> Vec<Box<dyn Sealed>> {
    let mut stores: Vec<Box<dyn Sealed>> = Vec::new();
    if let Some(dir) = existing_vault(cfg) {
        stores.push(vault(dir));
    }
    if let Some(path) = cfg.secrets.path.as_deref().filter(|p| p.exists()) {
        stores.push(Box::new(toka_secrets::SealedStore::new(path)));
    }
    stores
}

/// The vault in `dir` as the keyring sees it; a build without the `vault`
/// feature cannot open it, and the keyring then keeps a rotation from
/// stranding it.
fn vault(dir: &Path) -> Box<dyn Sealed> {
    #[cfg(feature = "vault")]
    let vault = toka_vault::SealedVault::new(dir);
    #[cfg(not(feature = "vault"))]
    let vault = toka_keyring::Unsupported::new(
        format!("the vault at {}", dir.display()),
        "build `toka` with the `vault` feature (the default)",
    );
    Box::new(vault)
}

/// The configured vault's directory, if a vault exists there.
pub(crate) fn existing_vault(cfg: &RuntimeConfig) -> Option<&Path> {
    cfg.vault.path.as_deref().filter(|dir| vault_exists(dir))
}

/// Whether a vault exists in `dir`.
pub(crate) fn vault_exists(dir: &Path) -> bool {
    dir.join(VAULT_MANIFEST).exists()
}
