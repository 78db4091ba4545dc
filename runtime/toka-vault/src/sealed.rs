//! [`SealedVault`]: the vault as the master key's rotation
//! ([`toka_keyring::rotate`], [`toka_keyring::settle`]) sees it.

use std::fs;
use std::path::{Path, PathBuf};

use toka_keyring::{BoxError, MasterKey, Sealed};

use crate::vault::MANIFEST_FILE;
use crate::{Error, Vault, VaultKey, durable};

/// The vault in a directory, its key derived from the master key
/// ([`VaultKey::from_master`]); opened only when the rotation protocol asks,
/// then held (with the directory's lock) until dropped.
#[derive(Debug)]
pub struct SealedVault {
    dir: PathBuf,
    name: String,
    vault: Option<Vault>,
}

impl SealedVault {
    /// The (existing) vault in `dir`; nothing is opened yet.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        let name = format!("the vault at {}", dir.display());
        Self {
            dir,
            name,
            vault: None,
        }
    }

    /// The vault directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Sealed for SealedVault {
    fn name(&self) -> &str {
        &self.name
    }

    fn counted(&self) -> &str {
        "vault blob(s)"
    }

    fn is_wrong_key(&self, error: &(dyn std::error::Error + 'static)) -> bool {
        matches!(error.downcast_ref(), Some(Error::WrongKey { .. }))
    }

    /// Reads only the manifest's key check: no lock, nothing changed (see
    /// [`Vault::key_matches`]). No vault there is under no key.
    fn sealed_with(&self, key: &MasterKey) -> Result<bool, BoxError> {
        let matches = Vault::key_matches(&self.dir, &VaultKey::from_master(key))?;
        Ok(matches == Some(true))
    }

    fn open(&mut self, key: &MasterKey) -> Result<(), BoxError> {
        // Closed first: the directory's lock refuses a second handle.
        self.vault = None;
        self.vault = Some(Vault::open(&self.dir, VaultKey::from_master(key))?);
        Ok(())
    }

    /// Crash-safe on its own (see [`Vault::rekey`]); returns how many blobs
    /// the vault holds.
    fn rekey(&mut self, old: &MasterKey, new: &MasterKey) -> Result<usize, BoxError> {
        let vault = match &mut self.vault {
            Some(vault) => vault,
            None => self
                .vault
                .insert(Vault::open(&self.dir, VaultKey::from_master(old))?),
        };
        Ok(vault.rekey(VaultKey::from_master(new))?)
    }

    /// An empty vault loses its manifest, so that it is created anew under
    /// whichever key opens it next; one holding blobs names its namespaces.
    fn reset_if_empty(&mut self) -> Result<Option<String>, BoxError> {
        let vault = self.vault.as_ref().ok_or("the vault is not open")?;
        let namespaces = vault.namespaces()?;
        if !namespaces.is_empty() {
            return Ok(Some(format!(
                "blobs (namespaces: {})",
                namespaces.join(", ")
            )));
        }
        // Removed while the vault is still open, so no other process writes
        // to it in between.
        let manifest = self.dir.join(MANIFEST_FILE);
        let context = || format!("resetting the empty vault at {}", self.dir.display());
        fs::remove_file(&manifest).map_err(|e| Error::io(context(), e))?;
        durable::sync_dir(&self.dir).map_err(|e| Error::io(context(), e))?;
        self.vault = None;
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Limits;

    fn key(byte: u8) -> MasterKey {
        // Keys are deliberately not `Clone`: the same bytes, parsed again.
        let encoded = match byte {
            1 => "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=",
            _ => "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=",
        };
        MasterKey::from_base64(encoded).unwrap()
    }

    #[test]
    fn checks_rekeys_and_resets_through_the_trait() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("v");
        let vault = Vault::open(&dir, VaultKey::from_master(&key(1))).unwrap();
        vault
            .put("ns", "a", "text/plain", b"hello", &Limits::default())
            .unwrap();
        drop(vault);

        let mut sealed = SealedVault::new(&dir);
        assert!(sealed.sealed_with(&key(1)).unwrap());
        assert!(!sealed.sealed_with(&key(2)).unwrap());
        assert_eq!(sealed.counted(), "vault blob(s)");
        let wrong = sealed.open(&key(2)).unwrap_err();
        assert!(sealed.is_wrong_key(&*wrong), "{wrong}");
        assert!(!sealed.is_wrong_key(&std::io::Error::other("disk")));
        assert_eq!(sealed.rekey(&key(1), &key(2)).unwrap(), 1);
        assert!(sealed.sealed_with(&key(2)).unwrap());
        assert_eq!(
            sealed.reset_if_empty().unwrap().as_deref(),
            Some("blobs (namespaces: ns)")
        );
        drop(sealed);
        let vault = Vault::open(&dir, VaultKey::from_master(&key(2))).unwrap();
        assert_eq!(vault.get("ns", "a").unwrap().unwrap().1, b"hello");
        vault.delete("ns", "a").unwrap();
        drop(vault);

        let mut sealed = SealedVault::new(&dir);
        sealed.open(&key(2)).unwrap();
        assert_eq!(sealed.reset_if_empty().unwrap(), None);
        assert!(!sealed.sealed_with(&key(2)).unwrap(), "no vault left");
        drop(sealed);
        Vault::open(&dir, VaultKey::from_master(&key(1))).expect("created anew under any key");
    }
}
