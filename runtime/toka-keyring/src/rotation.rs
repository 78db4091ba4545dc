//! Rotating the master key over every store sealed under it, crash-safely.
//!
//! # Key rotation and crashes
//!
//! With a key file `K`, [`rotate`] takes the rotation lock, settles any
//! earlier interrupted rotation, opens every store with the current key
//! (holding each store's own lock until it is done), then:
//!
//! 1. writes the new key to `K.new` (0600, fsynced): the intent, so no state
//!    below is ever under a key that exists nowhere;
//! 2. re-keys each store in turn, in the order given (each all or nothing on
//!    its own: the vault's manifest, the secret store's one sled batch);
//! 3. renames `K.new` over `K`.
//!
//! Killed at any point, each store is wholly under one of the two keys, and
//! the order bounds the mixes: the first stores under the new key, the rest
//! under the old. The next [`settle`] finds the leftover `K.new` and settles
//! it before anything opens a store: if some store is under the new key, it
//! rolls the rotation *forward* (brings every other store to the new key,
//! in order, then renames `K.new` over `K`); if none is, it rolls *back*
//! (deletes `K.new`, which nothing was sealed with). Each step checks before
//! it acts, so a settling that is itself killed is simply settled again.
//! Afterwards exactly one key, the one in `K`, opens every store. Only paths
//! and counts are logged, never a key.
//!
//! [`rotate`] holds an exclusive advisory lock on `K.lock` (an empty file
//! created beside `K`) for its whole run, and [`settle`], when it finds a
//! `K.new`, takes the same lock before it looks at anything, waiting for a
//! running rotation to end: a `K.new` is never settled while its rotation is
//! under way, and two processes never settle one at the same time. A
//! [`settle`] that finds no `K.new` never touches the lock.
//!
//! # Rotation without a key file
//!
//! With the key from `TOKA_MASTER_KEY` there is no file to record the new key
//! in, so [`rotate_unrecorded`] hands the new key to the caller to show
//! before anything changes, then re-keys the last store in its one atomic
//! step: after a crash, one of the two keys (the old one, or the one shown)
//! opens it. Two stores cannot be switched atomically without a durable
//! record of the new key, so every other store must be empty: it is reset
//! (created anew under whichever key next opens it), and one that holds
//! data stops the rotation before anything changes ([`Error::HoldsData`]).
//!
//! # Stores this build cannot open
//!
//! A store whose support is not compiled in is listed as [`Unsupported`]: a
//! rotation refuses to start while it exists ([`Error::WouldStrand`]: it
//! could not be re-keyed and would become unreadable), and an interrupted
//! one is settled only when a store re-keyed after it is under the new key
//! (then it is too); otherwise [`Error::Undecidable`], and nothing changes.

use std::fs;
use std::path::{Path, PathBuf};

use crate::key::{KeyError, MasterKey};

/// A store's own error, as the protocol passes it on.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A store sealed under a key derived from the master key, as the rotation
/// protocol sees it. Implemented by each store's crate, for a handle that
/// knows where the store is and opens it when asked.
pub trait Sealed {
    /// How logs and errors name the store, e.g. `the vault at /var/lib/v`.
    fn name(&self) -> &str;

    /// Whether the store is sealed under `key` (a store is under exactly one
    /// key). Changes nothing and holds nothing open afterwards.
    fn sealed_with(&self, key: &MasterKey) -> Result<bool, BoxError>;

    /// Opens the store under `key` and keeps it open, with its lock, until
    /// the handle is dropped or opened again: a rotation opens every store
    /// before it changes anything, so a wrong key or another process using
    /// a store stops it there.
    fn open(&mut self, key: &MasterKey) -> Result<(), BoxError>;

    /// Re-encrypts the store from `old` to `new`, all or nothing against a
    /// crash (SIGKILL included), opening it under `old` first unless it is
    /// open; returns how many items it holds.
    fn rekey(&mut self, old: &MasterKey, new: &MasterKey) -> Result<usize, BoxError>;

