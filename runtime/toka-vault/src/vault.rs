//! [`Vault`], the public operations, and the per-call [`Limits`].

use std::fmt;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::RwLock;
use sha2::{Digest, Sha256};

use crate::blob::{self, Binding, BlobId, TEMP_SUFFIX};
use crate::durable;
use crate::key::{Keys, VaultKey};
use crate::manifest::{Entry, Manifest};
use crate::names::{validate_content_type, validate_name, validate_namespace};
use crate::{Error, Result};

/// Default [`Limits::max_blob_bytes`]: 16 MiB.
pub const DEFAULT_MAX_BLOB_BYTES: u64 = 16 * 1024 * 1024;
/// Default [`Limits::quota_bytes`]: 64 MiB.
pub const DEFAULT_QUOTA_BYTES: u64 = 64 * 1024 * 1024;

const LOCK_FILE: &str = "LOCK";
pub(crate) const MANIFEST_FILE: &str = "manifest";
const MANIFEST_TEMP_FILE: &str = "manifest.tmp";
const BLOBS_DIR: &str = "blobs";

/// Per-namespace limits for a [`Vault::put`]. They are passed per call, not stored, because
/// they come from the agent's grant, which the host owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest single blob, in bytes ([`Error::TooLarge`] above it).
    pub max_blob_bytes: u64,
    /// Largest total size of the blobs in the namespace after the write, in bytes
    /// ([`Error::QuotaExceeded`] above it). Replacing a blob counts its new size only.
    pub quota_bytes: u64,
}

impl Default for Limits {
    /// [`DEFAULT_MAX_BLOB_BYTES`] (16 MiB) per blob, [`DEFAULT_QUOTA_BYTES`] (64 MiB) per
    /// namespace.
    fn default() -> Self {
        Self {
            max_blob_bytes: DEFAULT_MAX_BLOB_BYTES,
            quota_bytes: DEFAULT_QUOTA_BYTES,
        }
    }
}

/// An open vault directory. See the [crate docs](crate) for the layout, threat model and
/// crash-safety guarantee.
///
/// Cheap operations (`list`, `usage`, ...) read the in-memory manifest. `get` holds a shared
/// lock while it reads the blob file, so no write can remove the file underneath it; `put`
/// encrypts and writes the blob file without any lock and takes the exclusive lock only to
/// commit the manifest.
pub struct Vault {
    dir: PathBuf,
    blobs: PathBuf,
    keys: Keys,
    manifest: RwLock<Manifest>,
    /// Hands out write generations without taking the manifest lock, so concurrent puts can
    /// seal their blobs in parallel; the manifest persists the high-water mark.
    next_generation: AtomicU64,
    /// Held for the vault's lifetime: the advisory lock on `LOCK` lives as long as this
    /// handle, and the OS releases it when the process dies, however it dies.
    _lock: File,
}

