//! [`SealedStore`]: the secret store as the master key's rotation
//! ([`toka_keyring::rotate`], [`toka_keyring::settle`]) sees it.

use std::fmt;
use std::path::{Path, PathBuf};

use toka_keyring::{BoxError, MasterKey, Sealed};

use crate::error::Error;
use crate::store::SecretStore;

/// The secret store at a path, opened only when the rotation protocol asks
/// and then held (with sled's lock on the directory) until dropped.
pub struct SealedStore {
    path: PathBuf,
    name: String,
    store: Option<SecretStore>,
}

impl SealedStore {
    /// The (existing) store at `path`; nothing is opened yet.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        let name = format!("the secret store at {}", path.display());
        Self {
            path,
            name,
            store: None,
        }
    }

    /// The store's directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl fmt::Debug for SealedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealedStore")
            .field("path", &self.path)
            .field("open", &self.store.is_some())
            .finish()
    }
}

impl Sealed for SealedStore {
    fn name(&self) -> &str {
        &self.name
    }

    fn counted(&self) -> &str {
        "secret(s)"
    }

    fn is_wrong_key(&self, error: &(dyn std::error::Error + 'static)) -> bool {
        matches!(error.downcast_ref(), Some(Error::WrongKey))
    }

    fn sealed_with(&self, key: &MasterKey) -> Result<bool, BoxError> {
        if let Some(store) = &self.store {
            return Ok(store.is_sealed_with(key)?);
        }
        // Opening checks the key; the store is closed again on return.
        match SecretStore::open_with(&self.path, key) {
            Ok(_) => Ok(true),
            Err(Error::WrongKey) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    fn open(&mut self, key: &MasterKey) -> Result<(), BoxError> {
        // Closed first: sled's lock is per directory, this process included.
        self.store = None;
        self.store = Some(SecretStore::open_with(&self.path, key)?);
        Ok(())
    }

    fn rekey(&mut self, old: &MasterKey, new: &MasterKey) -> Result<usize, BoxError> {
        let store = match &mut self.store {
            Some(store) => store,
            None => self.store.insert(SecretStore::open_with(&self.path, old)?),
        };
        Ok(store.rotate_to(new)?)
    }

    fn reset_if_empty(&mut self) -> Result<Option<String>, BoxError> {
        let store = self.store.as_ref().ok_or("the secret store is not open")?;
        match store.reset_if_empty()? {
            Some(count) => Ok(Some(format!("{count} secret(s)"))),
            None => {
                self.store = None;
                Ok(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;

    use super::*;

    fn key(byte: u8) -> MasterKey {
        MasterKey::from_base64(&STANDARD.encode([byte; 32])).unwrap()
    }

    #[test]
    fn checks_rekeys_and_reports_contents_through_the_trait() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let store = SecretStore::open(&path, key(1)).unwrap();
        store.set("x", b"1").unwrap();
        drop(store);

        let mut sealed = SealedStore::new(&path);
        assert!(sealed.sealed_with(&key(1)).unwrap());
        assert!(!sealed.sealed_with(&key(2)).unwrap());
        assert_eq!(sealed.rekey(&key(1), &key(2)).unwrap(), 1);
        assert!(sealed.sealed_with(&key(2)).unwrap(), "the open store");
        assert_eq!(
            sealed.reset_if_empty().unwrap().as_deref(),
            Some("1 secret(s)")
        );
        drop(sealed);
        let mut sealed = SealedStore::new(&path);
        assert!(sealed.sealed_with(&key(2)).unwrap());
        assert_eq!(sealed.counted(), "secret(s)");
        let wrong = sealed.open(&key(1)).unwrap_err();
        assert!(sealed.is_wrong_key(&*wrong), "{wrong}");
        assert!(!sealed.is_wrong_key(&std::io::Error::other("disk")));
        assert!(!sealed.sealed_with(&key(1)).unwrap());
        let store = SecretStore::open(&path, key(2)).unwrap();
        assert_eq!(store.get("x").unwrap().unwrap().expose(), b"1");
    }

    #[test]
    fn an_empty_store_is_reset_to_follow_the_next_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let mut sealed = SealedStore::new(&path);
        sealed.open(&key(1)).unwrap();
        assert_eq!(sealed.reset_if_empty().unwrap(), None);
        assert!(sealed.sealed_with(&key(2)).unwrap(), "any key opens it now");
        assert!(!sealed.sealed_with(&key(1)).unwrap(), "then only that one");
    }
}