    /// For [`rotate_unrecorded`], on an open store: if it holds nothing,
    /// resets it, so that it is created anew under whichever key opens it
    /// next, and returns `None`; else changes nothing and says what it holds
    /// (e.g. `blobs (namespaces: a, b)`).
    fn reset_if_empty(&mut self) -> Result<Option<String>, BoxError>;

    /// What [`rekey`](Self::rekey) counts, plural, for the operator's
    /// report: `secret(s)`, `vault blob(s)`.
    fn counted(&self) -> &str {
        "item(s)"
    }

    /// Whether `error`, which this store's methods returned, says the key
    /// does not open the store (as opposed to the store failing), so that
    /// the operator is told "wrong key" whichever store it was.
    fn is_wrong_key(&self, error: &(dyn std::error::Error + 'static)) -> bool {
        let _ = error;
        false
    }
}

/// What can stop a rotation or a settling. The display names the store or
/// file and the step; the source chain has the cause.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading or creating a key file.
    #[error(transparent)]
    Key(#[from] KeyError),

    /// A file operation of the protocol itself (lock, rename, remove, sync).
    #[error("{context}")]
    Io {
        /// What was being done, naming the file.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },

    /// A store failed a step.
    #[error("{action} {store}")]
    Store {
        /// The step: `opening`, `checking the key of`, `re-keying`, ...
        action: &'static str,
        /// [`Sealed::name`].
        store: String,
        /// The store's error.
        #[source]
        source: BoxError,
    },

    /// A rotation stopped after writing `<key file>.new`: the next
    /// [`settle`] finishes or undoes it.
    #[error(
        "key rotation failed; the next `toka secrets` or `toka vault` command settles {}",
        pending.display()
    )]
    Interrupted {
        /// `<key file>.new`.
        pending: PathBuf,
        /// What stopped it.
        #[source]
        source: Box<Error>,
    },

    /// A store this build cannot open ([`Unsupported`]) is in the way of a
    /// rotation: it could not be re-keyed. Nothing was changed.
    #[error(
        "{store} is sealed with a key derived from the master key, and rotating would make it \
         unreadable"
    )]
    WouldStrand {
        /// The store.
        store: String,
        /// Why this build cannot open it, and what to do.
        #[source]
        source: BoxError,
    },

    /// An interrupted rotation cannot be settled: whether it got as far as a
    /// store this build cannot open is unknown. Nothing was changed.
    #[error(
        "a `toka secrets rotate-key` was interrupted, and {store} may already be under the \
         new key"
    )]
    Undecidable {
        /// The store.
        store: String,
        /// Why this build cannot open it, and what to do.
        #[source]
        source: BoxError,
    },

    /// [`rotate_unrecorded`] found data in a store other than the last one.
    /// Nothing was changed.
    #[error(
        "{store} holds {what}, and with the master key in TOKA_MASTER_KEY there is no key \
         file to record the new key in before the stores change: a crash in between would \
         leave them under different keys"
    )]
    HoldsData {
        /// The store.
        store: String,
        /// What it holds.
        what: String,
    },

    /// [`rotate_unrecorded`]'s caller could not show the new key. Nothing
    /// was changed.
    #[error("showing the new key")]
    Announce(#[source] BoxError),
}

/// How [`settle`] left things.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// There was no `<key file>.new`.
    Nothing,
    /// Nothing was under the `.new` key: it was removed.
    RolledBack,
    /// Some store was under the `.new` key: every store was brought over
    /// and the key renamed over the key file.
    RolledForward,
}

/// The master key file, and the two files a rotation keeps beside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFile {
    path: PathBuf,
}

impl KeyFile {
    /// The key file at `path` (which need not exist yet).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The key file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `<key file>.new`, where a rotation writes the new key before any
    /// store changes.
    pub fn pending_path(&self) -> PathBuf {
        self.with_suffix(".new")
    }

