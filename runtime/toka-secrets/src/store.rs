//! The encrypted store: a sled database of sealed records.
//!
//! Keys in the sled tree are `secret:<name>` for secrets and `meta:*` for
//! the store's own records; names cannot contain `:`, so the two never
//! collide.

use std::convert::Infallible;
use std::fmt;
use std::path::{Path, PathBuf};

use chacha20poly1305::{KeyInit, XChaCha20Poly1305};
use sled::transaction::{ConflictableTransactionResult, TransactionError};
use toka_keyring::{MasterKey, contexts};

use crate::error::{Error, Result};
use crate::name::validate_name;
use crate::record::{self, OpenError};
use crate::value::SecretValue;

const SECRET_PREFIX: &[u8] = b"secret:";
const KEY_CHECK: &[u8] = b"meta:key-check";
/// How the key-check record is named in errors; not a valid secret name,
/// so it cannot be confused with one.
const KEY_CHECK_LABEL: &str = "<key-check>";
const KEY_CHECK_AD: &[u8] = b"toka:key-check";
const KEY_CHECK_MARKER: &[u8] = b"toka-secrets key-check v1";
/// Secrets are small; sled's 1 GiB default would only be wasted address space.
const CACHE_CAPACITY: u64 = 8 << 20;

/// The encrypted secret store.
///
/// Values are sealed with XChaCha20-Poly1305 under a key derived from the
/// [`MasterKey`], with the secret's name as associated data, so a record
/// copied under another name fails to open. Every write is flushed to disk
/// before returning.
///
/// sled locks its directory, so one process at a time may hold a store
/// open. The handle is `Send + Sync`; share it behind an `Arc`.
pub struct SecretStore {
    db: sled::Db,
    cipher: XChaCha20Poly1305,
    path: PathBuf,
}

impl SecretStore {
    /// Opens the store at `path`, creating it (a directory, mode 0700 on
    /// unix) if missing.
    ///
    /// A new store gets a key-check record sealed under `key`; an existing
    /// one must open with it, else [`Error::WrongKey`].
    pub fn open(path: impl AsRef<Path>, key: MasterKey) -> Result<Self> {
        Self::open_with(path.as_ref(), &key)
    }