impl fmt::Debug for Vault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vault")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Vault {
    /// Opens the vault in `dir`, creating the directory and an empty vault if missing.
    ///
    /// Takes the directory's exclusive lock ([`Error::Locked`] if it is still held after a
    /// quarter of a second), checks the key
    /// ([`Error::WrongKey`]) and the manifest ([`Error::CorruptManifest`]; nothing is touched
    /// then), and finally removes what an interrupted write left behind: temp files and blob
    /// files the manifest does not reference.
    pub fn open(dir: &Path, key: VaultKey) -> Result<Vault> {
        let keys = Keys::derive(&key);
        drop(key);

        let blobs = dir.join(BLOBS_DIR);
        let (created_dir, created_blobs) = (!dir.is_dir(), !blobs.is_dir());
        fs::create_dir_all(&blobs)
            .map_err(|e| Error::io(format!("creating vault directory {}", blobs.display()), e))?;
        // New directories' own entries must be durable before anything is written in them.
        let created = [(created_blobs, dir), (created_dir, durable::parent(dir))];
        for (_, d) in created.into_iter().filter(|&(created, _)| created) {
            durable::sync_dir(d).map_err(|e| Error::io(format!("syncing {}", d.display()), e))?;
        }

        let lock = lock_dir(dir)?;
        let manifest_path = dir.join(MANIFEST_FILE);
        let (manifest, is_new) = match fs::read(&manifest_path) {
            Ok(file) => (Manifest::open(&keys, file, &manifest_path, dir)?, false),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // The first open writes the manifest before any blob exists, so blob files
                // without a manifest mean it was deleted: refuse rather than start over.
                if blob_files(&blobs)?.iter().any(|&(_, temp)| !temp) {
                    return Err(Error::CorruptManifest {
                        path: manifest_path,
                        reason: "missing, but blob files exist",
                    });
                }
                (Manifest::default(), true)
            }
            Err(e) => {
                return Err(Error::io(format!("reading {}", manifest_path.display()), e));
            }
        };

        let vault = Vault {
            dir: dir.to_owned(),
            blobs,
            keys,
            next_generation: AtomicU64::new(manifest.next_generation),
            manifest: RwLock::new(manifest),
            _lock: lock,
        };
        if is_new {
            // Written before any blob, which is what makes "blob files but no manifest" a
            // sign of tampering above.
            vault.persist(&vault.manifest.read()).map_err(|e| e.error)?;
        }
        vault.remove_leftovers()?;
        Ok(vault)
    }

    /// Whether a vault exists in `dir`: its manifest, the first file [`Vault::open`] writes
    /// (and the one an empty vault reset for a new key loses).
    pub fn exists(dir: &Path) -> bool {
        dir.join(MANIFEST_FILE).exists()
    }

    /// Whether `key` is the key the vault in `dir` is sealed with: `Some(true)` if it is,
    /// `Some(false)` if the vault is sealed with another key, `None` if `dir` holds no vault
    /// (no manifest; [`Vault::open`] with any key would create one).
    ///
    /// Cheap: it reads the manifest and checks the key check in its header, nothing more
    /// (the rest of the manifest is verified only by [`Vault::open`], so `Some(true)` does not
    /// promise that the vault opens). It neither takes the lock nor changes anything, so it
    /// works while another process has the vault open; the manifest is only ever replaced
    /// whole, so it sees the state before or after a concurrent write, in particular before
    /// or after a [`Vault::rekey`]'s commit.
    pub fn key_matches(dir: &Path, key: &VaultKey) -> Result<Option<bool>> {
        let path = dir.join(MANIFEST_FILE);
        let file = match fs::read(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
        };
        Manifest::is_sealed_with(&Keys::derive(key), &file, &path).map(Some)
    }

    /// The vault directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Re-encrypts every blob and the manifest under `new`, and returns how many blobs were
    /// re-encrypted. Afterwards only `new` opens the vault; entries keep their metadata
    /// (names, sizes, hashes, timestamps, generations) but move to new files.
    ///
    /// # Crash safety
    ///
    /// The manifest is the single commit point. Every blob is first verified, re-sealed under
    /// `new` into a file of its own with a fresh [`BlobId`] (so no file the durable manifest
    /// references is ever touched) and fsynced, and the `blobs` directory is synced; then
    /// the new manifest, sealed under `new` and referencing only the new files, replaces the
    /// old one atomically; only then are the old files removed. Killed before the manifest's
    /// rename, the vault is entirely under the old key and the new files are unreferenced
    /// leftovers; killed after it, the vault is entirely under `new` and the old files are
    /// the leftovers. Either way the next [`Vault::open`] (or `rekey`) removes the leftovers,
    /// and at every moment exactly one of the two keys opens the vault, with every blob
    /// readable. [`Vault::key_matches`] tells which one without opening the vault.
    ///
    /// A blob that fails verification ([`Error::Corrupt`]) aborts the rekey before the
    /// commit, as does any other error there: the vault stays under the old key, and the new
    /// files written so far are removed.
    ///
    /// If it returns `Err` after the manifest's rename (only syncing the directory can fail
    /// that late), this handle is already under `new` and after a power cut the directory
    /// may hold either state: try both keys on reopening.
    ///
    /// `&mut self` keeps this handle's writers out for the duration, and the directory lock
    /// keeps other processes out.
    pub fn rekey(&mut self, new: VaultKey) -> Result<usize> {
        let keys = Keys::derive(&new);
        drop(new);
        // Runs with no write in flight (`&mut self`), so every unreferenced file is a leftover.
        self.remove_leftovers()?;

        let mut written = Vec::new();
        let rekeyed = match self.reseal_blobs(&keys, &mut written) {
            Ok(rekeyed) => rekeyed,
            Err(e) => {
                self.remove_blob_files(written);
                return Err(e);
            }
        };
        let count = written.len();
        if let Err(e) = persist(&self.dir, &keys, &rekeyed) {
            if e.renamed {
                // The directory shows the new manifest; the old files stay for open to remove.
                self.keys = keys;
                *self.manifest.get_mut() = rekeyed;
            } else {
                self.remove_blob_files(written);
            }
            return Err(e.error);
        }
        self.keys = keys;
        let old = std::mem::replace(self.manifest.get_mut(), rekeyed);
        self.remove_blob_files(old.blob_ids());
        Ok(count)
    }

    /// Writes every blob again, sealed under `keys` into a new file, and returns the manifest
    /// referencing the new files. `written` collects the new files' ids as they are created,
    /// so the caller can remove them if this fails.
    fn reseal_blobs(&self, keys: &Keys, written: &mut Vec<BlobId>) -> Result<Manifest> {
        let current = self.manifest.read();
        let mut rekeyed = Manifest::default();
        rekeyed.next_generation = current.next_generation;
        for entry in current.entries() {
            let data = self.read_blob(entry)?;
            let blob_id = BlobId::random()?;
            let binding = Binding {
                namespace: &entry.namespace,
                name: &entry.name,
                size: entry.size,
                id: blob_id,
                generation: entry.generation,
            };
            let file = blob::seal(keys, &binding, &data)?;
            let path = self.blobs.join(blob_id.to_string());
            // Recorded before the write, so a partly written file is removed too.
            written.push(blob_id);
            durable::write_new(&path, &file)
                .map_err(|e| Error::io(format!("writing blob file {}", path.display()), e))?;
            rekeyed.insert(Entry {
                blob_id,
                ..entry.clone()
            });
        }
        // The new files' names must be durable before a manifest that references them is.
        durable::sync_dir(&self.blobs)
            .map_err(|e| Error::io(format!("syncing {}", self.blobs.display()), e))?;
        Ok(rekeyed)
    }

    /// Stores `data` as `name` in `namespace`, replacing any blob of that name, and returns
    /// its new entry. Durable when it returns.
    ///
    /// Fails with [`Error::TooLarge`] or [`Error::QuotaExceeded`] per `limits`, leaving the
    /// vault unchanged.
    pub fn put(
        &self,
        namespace: &str,
        name: &str,
        content_type: &str,
        data: &[u8],
        limits: &Limits,
    ) -> Result<Entry> {
        validate_namespace(namespace)?;
        validate_name(name)?;
        validate_content_type(content_type)?;
        let size = data.len() as u64;
        if size > limits.max_blob_bytes {
            return Err(Error::TooLarge {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                size,
                max: limits.max_blob_bytes,
            });
        }
        // Fail fast before the costly seal and write; checked again at commit because
        // another put to the namespace may commit in between.
        check_quota(&self.manifest.read(), namespace, name, size, limits)?;

        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
        let blob_id = BlobId::random()?;
        let binding = Binding {
            namespace,
            name,
            size,
            id: blob_id,
            generation,
        };
        let file = blob::seal(&self.keys, &binding, data)?;
        let sha256 = Sha256::digest(data).into();
        let path = self.blobs.join(blob_id.to_string());
        durable::write_atomic(&self.blobs.join(blob_id.temp_file_name()), &path, &file).map_err(
            |e| {
                // Nothing references the new file yet, so it can always go.
                let _ = fs::remove_file(&path);
                Error::io(format!("writing blob file {}", path.display()), e.source)
            },
        )?;

        let mut manifest = self.manifest.write();
        if let Err(e) = check_quota(&manifest, namespace, name, size, limits) {
            drop(manifest);
            let _ = fs::remove_file(&path);
            return Err(e);
        }
        let now = now_ms();
        let entry = Entry {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            size,
            sha256,
            content_type: content_type.to_owned(),
            created_ms: manifest.get(namespace, name).map_or(now, |e| e.created_ms),
            updated_ms: now,
            blob_id,
            generation,
        };
        let previous = manifest.insert(entry.clone());
        manifest.next_generation = self.next_generation.load(Ordering::Relaxed);
        if let Err(e) = self.persist(&manifest) {
            // Keep memory on the old state; the new file goes only if the durable manifest
            // cannot be referencing it.
            match previous {
                Some(previous) => manifest.insert(previous),
                None => manifest.remove(namespace, name),
            };
            drop(manifest);
            if !e.renamed {
                let _ = fs::remove_file(&path);
            }
            return Err(e.error);
        }
        drop(manifest);
        // Every reader that could see the old entry held the lock we just released.
        if let Some(previous) = previous {
            self.remove_blob_file(previous.blob_id);
        }
        Ok(entry)
    }

    /// The blob `name` in `namespace` and its entry, or `None` if there is none.
    ///
    /// The content is verified (authenticated decryption, then size and SHA-256 against the
    /// manifest); a missing, truncated or altered file is [`Error::Corrupt`].
    pub fn get(&self, namespace: &str, name: &str) -> Result<Option<(Entry, Vec<u8>)>> {
        validate_namespace(namespace)?;
        validate_name(name)?;
        // Held while reading the file, so no put or delete can remove it meanwhile.
        let manifest = self.manifest.read();
        let Some(entry) = manifest.get(namespace, name) else {
            return Ok(None);
        };
        let data = self.read_blob(entry)?;
        Ok(Some((entry.clone(), data)))
    }

    /// Deletes the blob `name` in `namespace`; `false` if there was none. Durable when it
    /// returns.
    pub fn delete(&self, namespace: &str, name: &str) -> Result<bool> {
        validate_namespace(namespace)?;
        validate_name(name)?;
        let mut manifest = self.manifest.write();
        let Some(removed) = manifest.remove(namespace, name) else {
            return Ok(false);
        };
        if let Err(e) = self.persist(&manifest) {
            manifest.insert(removed);
            return Err(e.error);
        }
        drop(manifest);
        self.remove_blob_file(removed.blob_id);
        Ok(true)
    }

    /// The entries in `namespace`, sorted by name (byte order).
    pub fn list(&self, namespace: &str) -> Result<Vec<Entry>> {
        validate_namespace(namespace)?;
        Ok(self.manifest.read().list(namespace))
    }

    /// The namespaces holding at least one blob, sorted.
    pub fn namespaces(&self) -> Result<Vec<String>> {
        Ok(self.manifest.read().namespaces())
    }

    /// Total size in bytes of the blobs in `namespace`: what counts against its quota.
    pub fn usage(&self, namespace: &str) -> Result<u64> {
        validate_namespace(namespace)?;
        Ok(self.manifest.read().usage(namespace))
    }

    fn read_blob(&self, entry: &Entry) -> Result<Vec<u8>> {
        let corrupt = || Error::Corrupt {
            namespace: entry.namespace.clone(),
            name: entry.name.clone(),
        };
        let path = self.blobs.join(entry.blob_id.to_string());
        let io_err = |e| Error::io(format!("reading blob file {}", path.display()), e);
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(corrupt()),
            Err(e) => return Err(io_err(e)),
        };
        // Check the length before reading, so a grown file cannot make us allocate its size.
        let expected = blob::file_len(entry.size);
        if file.metadata().map_err(io_err)?.len() != expected {
            return Err(corrupt());
        }
        let mut bytes = Vec::with_capacity(usize::try_from(expected).map_err(|_| corrupt())?);
        file.take(expected + 1)
            .read_to_end(&mut bytes)
            .map_err(io_err)?;
        let binding = Binding {
            namespace: &entry.namespace,
            name: &entry.name,
            size: entry.size,
            id: entry.blob_id,
            generation: entry.generation,
        };
        let data = blob::open(&self.keys, &binding, bytes).ok_or_else(corrupt)?;
        // Authenticated decryption already vouches for it; this also covers a manifest entry
        // whose hash disagrees with its blob, and costs little next to the read.
        if data.len() as u64 != entry.size
            || <[u8; 32]>::from(Sha256::digest(&data)) != entry.sha256
        {
            return Err(corrupt());
        }
        Ok(data)
    }

    /// Seals and durably writes `manifest` as the vault's manifest.
    fn persist(&self, manifest: &Manifest) -> Result<(), PersistError> {
        persist(&self.dir, &self.keys, manifest)
    }

    /// Best effort: a file that cannot be removed now is an orphan, removed at the next open.
    fn remove_blob_file(&self, id: BlobId) {
        let _ = fs::remove_file(self.blobs.join(id.to_string()));
    }

    /// [`Vault::remove_blob_file`] for each of `ids`.
    fn remove_blob_files(&self, ids: impl IntoIterator<Item = BlobId>) {
        for id in ids {
            self.remove_blob_file(id);
        }
    }

    /// Removes the temp files and unreferenced blob files an interrupted write leaves.
    /// Files whose names this crate never produces are left alone.
    fn remove_leftovers(&self) -> Result<()> {
        let referenced = self.manifest.read().blob_ids();
        let mut leftovers: Vec<PathBuf> = blob_files(&self.blobs)?
            .into_iter()
            .filter(|(id, temp)| *temp || !referenced.contains(id))
            .map(|(id, temp)| {
                let name = if temp {
                    id.temp_file_name()
                } else {
                    id.to_string()
                };
                self.blobs.join(name)
            })
            .collect();
        leftovers.push(self.dir.join(MANIFEST_TEMP_FILE));
        for path in leftovers {
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(format!("removing {}", path.display()), e)),
            }
        }
        Ok(())
    }
}