    /// `<key file>.lock`, the rotation lock.
    pub fn lock_path(&self) -> PathBuf {
        self.with_suffix(".lock")
    }

    /// Reads the key.
    pub fn read(&self) -> Result<MasterKey, KeyError> {
        MasterKey::read_key_file(&self.path)
    }

    /// Creates the key file with a fresh key (mode 0600, never replacing a
    /// file), durable in its directory when this returns.
    pub fn create(&self) -> Result<MasterKey, Error> {
        let key = MasterKey::create_key_file(&self.path)?;
        sync_parent(&self.path)?;
        Ok(key)
    }

    /// Takes the rotation lock, waiting while another process holds it.
    pub fn lock(&self) -> Result<RotationLock, Error> {
        RotationLock::acquire(&self.lock_path())
    }

    fn with_suffix(&self, suffix: &str) -> PathBuf {
        let mut path = self.path.as_os_str().to_owned();
        path.push(suffix);
        PathBuf::from(path)
    }
}

/// The exclusive advisory lock on `<key file>.lock` that a rotation and the
/// settling of its leftovers hold. The OS releases it when the process ends,
/// however it ends.
#[derive(Debug)]
pub struct RotationLock {
    _file: fs::File,
}

impl RotationLock {
    fn acquire(path: &Path) -> Result<Self, Error> {
        let io = |what: &str, source| Error::Io {
            context: format!("{what} {}", path.display()),
            source,
        };
        let mut options = fs::OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options.open(path).map_err(|e| io("opening", e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                tracing::info!(lock = %path.display(), "waiting for a running `toka secrets rotate-key`");
                file.lock().map_err(|e| io("locking", e))?;
            }
            Err(fs::TryLockError::Error(e)) => return Err(io("locking", e)),
        }
        Ok(Self { _file: file })
    }
}

/// Settles a `<key file>.new` left by a killed [`rotate`], under the
/// rotation lock; nothing to do (and no lock taken) without one. `stores`:
/// every existing store sealed under the key, in the order [`rotate`]
/// re-keys them. Call it before opening any of them.
pub fn settle(key_file: &KeyFile, stores: &mut [Box<dyn Sealed>]) -> Result<Settled, Error> {
    if !key_file.pending_path().exists() {
        return Ok(Settled::Nothing);
    }
    let _lock = key_file.lock()?;
    settle_locked(key_file, stores)
}

/// Rotates the master key in `key_file` over `stores` (every existing store
/// sealed under it, in the order to re-key them) as the module docs
/// describe; returns each store's item count, in order. A rotation
/// interrupted earlier is settled first.
pub fn rotate(key_file: &KeyFile, stores: &mut [Box<dyn Sealed>]) -> Result<Vec<usize>, Error> {
    // Held until the rotation is complete.
    let _lock = key_file.lock()?;
    settle_locked(key_file, stores)?;
    let key = key_file.read()?;
    open_all(stores, &key)?;

    let pending = key_file.pending_path();
    let interrupted = |source| Error::Interrupted {
        pending: pending.clone(),
        source: Box::new(source),
    };
    // Persisted before anything changes, so a crash never leaves a store
    // under a key that exists nowhere.
    let new = MasterKey::create_key_file(&pending)?;
    sync_parent(&pending)?;
    tracing::info!(file = %pending.display(), "wrote the new master key");
    let mut counts = Vec::with_capacity(stores.len());
    for store in stores.iter_mut() {
        let count = store
            .rekey(&key, &new)
            .map_err(|source| interrupted(store_error("re-keying", &**store, source)))?;
        tracing::info!(count, "re-keyed {}", store.name());
        counts.push(count);
    }
    fs::rename(&pending, key_file.path()).map_err(|source| Error::Io {
        context: format!(
            "every store is re-keyed but renaming {} to {} failed; the next `toka secrets` or \
             `toka vault` command retries it",
            pending.display(),
            key_file.path().display()
        ),
        source,
    })?;
    sync_parent(key_file.path())?;
    Ok(counts)
}