    /// [`SecretStore::open`] with a borrowed key.
    pub(crate) fn open_with(path: &Path, key: &MasterKey) -> Result<Self> {
        create_private_dir(path)?;
        crate::snapshot::discard_torn(path).map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })?;
        let db = open_db(path)?;
        let store = Self {
            db,
            cipher: cipher_for(key),
            path: path.to_owned(),
        };
        store.check_key()?;
        Ok(store)
    }

    /// The directory the store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stores `value` under `name`, replacing any previous value, and
    /// flushes it to disk before returning.
    pub fn set(&self, name: &str, value: &[u8]) -> Result<()> {
        validate_name(name)?;
        let record = record::seal(&self.cipher, &secret_ad(name), value, name)?;
        self.db.insert(secret_key(name), record)?;
        self.db.flush()?;
        Ok(())
    }

    /// The value stored under `name`, if any.
    pub fn get(&self, name: &str) -> Result<Option<SecretValue>> {
        validate_name(name)?;
        match self.db.get(secret_key(name))? {
            Some(record) => self.open_secret(name, &record).map(Some),
            None => Ok(None),
        }
    }

    /// The names of all stored secrets, sorted. Values are not decrypted.
    pub fn list(&self) -> Result<Vec<String>> {
        // sled iterates in key order, and names are ASCII, so this is
        // already sorted.
        self.db
            .scan_prefix(SECRET_PREFIX)
            .keys()
            .map(|key| {
                let key = key?;
                let name = &key[SECRET_PREFIX.len()..];
                String::from_utf8(name.to_vec()).map_err(|_| Error::Corrupt {
                    name: String::from_utf8_lossy(name).into_owned(),
                })
            })
            .collect()
    }

    /// Deletes `name`, flushing before returning. Returns whether it existed.
    pub fn remove(&self, name: &str) -> Result<bool> {
        validate_name(name)?;
        let existed = self.db.remove(secret_key(name))?.is_some();
        if existed {
            self.db.flush()?;
        }
        Ok(existed)
    }

    /// Re-encrypts every secret and the key-check record under `new`, and
    /// returns how many secrets were re-encrypted.
    ///
    /// # Guarantee
    ///
    /// All-or-nothing against a crash (including SIGKILL) at any point:
    /// afterwards the store opens with exactly one of the two keys, and with
    /// that key every secret reads back; never a mix. This holds because
    /// every record is re-sealed in memory first (a record that does not
    /// open aborts the rotation before anything is written), then all of
    /// them, key-check included, are written in one sled transaction, which
    /// sled logs as a single batch that recovery replays entirely or not at
    /// all. When this returns `Ok` the new key is flushed to disk.
    ///
    /// If it returns `Err` after the transaction committed (only the final
    /// flush can fail that late), this handle already uses the new key and
    /// the disk may hold either; try both keys on reopening.
    ///
    /// # Keeping the new key safe
    ///
    /// Persist the new key *before* rotating, or a crash in between loses
    /// every secret: e.g. [`MasterKey::create_key_file`] at a temporary
    /// path, rotate, then rename it over the old key file.
    pub fn rotate_key(&mut self, new: MasterKey) -> Result<usize> {
        self.rotate_to(&new)
    }

    /// [`SecretStore::rotate_key`] with a borrowed key.
    pub(crate) fn rotate_to(&mut self, new: &MasterKey) -> Result<usize> {
        let new_cipher = cipher_for(new);
        let mut batch = sled::Batch::default();
        let mut count = 0;
        for entry in self.db.scan_prefix(SECRET_PREFIX) {
            let (key, record) = entry?;
            let name =
                std::str::from_utf8(&key[SECRET_PREFIX.len()..]).map_err(|_| Error::Corrupt {
                    name: String::from_utf8_lossy(&key[SECRET_PREFIX.len()..]).into_owned(),
                })?;
            let value = self.open_secret(name, &record)?;
            let sealed = record::seal(&new_cipher, &secret_ad(name), value.expose(), name)?;
            batch.insert(key, sealed);
            count += 1;
        }
        batch.insert(
            KEY_CHECK,
            record::seal(&new_cipher, KEY_CHECK_AD, KEY_CHECK_MARKER, KEY_CHECK_LABEL)?,
        );

        // `&mut self` keeps this handle's writers out between the scan and
        // the commit, and sled's directory lock keeps other processes out.
        self.db
            .transaction(|tx| -> ConflictableTransactionResult<(), Infallible> {
                tx.apply_batch(&batch)?;
                Ok(())
            })
            .map_err(|e| match e {
                TransactionError::Abort(never) => match never {},
                TransactionError::Storage(e) => Error::Storage(e),
            })?;
        // In memory the store is now under the new key, whatever the flush does.
        self.cipher = new_cipher;
        self.db.flush()?;
        Ok(count)
    }

    /// Whether `key` is the key this store is sealed under (its key-check
    /// record opens with it).
    pub(crate) fn is_sealed_with(&self, key: &MasterKey) -> Result<bool> {
        let Some(record) = self.db.get(KEY_CHECK)? else {
            return Err(Error::MissingKeyCheck);
        };
        match record::open(&cipher_for(key), KEY_CHECK_AD, &record) {
            Ok(_) => Ok(true),
            Err(OpenError::Invalid) => Ok(false),
            Err(OpenError::Unsupported(version)) => Err(Error::UnsupportedFormat {
                name: KEY_CHECK_LABEL.to_owned(),
                version,
            }),
        }
    }

    /// If the store holds no secret, removes its key-check record, so that
    /// whichever key opens it next seals it anew, and returns `None`; else
    /// changes nothing and returns how many secrets it holds.
    pub(crate) fn reset_if_empty(&self) -> Result<Option<usize>> {
        let count = self.db.scan_prefix(SECRET_PREFIX).count();
        if count > 0 {
            return Ok(Some(count));
        }
        self.db.remove(KEY_CHECK)?;
        self.db.flush()?;
        Ok(None)
    }

    fn check_key(&self) -> Result<()> {
        if let Some(record) = self.db.get(KEY_CHECK)? {
            return match record::open(&self.cipher, KEY_CHECK_AD, &record) {
                Ok(marker) if marker.as_slice() == KEY_CHECK_MARKER => Ok(()),
                // Authentic under this key yet not our marker: not a key
                // problem, a bug or a foreign writer.
                Ok(_) => Err(Error::Corrupt {
                    name: KEY_CHECK_LABEL.to_owned(),
                }),
                Err(OpenError::Invalid) => Err(Error::WrongKey),
                Err(OpenError::Unsupported(version)) => Err(Error::UnsupportedFormat {
                    name: KEY_CHECK_LABEL.to_owned(),
                    version,
                }),
            };
        }
        if self.db.scan_prefix(SECRET_PREFIX).next().is_some() {
            return Err(Error::MissingKeyCheck);
        }
        let record = record::seal(
            &self.cipher,
            KEY_CHECK_AD,
            KEY_CHECK_MARKER,
            KEY_CHECK_LABEL,
        )?;
        self.db.insert(KEY_CHECK, record)?;
        self.db.flush()?;
        Ok(())
    }

    fn open_secret(&self, name: &str, record: &[u8]) -> Result<SecretValue> {
        match record::open(&self.cipher, &secret_ad(name), record) {
            Ok(plaintext) => Ok(SecretValue::new(plaintext)),
            Err(OpenError::Invalid) => Err(Error::Corrupt {
                name: name.to_owned(),
            }),
            Err(OpenError::Unsupported(version)) => Err(Error::UnsupportedFormat {
                name: name.to_owned(),
                version,
            }),
        }
    }
}