/// Seals `manifest` under `keys` and durably writes it as the manifest of the vault in `dir`.
fn persist(dir: &Path, keys: &Keys, manifest: &Manifest) -> Result<(), PersistError> {
    let file = manifest.seal(keys).map_err(|error| PersistError {
        renamed: false,
        error,
    })?;
    let path = dir.join(MANIFEST_FILE);
    durable::write_atomic(&dir.join(MANIFEST_TEMP_FILE), &path, &file).map_err(|e| PersistError {
        renamed: e.renamed,
        error: Error::io(format!("writing {}", path.display()), e.source),
    })
}

/// A failed manifest write.
struct PersistError {
    /// The new manifest may be on disk already (see [`durable::WriteError::renamed`]).
    renamed: bool,
    error: Error,
}

/// How long `open` keeps trying for a held lock before reporting [`Error::Locked`].
///
/// The lock belongs to the open file, and a process forked by any thread of ours shares our
/// open files until it execs: for that moment a lock just released by dropping a `Vault`
/// is still held. A short grace period absorbs that without making real contention slow
/// to report.
const LOCK_GRACE: Duration = Duration::from_millis(250);

/// Takes the directory's exclusive advisory lock, waiting at most [`LOCK_GRACE`].
fn lock_dir(dir: &Path) -> Result<File> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    let deadline = Instant::now() + LOCK_GRACE;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(10));
            }
            Err(TryLockError::WouldBlock) => {
                return Err(Error::Locked {
                    dir: dir.to_owned(),
                });
            }
            Err(TryLockError::Error(e)) => {
                return Err(Error::io(format!("locking {}", path.display()), e));
            }
        }
    }
}