/// Rotates a master key that no file records (`TOKA_MASTER_KEY`) over
/// `stores`, as the module docs describe: every store but the last must be
/// empty and is reset, `announce` is given the new key (standard base64)
/// before anything is re-keyed, then the last store is re-keyed. Returns
/// the last store's item count.
pub fn rotate_unrecorded(
    current: &MasterKey,
    stores: &mut [Box<dyn Sealed>],
    announce: &mut dyn FnMut(&str) -> Result<(), BoxError>,
) -> Result<usize, Error> {
    open_all(stores, current)?;
    let (last, rest) = match stores.split_last_mut() {
        Some((last, rest)) => (Some(last), rest),
        None => (None, &mut [][..]),
    };
    for store in rest.iter_mut() {
        let held = store
            .reset_if_empty()
            .map_err(|source| store_error("resetting", &**store, source))?;
        if let Some(what) = held {
            return Err(Error::HoldsData {
                store: store.name().to_owned(),
                what,
            });
        }
    }
    let new = MasterKey::generate()?;
    // Shown before anything changes, so a crash in between cannot lose the
    // only copy of the key a store ends up under.
    announce(new.encode().as_str()).map_err(Error::Announce)?;
    match last {
        Some(store) => store
            .rekey(current, &new)
            .map_err(|source| store_error("re-keying", &**store, source)),
        None => Ok(0),
    }
}

/// Opens every store under `key`, in order, before anything changes.
fn open_all(stores: &mut [Box<dyn Sealed>], key: &MasterKey) -> Result<(), Error> {
    for store in stores.iter_mut() {
        store.open(key).map_err(|source| {
            if source.is::<UnsupportedError>() {
                Error::WouldStrand {
                    store: store.name().to_owned(),
                    source,
                }
            } else {
                store_error("opening", &**store, source)
            }
        })?;
    }
    Ok(())
}

/// What a store says about the `.new` key.
enum Answer {
    Under(bool),
    CannotTell(BoxError),
}

/// [`settle`] once the lock is held: no rotation is under way meanwhile.
fn settle_locked(key_file: &KeyFile, stores: &mut [Box<dyn Sealed>]) -> Result<Settled, Error> {
    let pending = key_file.pending_path();
    if !pending.exists() {
        // Settled by another process while this one waited for the lock.
        return Ok(Settled::Nothing);
    }
    let new = match MasterKey::read_key_file(&pending) {
        Ok(key) => key,
        // It was fsynced before anything was sealed with it, so a key that
        // does not parse was never used.
        Err(KeyError::InvalidKey { .. }) => {
            roll_back(&pending, "the new key was never completely written")?;
            return Ok(Settled::RolledBack);
        }
        Err(e) => return Err(e.into()),
    };
    // Asked last first: a store re-keyed later answers for the earlier ones.
    let mut answers = Vec::with_capacity(stores.len());
    for store in stores.iter().rev() {
        answers.push(match store.sealed_with(&new) {
            Ok(under) => Answer::Under(under),
            Err(e) if e.is::<UnsupportedError>() => Answer::CannotTell(e),
            Err(source) => return Err(store_error("checking the key of", &**store, source)),
        });
    }
    answers.reverse();

    // A rotation re-keys in order, so every store before the last one under
    // the new key is under it too; past it, a store that cannot tell might
    // be either.
    let last_under_new = answers
        .iter()
        .rposition(|a| matches!(a, Answer::Under(true)));
    let undecided = answers.iter().enumerate().position(|(i, a)| {
        matches!(a, Answer::CannotTell(_)) && last_under_new.is_none_or(|last| i > last)
    });
    if let Some(i) = undecided
        && let Answer::CannotTell(source) = answers.swap_remove(i)
    {
        return Err(Error::Undecidable {
            store: stores[i].name().to_owned(),
            source,
        });
    }
    if last_under_new.is_none() {
        roll_back(&pending, "no store was re-keyed")?;
        return Ok(Settled::RolledBack);
    }

    let mut already = Vec::new();
    let mut old = None;
    for (store, answer) in stores.iter_mut().zip(&answers) {
        if !matches!(answer, Answer::Under(false)) {
            already.push(store.name().to_owned());
            continue;
        }
        let old = match &mut old {
            Some(key) => key,
            None => old.insert(key_file.read()?),
        };
        let count = store
            .rekey(old, &new)
            .map_err(|source| store_error("re-keying", &**store, source))?;
        tracing::info!(count, "interrupted key rotation: re-keyed {}", store.name());
    }
    fs::rename(&pending, key_file.path()).map_err(|source| Error::Io {
        context: format!(
            "completing an interrupted key rotation: renaming {} to {}",
            pending.display(),
            key_file.path().display()
        ),
        source,
    })?;
    sync_parent(key_file.path())?;
    tracing::warn!(
        key_file = %key_file.path().display(),
        already_rekeyed = %already.join(", "),
        "completed an interrupted `toka secrets rotate-key`: every store is under the new key"
    );
    Ok(Settled::RolledForward)
}