impl fmt::Debug for SecretStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn cipher_for(key: &MasterKey) -> XChaCha20Poly1305 {
    // A subkey, not the master key itself, so the subkeys other
    // capabilities derive stay independent of it.
    XChaCha20Poly1305::new((&*key.derive(contexts::SECRETS)).into())
}

fn secret_key(name: &str) -> Vec<u8> {
    [SECRET_PREFIX, name.as_bytes()].concat()
}

/// Binds a record to its name. The prefix keeps secret records apart from
/// the key-check record's associated data.
fn secret_ad(name: &str) -> Vec<u8> {
    [b"toka:secret:".as_slice(), name.as_bytes()].concat()
}

/// Names alone are worth hiding from other local users, so a store we
/// create is private to its owner. An existing directory is left as the
/// operator set it.
fn create_private_dir(path: &Path) -> Result<()> {
    if path.exists() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(path).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })
}

/// How long [`open_db`] waits for another handle's lock on the store.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Open the sled database, waiting up to [`LOCK_WAIT`] while another handle
/// still holds its lock: sled releases it from a background thread a moment
/// after the handle is dropped, so a store closed and reopened at once (a
/// CLI command, then the runtime) would otherwise be refused. A store held
/// for longer (by another running process) is still refused.
fn open_db(path: &Path) -> Result<sled::Db> {
    let started = std::time::Instant::now();
    let mut pause = std::time::Duration::from_millis(1);
    loop {
        match sled::Config::new()
            .path(path)
            .cache_capacity(CACHE_CAPACITY)
            .open()
        {
            Err(sled::Error::Io(e)) if locked(&e) && started.elapsed() < LOCK_WAIT => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(std::time::Duration::from_millis(50));
            }
            other => return Ok(other?),
        }
    }
}

/// Whether opening failed on another handle's lock. sled 0.34 reports it
/// either as `WouldBlock` or wrapped as `Other` with the message
/// "could not acquire lock on ...", depending on where the lock was taken.
fn locked(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::WouldBlock
        || e.to_string().starts_with("could not acquire lock")
}

#[cfg(test)]
mod tests {
    use std::fs;

    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;

    use super::*;

    fn key(byte: u8) -> MasterKey {
        MasterKey::from_base64(&STANDARD.encode([byte; 32])).unwrap()
    }

    fn new_store(byte: u8) -> (tempfile::TempDir, SecretStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SecretStore::open(dir.path().join("db"), key(byte)).unwrap();
        (dir, store)
    }

    fn reopen(dir: &tempfile::TempDir, byte: u8) -> Result<SecretStore> {
        SecretStore::open(dir.path().join("db"), key(byte))
    }

    #[test]
    fn round_trip_survives_reopen() {
        let (dir, store) = new_store(1);
        store.set("stripe/live", b"sk_live_123").unwrap();
        store.set("empty", b"").unwrap();
        assert_eq!(
            store.get("stripe/live").unwrap().unwrap().expose(),
            b"sk_live_123"
        );
        assert_eq!(store.get("empty").unwrap().unwrap().expose(), b"");
        assert!(store.get("missing").unwrap().is_none());
        store.set("stripe/live", b"sk_live_456").unwrap();
        drop(store);

        let store = reopen(&dir, 1).unwrap();
        assert_eq!(
            store.get("stripe/live").unwrap().unwrap().expose(),
            b"sk_live_456"
        );
    }

    #[test]
    fn wrong_key_is_a_typed_error() {
        let (dir, store) = new_store(1);
        store.set("a", b"x").unwrap();
        drop(store);
        assert!(matches!(reopen(&dir, 2), Err(Error::WrongKey)));
        // Even an empty store remembers its key.
        let (dir, store) = new_store(1);
        drop(store);
        assert!(matches!(reopen(&dir, 2), Err(Error::WrongKey)));
    }