/// The blob files (and their temp files, flagged `true`) in `blobs`, skipping foreign names.
fn blob_files(blobs: &Path) -> Result<Vec<(BlobId, bool)>> {
    let io_err = |e| Error::io(format!("listing {}", blobs.display()), e);
    let mut found = Vec::new();
    for dirent in fs::read_dir(blobs).map_err(io_err)? {
        let file_name = dirent.map_err(io_err)?.file_name();
        let Some(file_name) = file_name.to_str() else {
            continue;
        };
        let (stem, temp) = match file_name.strip_suffix(TEMP_SUFFIX) {
            Some(stem) => (stem, true),
            None => (file_name, false),
        };
        if let Ok(id) = stem.parse::<BlobId>() {
            found.push((id, temp));
        }
    }
    Ok(found)
}

fn check_quota(
    manifest: &Manifest,
    namespace: &str,
    name: &str,
    size: u64,
    limits: &Limits,
) -> Result<()> {
    let replaced = manifest.get(namespace, name).map_or(0, |e| e.size);
    let used = manifest
        .usage(namespace)
        .saturating_sub(replaced)
        .saturating_add(size);
    if used > limits.quota_bytes {
        return Err(Error::QuotaExceeded {
            namespace: namespace.to_owned(),
            used,
            quota: limits.quota_bytes,
        });
    }
    Ok(())
}

/// Milliseconds since the Unix epoch; a clock set before 1970 reads as 0 rather than failing
/// a write over a timestamp.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `Vault` is shared between an agent runtime's threads.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Vault>();
};