/// Removes a `.new` key nothing was sealed with; `why` says how that is known.
fn roll_back(pending: &Path, why: &str) -> Result<(), Error> {
    fs::remove_file(pending).map_err(|source| Error::Io {
        context: format!("removing {}", pending.display()),
        source,
    })?;
    sync_parent(pending)?;
    tracing::warn!(
        file = %pending.display(),
        reason = why,
        "rolled back an interrupted `toka secrets rotate-key`: removed the unused new key"
    );
    Ok(())
}

fn store_error(action: &'static str, store: &dyn Sealed, source: BoxError) -> Error {
    Error::Store {
        action,
        store: store.name().to_owned(),
        source,
    }
}

/// Makes a creation, rename or removal in `path`'s directory durable.
fn sync_parent(path: &Path) -> Result<(), Error> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    #[cfg(unix)]
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| Error::Io {
            context: format!("syncing directory {}", dir.display()),
            source,
        })?;
    Ok(())
}

/// A store that exists but whose support this build lacks (a `toka` built
/// without the `vault` feature finding a vault): it answers every question
/// with an [`UnsupportedError`], which makes a rotation refuse to start and
/// an interrupted one settle only when another store decides it (see the
/// module docs).
#[derive(Debug)]
pub struct Unsupported {
    name: String,
    remedy: String,
}

impl Unsupported {
    /// `name` as for [`Sealed::name`]; `remedy` says which build can open it.
    pub fn new(name: impl Into<String>, remedy: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            remedy: remedy.into(),
        }
    }

    fn refuse<T>(&self) -> Result<T, BoxError> {
        Err(Box::new(UnsupportedError {
            remedy: self.remedy.clone(),
        }))
    }
}

impl Sealed for Unsupported {
    fn name(&self) -> &str {
        &self.name
    }

    fn sealed_with(&self, _key: &MasterKey) -> Result<bool, BoxError> {
        self.refuse()
    }

    fn open(&mut self, _key: &MasterKey) -> Result<(), BoxError> {
        self.refuse()
    }

    fn rekey(&mut self, _old: &MasterKey, _new: &MasterKey) -> Result<usize, BoxError> {
        self.refuse()
    }

    fn reset_if_empty(&mut self) -> Result<Option<String>, BoxError> {
        self.refuse()
    }
}

/// What an [`Unsupported`] store answers.
#[derive(Debug, thiserror::Error)]
#[error("this build cannot open it: {remedy}")]
pub struct UnsupportedError {
    /// Which build can.
    pub remedy: String,
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;

    use super::*;

    /// Which key (by its `derive("test")` output) each fake store is
    /// under, shared with the test.
    type Under = Rc<RefCell<[u8; 32]>>;

    fn id(key: &MasterKey) -> [u8; 32] {
        *key.derive("test")
    }