    #[test]
    fn record_moved_under_another_name_is_corrupt() {
        let (_dir, store) = new_store(1);
        store.set("db/password", b"hunter2").unwrap();
        let record = store.db.get(secret_key("db/password")).unwrap().unwrap();
        store.db.insert(secret_key("db/other"), record).unwrap();
        match store.get("db/other") {
            Err(Error::Corrupt { name }) => assert_eq!(name, "db/other"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn tampered_byte_is_corrupt_not_a_panic() {
        let (_dir, store) = new_store(1);
        store.set("a", b"some value").unwrap();
        let record = store.db.get(secret_key("a")).unwrap().unwrap();
        for i in [1, 10, 30, record.len() - 1] {
            let mut bad = record.to_vec();
            bad[i] ^= 0x80;
            store.db.insert(secret_key("a"), bad).unwrap();
            assert!(
                matches!(store.get("a"), Err(Error::Corrupt { .. })),
                "byte {i}"
            );
        }
        store.db.insert(secret_key("a"), &record[..5]).unwrap();
        assert!(matches!(store.get("a"), Err(Error::Corrupt { .. })));
        let mut future = record.to_vec();
        future[0] = 9;
        store.db.insert(secret_key("a"), future).unwrap();
        assert!(matches!(
            store.get("a"),
            Err(Error::UnsupportedFormat { version: 9, .. })
        ));
    }

    #[test]
    fn list_shows_sorted_names_only() {
        let (_dir, store) = new_store(1);
        assert!(store.list().unwrap().is_empty());
        for name in ["z", "b/c", "a", "b/a"] {
            store.set(name, b"value-not-listed").unwrap();
        }
        assert_eq!(store.list().unwrap(), ["a", "b/a", "b/c", "z"]);
    }

    #[test]
    fn remove_deletes() {
        let (dir, store) = new_store(1);
        store.set("a", b"1").unwrap();
        store.set("b", b"2").unwrap();
        assert!(store.remove("a").unwrap());
        assert!(!store.remove("a").unwrap());
        assert!(store.get("a").unwrap().is_none());
        drop(store);
        let store = reopen(&dir, 1).unwrap();
        assert_eq!(store.list().unwrap(), ["b"]);
    }

    #[test]
    fn rotation_switches_keys_and_keeps_values() {
        let (dir, mut store) = new_store(1);
        store.set("a", b"alpha").unwrap();
        store.set("b/c", b"beta").unwrap();
        assert_eq!(store.rotate_key(key(2)).unwrap(), 2);
        // The live handle keeps working under the new key.
        assert_eq!(store.get("a").unwrap().unwrap().expose(), b"alpha");
        store.set("d", b"delta").unwrap();
        drop(store);

        assert!(matches!(reopen(&dir, 1), Err(Error::WrongKey)));
        let store = reopen(&dir, 2).unwrap();
        assert_eq!(store.list().unwrap(), ["a", "b/c", "d"]);
        assert_eq!(store.get("a").unwrap().unwrap().expose(), b"alpha");
        assert_eq!(store.get("b/c").unwrap().unwrap().expose(), b"beta");
        assert_eq!(store.get("d").unwrap().unwrap().expose(), b"delta");
    }

    #[test]
    fn rotation_of_a_damaged_store_changes_nothing() {
        let (dir, mut store) = new_store(1);
        store.set("a", b"alpha").unwrap();
        store.set("b", b"beta").unwrap();
        let mut bad = store.db.get(secret_key("b")).unwrap().unwrap().to_vec();
        bad[5] ^= 1;
        store.db.insert(secret_key("b"), bad).unwrap();
        assert!(matches!(
            store.rotate_key(key(2)),
            Err(Error::Corrupt { .. })
        ));
        assert_eq!(store.get("a").unwrap().unwrap().expose(), b"alpha");
        drop(store);
        assert!(matches!(reopen(&dir, 2), Err(Error::WrongKey)));
        assert!(reopen(&dir, 1).is_ok());
    }

    #[test]
    fn missing_key_check_is_refused() {
        let (dir, store) = new_store(1);
        store.set("a", b"x").unwrap();
        store.db.remove(KEY_CHECK).unwrap();
        store.db.flush().unwrap();
        drop(store);
        assert!(matches!(reopen(&dir, 1), Err(Error::MissingKeyCheck)));
    }

    #[test]
    fn invalid_names_are_rejected_everywhere() {
        let (_dir, store) = new_store(1);
        for name in ["", "/a", "a/../b", "a b", "a:b"] {
            let invalid = |r: Result<_>| matches!(r, Err(Error::InvalidName { .. }));
            assert!(invalid(store.set(name, b"x").map(|_| ())), "{name:?}");
            assert!(invalid(store.get(name).map(|_| ())), "{name:?}");
            assert!(invalid(store.remove(name).map(|_| ())), "{name:?}");
        }
    }

    #[test]
    fn plaintext_never_reaches_disk() {
        const SECRET: &[u8] = b"PLAINTEXT-canary-9f2c1e7a-d0e5-4b3f";
        let (dir, store) = new_store(1);
        store.set("canary", SECRET).unwrap();
        store.set("canary-2", SECRET).unwrap();
        store.db.flush().unwrap();

        let mut files = 0;
        let mut pending = vec![dir.path().to_owned()];
        while let Some(path) = pending.pop() {
            if path.is_dir() {
                pending.extend(fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
                continue;
            }
            let bytes = fs::read(&path).unwrap();
            files += 1;
            assert!(
                !bytes.windows(SECRET.len()).any(|w| w == SECRET),
                "plaintext found in {}",
                path.display()
            );
        }
        assert!(files > 0, "read no sled files");
    }

    #[test]
    fn store_debug_shows_no_values() {
        let (_dir, store) = new_store(1);
        store.set("a", b"hunter2").unwrap();
        let shown = format!("{store:?} {:?}", store.get("a").unwrap());
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn store_is_shareable() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<SecretStore>();
    }

    #[cfg(unix)]
    #[test]
    fn new_store_directory_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let (dir, _store) = new_store(1);
        let mode = fs::metadata(dir.path().join("db"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700, "mode {mode:o}");
    }

    /// Set by [`rotation_survives_sigkill`] for the child it spawns.
    #[cfg(unix)]
    const CHILD_ENV: &str = "TOKA_SECRETS_TEST_ROTATION_DIR";
    #[cfg(unix)]
    const CRASH_SECRETS: usize = 200;

    #[cfg(unix)]
    fn crash_value(i: usize) -> Vec<u8> {
        format!("value-{i}-").repeat(20).into_bytes()
    }

    /// The victim: rotates between keys 1 and 2 forever until killed. Only
    /// `rotation_survives_sigkill` runs it (with the store path in the
    /// environment); in a normal test run it is an entry point with nothing
    /// to do.
    #[cfg(unix)]
    #[test]
    fn rotation_child() {
        let Some(path) = std::env::var_os(CHILD_ENV) else {
            return;
        };
        let mut store = SecretStore::open(&path, key(1))
            .or_else(|_| SecretStore::open(&path, key(2)))
            .unwrap();
        loop {
            store.rotate_key(key(1)).unwrap();
            store.rotate_key(key(2)).unwrap();
        }
    }

    #[cfg(unix)]
    #[test]
    fn rotation_survives_sigkill() {
        use std::process::{Command, Stdio};
        use std::time::Duration;

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let store = SecretStore::open(&path, key(1)).unwrap();
        for i in 0..CRASH_SECRETS {
            store.set(&format!("s/{i}"), &crash_value(i)).unwrap();
        }
        drop(store);

        let mut seen = [0; 2];
        for round in 0..10 {
            let mut child = Command::new(std::env::current_exe().unwrap())
                .args(["--exact", "store::tests::rotation_child", "--nocapture"])
                .env(CHILD_ENV, &path)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            // Staggered so kills land at different points of a rotation.
            std::thread::sleep(Duration::from_millis(100 + 23 * round));
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();

            let (which, store) = match SecretStore::open(&path, key(1)) {
                Ok(store) => (0, store),
                Err(Error::WrongKey) => (1, SecretStore::open(&path, key(2)).unwrap()),
                Err(e) => panic!("round {round}: {e}"),
            };
            seen[which] += 1;
            assert_eq!(store.list().unwrap().len(), CRASH_SECRETS, "round {round}");
            for i in 0..CRASH_SECRETS {
                let value = store
                    .get(&format!("s/{i}"))
                    .unwrap_or_else(|e| panic!("round {round}: {e}"))
                    .unwrap();
                assert_eq!(value.expose(), crash_value(i), "round {round}");
            }
        }
        eprintln!("stores recovered under key 1 / key 2: {seen:?}");
    }
}