    /// A store in memory that can be told to fail its re-key.
    struct Fake {
        name: String,
        under: Under,
        items: usize,
        fail_rekey: bool,
        opened: bool,
    }

    impl Sealed for Fake {
        fn name(&self) -> &str {
            &self.name
        }
        fn sealed_with(&self, key: &MasterKey) -> Result<bool, BoxError> {
            Ok(*self.under.borrow() == id(key))
        }
        fn open(&mut self, key: &MasterKey) -> Result<(), BoxError> {
            if !self.sealed_with(key)? {
                return Err("wrong key".into());
            }
            self.opened = true;
            Ok(())
        }
        fn rekey(&mut self, old: &MasterKey, new: &MasterKey) -> Result<usize, BoxError> {
            if !self.opened {
                self.open(old)?;
            }
            if self.fail_rekey {
                return Err("disk on fire".into());
            }
            *self.under.borrow_mut() = id(new);
            Ok(self.items)
        }
        fn reset_if_empty(&mut self) -> Result<Option<String>, BoxError> {
            Ok((self.items > 0).then(|| format!("{} item(s)", self.items)))
        }
    }

    struct Setup {
        _dir: tempfile::TempDir,
        key_file: KeyFile,
        under: Vec<Under>,
    }

    impl Setup {
        /// A key file and `items.len()` stores under its key.
        fn new(items: &[usize]) -> Self {
            let dir = tempfile::tempdir().unwrap();
            let key_file = KeyFile::new(dir.path().join("master.key"));
            let key = key_file.create().unwrap();
            let under = items
                .iter()
                .map(|_| Rc::new(RefCell::new(id(&key))))
                .collect();
            Setup {
                _dir: dir,
                key_file,
                under,
            }
        }

        fn stores(&self, items: &[usize]) -> Vec<Box<dyn Sealed>> {
            self.under
                .iter()
                .zip(items)
                .enumerate()
                .map(|(i, (under, &items))| {
                    Box::new(Fake {
                        name: format!("store {i}"),
                        under: under.clone(),
                        items,
                        fail_rekey: false,
                        opened: false,
                    }) as Box<dyn Sealed>
                })
                .collect()
        }

        fn key(&self) -> [u8; 32] {
            id(&self.key_file.read().unwrap())
        }

        fn under(&self) -> Vec<[u8; 32]> {
            self.under.iter().map(|u| *u.borrow()).collect()
        }

        /// A `.new` key, with the first `done` stores already under it.
        fn interrupted(&self, done: usize) -> [u8; 32] {
            let new = MasterKey::create_key_file(&self.key_file.pending_path()).unwrap();
            for under in &self.under[..done] {
                *under.borrow_mut() = id(&new);
            }
            id(&new)
        }
    }

    #[test]
    fn rotate_rekeys_every_store_in_order_and_renames() {
        let s = Setup::new(&[2, 3]);
        let old = s.key();
        let counts = rotate(&s.key_file, &mut s.stores(&[2, 3])).unwrap();
        assert_eq!(counts, [2, 3]);
        assert_ne!(s.key(), old);
        assert_eq!(s.under(), [s.key(), s.key()]);
        assert!(!s.key_file.pending_path().exists());
    }

    #[test]
    fn settle_without_a_new_key_does_nothing_and_takes_no_lock() {
        let s = Setup::new(&[1]);
        assert_eq!(
            settle(&s.key_file, &mut s.stores(&[1])).unwrap(),
            Settled::Nothing
        );
        assert!(!s.key_file.lock_path().exists());
    }

    #[test]
    fn a_torn_or_unused_new_key_is_rolled_back() {
        let s = Setup::new(&[1, 1]);
        let old = s.key();
        fs::write(s.key_file.pending_path(), "dHJ1bmNh").unwrap();
        let settled = settle(&s.key_file, &mut s.stores(&[1, 1])).unwrap();
        assert_eq!(settled, Settled::RolledBack);
        assert!(!s.key_file.pending_path().exists());

        s.interrupted(0);
        let settled = settle(&s.key_file, &mut s.stores(&[1, 1])).unwrap();
        assert_eq!(settled, Settled::RolledBack);
        assert_eq!((s.key(), s.under()), (old, vec![old, old]));
    }

    #[test]
    fn a_new_key_some_store_is_under_is_rolled_forward() {
        for done in 1..=3 {
            let s = Setup::new(&[1, 1, 1]);
            let new = s.interrupted(done);
            let settled = settle(&s.key_file, &mut s.stores(&[1, 1, 1])).unwrap();
            assert_eq!(settled, Settled::RolledForward, "{done}");
            assert_eq!((s.key(), s.under()), (new, vec![new; 3]), "{done}");
            assert!(!s.key_file.pending_path().exists());
        }
    }

    #[test]
    fn a_failed_rotation_is_settled_next_time() {
        let s = Setup::new(&[1, 1]);
        let old = s.key();
        let mut stores = s.stores(&[1, 1]);
        stores[1] = Box::new(Fake {
            name: "store 1".into(),
            under: s.under[1].clone(),
            items: 1,
            fail_rekey: true,
            opened: false,
        });
        let err = rotate(&s.key_file, &mut stores).unwrap_err();
        assert!(matches!(err, Error::Interrupted { .. }), "{err}");
        assert!(s.key_file.pending_path().exists());
        assert_eq!(s.key(), old);
        assert_ne!(s.under()[0], old, "the first store was re-keyed");

        let settled = settle(&s.key_file, &mut s.stores(&[1, 1])).unwrap();
        assert_eq!(settled, Settled::RolledForward);
        assert_eq!(s.under(), [s.key(), s.key()]);
    }

    #[test]
    fn an_unsupported_store_blocks_rotation_and_undecidable_settling() {
        let s = Setup::new(&[1]);
        let unsupported = || Box::new(Unsupported::new("the vault", "rebuild")) as Box<dyn Sealed>;
        let with = |s: &Setup| {
            let mut stores = vec![unsupported()];
            stores.extend(s.stores(&[1]));
            stores
        };
        let err = rotate(&s.key_file, &mut with(&s)).unwrap_err();
        assert!(matches!(err, Error::WouldStrand { .. }), "{err}");
        assert!(!s.key_file.pending_path().exists(), "nothing written");

        // Only the unsupported store could tell: refused, nothing changed.
        s.interrupted(0);
        let err = settle(&s.key_file, &mut with(&s)).unwrap_err();
        assert!(matches!(err, Error::Undecidable { .. }), "{err}");
        assert!(s.key_file.pending_path().exists());

        // A store re-keyed after it is under the new key: so is it.
        let new = id(&MasterKey::read_key_file(&s.key_file.pending_path()).unwrap());
        *s.under[0].borrow_mut() = new;
        let settled = settle(&s.key_file, &mut with(&s)).unwrap();
        assert_eq!(settled, Settled::RolledForward);
        assert_eq!(s.key(), new);
    }

    #[test]
    fn rotate_unrecorded_needs_every_store_but_the_last_empty() {
        let s = Setup::new(&[1, 1]);
        let current = s.key_file.read().unwrap();
        let mut shown = Vec::new();
        let err = rotate_unrecorded(&current, &mut s.stores(&[1, 1]), &mut |k| {
            shown.push(k.to_owned());
            Ok(())
        })
        .unwrap_err();
        assert!(matches!(err, Error::HoldsData { .. }), "{err}");
        assert!(shown.is_empty(), "no key shown");

        let count = rotate_unrecorded(&current, &mut s.stores(&[0, 5]), &mut |k| {
            shown.push(k.to_owned());
            Ok(())
        })
        .unwrap();
        assert_eq!(count, 5);
        let new = MasterKey::from_base64(&shown[0]).unwrap();
        assert_eq!(s.under()[1], id(&new));
    }
}
