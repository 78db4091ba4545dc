//! [`Store`]: one redb file, read directly by every caller and written by
//! one thread that commits queued writes together.
//!
//! # Group commit
//! [`Store::submit`] checks a [`Write`] (names, sizes), queues it and
//! returns a [`Pending`] that resolves when its transaction is durable. The
//! write thread blocks for the first queued write, takes every other one
//! already queued (at most [`MAX_GROUP`] writes or [`MAX_GROUP_BYTES`]),
//! applies them in order in one write transaction (`Durability::Immediate`,
//! quick repair), commits, and only then answers each. A write refused for
//! its own reasons (a quota, a version that does not match) changes nothing
//! and does not affect the others; a storage failure fails the whole group,
//! and every write in it is reported failed, none acknowledged. The queue
//! itself is unbounded: each caller waits for its answer before it can queue
//! another, so it holds at most one write per waiting caller.

use std::collections::HashMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use redb::{
    Database, DatabaseError, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    Table, TableDefinition,
};
use tokio::sync::oneshot;

use crate::codec::{self, Record, Usage};
use crate::error::{Error, Result, storage};
use crate::{Limits, MAX_BATCH_BYTES, MAX_BATCH_KEYS, MAX_PAGE, Quota, now_ms, valid_bucket_name};

const ENTRIES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("entries");
const EXPIRY: TableDefinition<&[u8], ()> = TableDefinition::new("expiry");
const BUCKETS: TableDefinition<&str, &[u8]> = TableDefinition::new("buckets");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// The file layout this version writes (`meta` row `format`).
const FORMAT: u64 = 1;

/// Most writes one transaction commits.
pub const MAX_GROUP: usize = 1024;
/// Most value bytes one transaction commits (a single larger write still
/// gets a transaction of its own).
pub const MAX_GROUP_BYTES: u64 = 64 << 20;

/// redb's page cache: its default is 1 GiB, far more than a host's agents
/// should cost in memory by default.
const CACHE_BYTES: usize = 64 << 20;

/// How long [`Store::open`] waits for a handle that is closing (in this
/// process, a runtime just dropped) to release the file.
const LOCK_WAIT: Duration = Duration::from_secs(2);

/// A stored value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The bytes.
    pub value: Vec<u8>,
    /// The bucket's write counter at the key's last write.
    pub version: u64,
    /// When the key expires (ms since the Unix epoch), if it has a TTL.
    pub expires_ms: Option<u64>,
}

/// One page of keys.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyPage {
    /// Keys in byte order.
    pub keys: Vec<String>,
    /// The last key of the page when more follow (pass it as `after`).
    pub next: Option<String>,
}

/// One write, applied atomically in a transaction (a batch pair by pair).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// Set `key` (no expiry unless `ttl_ms`; a set without one clears an
    /// earlier TTL).
    Set {
        /// The key.
        key: String,
        /// The value.
        value: Vec<u8>,
        /// Expire this many milliseconds from the commit (at least 1).
        ttl_ms: Option<u64>,
    },
    /// Delete `key` (absent: nothing happens).
    Delete {
        /// The key.
        key: String,
    },
    /// Set `key` only if it is at `version` (0: only if it is absent).
    CompareAndSwap {
        /// The key.
        key: String,
        /// The version it must be at.
        version: u64,
        /// The value.
        value: Vec<u8>,
    },
    /// Add `delta` to the decimal `u64` in `key` (absent: 0), keeping its
    /// expiry.
    Increment {
        /// The key.
        key: String,
        /// What to add.
        delta: u64,
    },
    /// Set each pair in order, stopping at the first that fails (the pairs
    /// before it stay written, as `wasi:keyvalue/batch` allows).
    SetMany(Vec<(String, Vec<u8>)>),
    /// Delete each key.
    DeleteMany(Vec<String>),
}

impl Write {
    /// Value bytes the write carries (for sizing a group).
    fn size(&self) -> u64 {
        match self {
            Write::Set { value, .. } | Write::CompareAndSwap { value, .. } => value.len() as u64,
            Write::SetMany(pairs) => pairs.iter().map(|(_, v)| v.len() as u64).sum(),
            Write::Delete { .. } | Write::Increment { .. } | Write::DeleteMany(_) => 0,
        }
    }
}

/// What an acknowledged write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A [`Write::Set`]: the key's new version.
    Set(u64),
    /// A [`Write::Delete`]: whether the key existed.
    Deleted(bool),
    /// A [`Write::CompareAndSwap`]: the new version, or `None` when the key
    /// was at another version (nothing written).
    Swapped(Option<u64>),
    /// A [`Write::Increment`]: the new value.
    Incremented(u64),
    /// A [`Write::SetMany`] or [`Write::DeleteMany`].
    Batch,
}

/// One queued write and where its answer goes.
struct Request {
    bucket: Arc<str>,
    quota: Quota,
    write: Write,
    reply: oneshot::Sender<Result<Outcome>>,
}

/// A write's answer, once its transaction is durable. A future (the host
/// awaits it within the guest call's deadline) or [`Pending::wait`].
#[derive(Debug)]
pub struct Pending(PendingState);

#[derive(Debug)]
enum PendingState {
    /// Refused before it was queued.
    Ready(Option<Result<Outcome>>),
    Queued(oneshot::Receiver<Result<Outcome>>),
}

impl Pending {
    /// Block the calling thread for the answer (not from async code).
    pub fn wait(self) -> Result<Outcome> {
        match self.0 {
            PendingState::Ready(r) => r.unwrap_or(Err(Error::WriterStopped)),
            PendingState::Queued(rx) => rx.blocking_recv().unwrap_or(Err(Error::WriterStopped)),
        }
    }
}

impl Future for Pending {
    type Output = Result<Outcome>;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.0 {
            PendingState::Ready(r) => Poll::Ready(r.take().unwrap_or(Err(Error::WriterStopped))),
            PendingState::Queued(rx) => std::pin::Pin::new(rx)
                .poll(cx)
                .map(|r| r.unwrap_or(Err(Error::WriterStopped))),
        }
    }
}

/// The key-value store: one redb file. Cheap to share (`Arc`); dropping the
/// last handle lets the write thread finish what is queued and closes the
/// file.
pub struct Store {
    db: Arc<Database>,
    path: PathBuf,
    limits: Limits,
    queue: Option<crossbeam_channel::Sender<Request>>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // Closing the queue ends the write thread once it has answered
        // everything queued; joining it closes the file before we return,
        // so the next open in this process finds it free.
        drop(self.queue.take());
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

impl Store {
    /// Open the store at `path`, creating it (and its directory) if missing,
    /// and purge every expired key.
    pub fn open(path: &Path, limits: Limits) -> Result<Store> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::Storage {
                action: "creating the store's directory",
                source: redb::Error::Io(e),
            })?;
        }
        let db = open_db(path)?;
        let txn = begin(&db)?;
        {
            let mut meta = txn.open_table(META).map_err(storage("opening tables"))?;
            let format = meta.get("format").map_err(storage("reading the format"))?;
            match format.map(|g| g.value()) {
                None => {
                    meta.insert("format", FORMAT)
                        .map_err(storage("writing the format"))?;
                }
                Some(FORMAT) => {}
                Some(other) => {
                    return Err(Error::Corrupt(format!(
                        "{} has layout {other}; this version reads layout {FORMAT}",
                        path.display()
                    )));
                }
            }
            let mut tables = Tables::open(&txn)?;
            let buckets: Vec<String> = tables
                .buckets
                .iter()
                .map_err(storage("listing buckets"))?
                .map(|r| r.map(|(k, _)| k.value().to_owned()))
                .collect::<std::result::Result<_, _>>()
                .map_err(storage("listing buckets"))?;
            let now = now_ms();
            for bucket in buckets {
                let mut usage = tables.usage(&bucket)?;
                let purged = tables.purge(&bucket, &mut usage, now)?;
                if purged > 0 {
                    tables.put_usage(&bucket, &usage)?;
                }
            }
        }
        txn.commit().map_err(storage("committing the open"))?;

        let db = Arc::new(db);
        let (queue, requests) = crossbeam_channel::unbounded();
        let writer_db = Arc::clone(&db);
        let writer = std::thread::Builder::new()
            .name("toka-kv-writer".into())
            .spawn(move || write_loop(&writer_db, &requests))
            .map_err(|e| Error::Storage {
                action: "starting the write thread",
                source: redb::Error::Io(e),
            })?;
        Ok(Store {
            db,
            path: path.to_path_buf(),
            limits,
            queue: Some(queue),
            writer: Some(writer),
        })
    }

    /// The store file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The host-wide bounds.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    fn check_bucket(bucket: &str) -> Result<()> {
        if valid_bucket_name(bucket) {
            Ok(())
        } else {
            Err(Error::InvalidBucket {
                name: toka_core::text::bounded(bucket, 80).into_owned(),
            })
        }
    }

    /// Checks a key against `[kv] max_key_bytes`.
    pub fn check_key(&self, key: &str) -> Result<()> {
        if key.is_empty() {
            return Err(Error::InvalidKey {
                reason: "a key cannot be empty".into(),
            });
        }
        if key.len() > self.limits.max_key_bytes {
            return Err(Error::InvalidKey {
                reason: format!(
                    "a key of {} bytes is longer than the {} bytes allowed ([kv] max_key_bytes)",
                    key.len(),
                    self.limits.max_key_bytes
                ),
            });
        }
        Ok(())
    }

    fn check_value(&self, value: &[u8]) -> Result<()> {
        if value.len() as u64 > self.limits.max_value_bytes {
            return Err(Error::ValueTooLarge {
                len: value.len(),
                max: self.limits.max_value_bytes,
            });
        }
        Ok(())
    }

    fn check_batch(n: usize) -> Result<()> {
        if n > MAX_BATCH_KEYS {
            return Err(Error::Invalid(format!(
                "a batch of {n} keys is longer than the {MAX_BATCH_KEYS} allowed"
            )));
        }
        Ok(())
    }

    /// Checks `write` on `bucket` before it is queued.
    fn check_write(&self, bucket: &str, write: &Write) -> Result<()> {
        Self::check_bucket(bucket)?;
        match write {
            Write::Set { key, value, ttl_ms } => {
                self.check_key(key)?;
                self.check_value(value)?;
                if *ttl_ms == Some(0) {
                    return Err(Error::Invalid("a TTL must be at least 1 ms".into()));
                }
            }
            Write::CompareAndSwap { key, value, .. } => {
                self.check_key(key)?;
                self.check_value(value)?;
            }
            Write::Delete { key } | Write::Increment { key, .. } => self.check_key(key)?,
            Write::SetMany(pairs) => {
                Self::check_batch(pairs.len())?;
                let mut total = 0u64;
                for (key, value) in pairs {
                    self.check_key(key)?;
                    self.check_value(value)?;
                    total += value.len() as u64;
                }
                if total > MAX_BATCH_BYTES {
                    return Err(Error::Invalid(format!(
                        "a batch of {total} value bytes is larger than the {MAX_BATCH_BYTES} allowed"
                    )));
                }
            }
            Write::DeleteMany(keys) => {
                Self::check_batch(keys.len())?;
                for key in keys {
                    self.check_key(key)?;
                }
            }
        }
        Ok(())
    }

    /// Queue `write` on `bucket` under `quota`; the answer comes once it is
    /// durable (or refused). A write refused by its checks is never queued.
    pub fn submit(&self, bucket: &str, quota: Quota, write: Write) -> Pending {
        if let Err(e) = self.check_write(bucket, &write) {
            return Pending(PendingState::Ready(Some(Err(e))));
        }
        let (reply, answer) = oneshot::channel();
        let request = Request {
            bucket: bucket.into(),
            quota,
            write,
            reply,
        };
        match self.queue.as_ref().map(|q| q.send(request)) {
            Some(Ok(())) => Pending(PendingState::Queued(answer)),
            _ => Pending(PendingState::Ready(Some(Err(Error::WriterStopped)))),
        }
    }

    /// [`submit`](Self::submit) and wait for the answer.
    pub fn write(&self, bucket: &str, quota: Quota, write: Write) -> Result<Outcome> {
        self.submit(bucket, quota, write).wait()
    }

    /// Set `key` (blocking); returns its new version.
    pub fn set(&self, bucket: &str, quota: Quota, key: &str, value: &[u8]) -> Result<u64> {
        let write = Write::Set {
            key: key.into(),
            value: value.into(),
            ttl_ms: None,
        };
        match self.write(bucket, quota, write)? {
            Outcome::Set(version) => Ok(version),
            other => unreachable!("a set answered {other:?}"),
        }
    }

    /// Delete `key` (blocking); returns whether it existed.
    pub fn delete(&self, bucket: &str, key: &str) -> Result<bool> {
        let write = Write::Delete { key: key.into() };
        match self.write(bucket, Quota::UNLIMITED, write)? {
            Outcome::Deleted(existed) => Ok(existed),
            other => unreachable!("a delete answered {other:?}"),
        }
    }

    fn read<T>(
        &self,
        f: impl FnOnce(&redb::ReadOnlyTable<&[u8], &[u8]>) -> Result<T>,
    ) -> Result<T> {
        let txn = self.db.begin_read().map_err(storage("starting a read"))?;
        let entries = txn.open_table(ENTRIES).map_err(storage("opening a read"))?;
        f(&entries)
    }

    /// The live entry of `key`, if any.
    pub fn get(&self, bucket: &str, key: &str) -> Result<Option<Entry>> {
        Self::check_bucket(bucket)?;
        self.check_key(key)?;
        let now = now_ms();
        self.read(|entries| lookup(entries, &codec::entry_key(bucket, key), now))
    }

    /// Whether `key` is live.
    pub fn exists(&self, bucket: &str, key: &str) -> Result<bool> {
        Ok(self.get(bucket, key)?.is_some())
    }

    /// The live values of `keys`, in order ([`MAX_BATCH_KEYS`] at most, and
    /// [`MAX_BATCH_BYTES`] of values in all).
    pub fn get_many(&self, bucket: &str, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>> {
        Self::check_bucket(bucket)?;
        Self::check_batch(keys.len())?;
        for key in keys {
            self.check_key(key)?;
        }
        let now = now_ms();
        self.read(|entries| {
            let mut total = 0u64;
            let mut out = Vec::with_capacity(keys.len());
            for key in keys {
                let found = lookup(entries, &codec::entry_key(bucket, key), now)?;
                total += found.as_ref().map_or(0, |e| e.value.len() as u64);
                if total > MAX_BATCH_BYTES {
                    return Err(Error::Invalid(format!(
                        "the values asked for are larger than the {MAX_BATCH_BYTES} bytes one batch returns; ask for fewer keys"
                    )));
                }
                out.push(found.map(|e| e.value));
            }
            Ok(out)
        })
    }

    fn check_page_args(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<()> {
        if prefix.len() > self.limits.max_key_bytes
            || after.is_some_and(|a| a.len() > self.limits.max_key_bytes)
        {
            return Err(Error::Invalid(format!(
                "a prefix or cursor longer than the {} bytes of the longest key",
                self.limits.max_key_bytes
            )));
        }
        if limit == 0 {
            return Err(Error::Invalid("the limit must be at least 1".into()));
        }
        Ok(())
    }

    /// Live keys of `bucket` starting with `prefix`, in byte order, after
    /// `after` (exclusive), at most `limit` (capped at [`MAX_PAGE`]).
    pub fn list_prefix(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<KeyPage> {
        Self::check_bucket(bucket)?;
        self.check_page_args(prefix, after, limit)?;
        let limit = limit.min(MAX_PAGE);
        let first = codec::entry_key(bucket, prefix);
        let start = match after {
            Some(a) if codec::entry_key(bucket, a) >= first => {
                Bound::Excluded(codec::entry_key(bucket, a))
            }
            _ => Bound::Included(first.clone()),
        };
        let now = now_ms();
        self.read(|entries| {
            let range = entries
                .range::<&[u8]>((
                    start.as_ref().map(Vec::as_slice),
                    Bound::Excluded(codec::bucket_end(bucket).as_slice()),
                ))
                .map_err(storage("listing keys"))?;
            let mut keys = Vec::new();
            for row in range {
                let (k, v) = row.map_err(storage("listing keys"))?;
                if !k.value().starts_with(&first) {
                    break;
                }
                if Record::decode(v.value())?.expired(now) {
                    continue;
                }
                if keys.len() == limit {
                    let next = keys.last().cloned();
                    return Ok(KeyPage { keys, next });
                }
                keys.push(codec::key_of(bucket, k.value())?.to_owned());
            }
            Ok(KeyPage { keys, next: None })
        })
    }

    /// Live keys of `bucket` in byte order, skipping the first `offset`, at
    /// most [`MAX_PAGE`]; with the offset of the next page when more follow.
    pub fn list_from(&self, bucket: &str, offset: u64) -> Result<(Vec<String>, Option<u64>)> {
        Self::check_bucket(bucket)?;
        let now = now_ms();
        self.read(|entries| {
            let start = codec::bucket_start(bucket);
            let end = codec::bucket_end(bucket);
            let range = entries
                .range::<&[u8]>(start.as_slice()..end.as_slice())
                .map_err(storage("listing keys"))?;
            let (mut skipped, mut keys) = (0u64, Vec::new());
            for row in range {
                let (k, v) = row.map_err(storage("listing keys"))?;
                if Record::decode(v.value())?.expired(now) {
                    continue;
                }
                if skipped < offset {
                    skipped += 1;
                    continue;
                }
                if keys.len() == MAX_PAGE {
                    return Ok((keys, Some(offset + MAX_PAGE as u64)));
                }
                keys.push(codec::key_of(bucket, k.value())?.to_owned());
            }
            Ok((keys, None))
        })
    }

    /// Every bucket that was ever written, with its stored usage.
    pub fn buckets(&self) -> Result<Vec<(String, Usage)>> {
        let txn = self.db.begin_read().map_err(storage("starting a read"))?;
        let table = txn.open_table(BUCKETS).map_err(storage("opening a read"))?;
        let mut out = Vec::new();
        for row in table.iter().map_err(storage("listing buckets"))? {
            let (k, v) = row.map_err(storage("listing buckets"))?;
            out.push((k.value().to_owned(), Usage::decode(v.value())?));
        }
        Ok(out)
    }

    /// Check the file's bookkeeping against its contents: each bucket's
    /// usage against a recount of its entries (keys, bytes; its write
    /// counter at least its newest version) and the expiry index against
    /// the entries. Returns what disagrees (nothing, on a sound file).
    pub fn check(&self) -> Result<Vec<String>> {
        let txn = self.db.begin_read().map_err(storage("starting a read"))?;
        let entries = txn.open_table(ENTRIES).map_err(storage("opening a read"))?;
        let expiry = txn.open_table(EXPIRY).map_err(storage("opening a read"))?;
        let mut counted: HashMap<String, Usage> = HashMap::new();
        let mut expiring = Vec::new();
        for row in entries.iter().map_err(storage("reading entries"))? {
            let (k, v) = row.map_err(storage("reading entries"))?;
            let (bucket, key) = codec::split_entry_key(k.value())?;
            let record = Record::decode(v.value())?;
            let u = counted.entry(bucket.to_owned()).or_default();
            u.keys += 1;
            u.bytes += codec::cost(key, record.value.len());
            u.writes = u.writes.max(record.version);
            if let Some(at) = record.expires_ms {
                expiring.push(codec::expiry_key(bucket, at, key));
            }
        }
        let mut problems = Vec::new();
        let stored: HashMap<String, Usage> = self.buckets()?.into_iter().collect();
        for (bucket, c) in &counted {
            let s = stored.get(bucket).copied().unwrap_or_default();
            if (s.keys, s.bytes) != (c.keys, c.bytes) || s.writes < c.writes {
                problems.push(format!(
                    "bucket {bucket}: stored {s:?}, counted {c:?} (writes: newest version)"
                ));
            }
        }
        for (bucket, s) in &stored {
            if !counted.contains_key(bucket) && (s.keys, s.bytes) != (0, 0) {
                problems.push(format!(
                    "bucket {bucket}: stored {s:?}, but it has no entries"
                ));
            }
        }
        let rows = expiry.len().map_err(storage("reading the expiry index"))?;
        if rows != expiring.len() as u64 {
            problems.push(format!(
                "the expiry index has {rows} rows for {} keys with a TTL",
                expiring.len()
            ));
        }
        for k in &expiring {
            if expiry
                .get(k.as_slice())
                .map_err(storage("reading the expiry index"))?
                .is_none()
            {
                problems.push("a key with a TTL is missing from the expiry index".into());
                break;
            }
        }
        Ok(problems)
    }
}

/// Open the redb file, waiting up to [`LOCK_WAIT`] for a handle that is
/// closing to release it.
fn open_db(path: &Path) -> Result<Database> {
    let started = Instant::now();
    loop {
        let mut builder = Database::builder();
        builder.set_cache_size(CACHE_BYTES);
        let repair_path = path.to_path_buf();
        builder.set_repair_callback(move |session| {
            // With quick repair this is short; say so when it happens.
            if session.progress() == 0.0 {
                tracing::warn!(path = %repair_path.display(), "the key-value store was not closed cleanly; repairing");
            }
        });
        match builder.create(path) {
            Ok(db) => return Ok(db),
            Err(DatabaseError::DatabaseAlreadyOpen) if started.elapsed() < LOCK_WAIT => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(DatabaseError::DatabaseAlreadyOpen) => {
                return Err(Error::InUse {
                    path: path.to_path_buf(),
                });
            }
            Err(e) => return Err(storage("opening the store")(e)),
        }
    }
}

/// A durable write transaction.
fn begin(db: &Database) -> Result<redb::WriteTransaction> {
    let mut txn = db
        .begin_write()
        .map_err(storage("starting a transaction"))?;
    txn.set_durability(Durability::Immediate)
        .map_err(storage("setting durability"))?;
    // Each commit records the allocator state, so an open after a crash
    // need not walk the whole file to rebuild it.
    txn.set_quick_repair(true);
    Ok(txn)
}

fn lookup(
    entries: &impl ReadableTable<&'static [u8], &'static [u8]>,
    composite: &[u8],
    now: u64,
) -> Result<Option<Entry>> {
    let Some(guard) = entries.get(composite).map_err(storage("reading a key"))? else {
        return Ok(None);
    };
    let r = Record::decode(guard.value())?;
    Ok((!r.expired(now)).then(|| Entry {
        value: r.value.to_vec(),
        version: r.version,
        expires_ms: r.expires_ms,
    }))
}

/// The write thread: one group per transaction until the queue closes.
fn write_loop(db: &Database, requests: &crossbeam_channel::Receiver<Request>) {
    while let Ok(first) = requests.recv() {
        let mut bytes = first.write.size();
        let mut group = vec![first];
        while group.len() < MAX_GROUP && bytes < MAX_GROUP_BYTES {
            match requests.try_recv() {
                Ok(next) => {
                    bytes += next.write.size();
                    group.push(next);
                }
                Err(_) => break,
            }
        }
        commit_group(db, group);
    }
}

/// Apply `group` in one transaction, commit it, then answer each request.
fn commit_group(db: &Database, group: Vec<Request>) {
    let (requests, answers): (Vec<_>, Vec<_>) = group
        .into_iter()
        .map(|r| ((r.bucket, r.quota, r.write), r.reply))
        .unzip();
    let results = match apply_group(db, &requests) {
        Ok((txn, results)) => match txn.commit() {
            Ok(()) => results,
            Err(e) => fail_all(&requests, &storage("committing")(e)),
        },
        Err(e) => fail_all(&requests, &e),
    };
    for (answer, result) in answers.into_iter().zip(results) {
        // A caller that stopped waiting (its deadline passed) is fine.
        let _ = answer.send(result);
    }
}

fn fail_all(requests: &[(Arc<str>, Quota, Write)], e: &Error) -> Vec<Result<Outcome>> {
    tracing::error!(error = %e, writes = requests.len(), "a key-value transaction failed; its writes are not acknowledged");
    requests
        .iter()
        .map(|_| Err(Error::Transaction(e.to_string())))
        .collect()
}

/// The applied (uncommitted) transaction and each request's answer; `Err`
/// when storage failed and the whole group must be dropped.
fn apply_group(
    db: &Database,
    requests: &[(Arc<str>, Quota, Write)],
) -> Result<(redb::WriteTransaction, Vec<Result<Outcome>>)> {
    let txn = begin(db)?;
    let now = now_ms();
    let mut results = Vec::with_capacity(requests.len());
    {
        let mut tables = Tables::open(&txn)?;
        let mut usage: HashMap<Arc<str>, Usage> = HashMap::new();
        for (bucket, quota, write) in requests {
            let u = match usage.get_mut(bucket) {
                Some(u) => u,
                None => {
                    let mut u = tables.usage(bucket)?;
                    tables.purge(bucket, &mut u, now)?;
                    usage.entry(Arc::clone(bucket)).or_insert(u)
                }
            };
            results.push(tables.apply(bucket, quota, write, u, now)?);
        }
        for (bucket, u) in &usage {
            tables.put_usage(bucket, u)?;
        }
    }
    Ok((txn, results))
}

/// The tables of one write transaction.
struct Tables<'t> {
    entries: Table<'t, &'static [u8], &'static [u8]>,
    expiry: Table<'t, &'static [u8], ()>,
    buckets: Table<'t, &'static str, &'static [u8]>,
}

/// What the writer needs of a stored record.
struct Old {
    version: u64,
    expires_ms: Option<u64>,
    cost: u64,
    expired: bool,
    /// The value, when asked for (increment).
    value: Option<Vec<u8>>,
}

impl<'t> Tables<'t> {
    fn open(txn: &'t redb::WriteTransaction) -> Result<Self> {
        Ok(Tables {
            entries: txn.open_table(ENTRIES).map_err(storage("opening tables"))?,
            expiry: txn.open_table(EXPIRY).map_err(storage("opening tables"))?,
            buckets: txn.open_table(BUCKETS).map_err(storage("opening tables"))?,
        })
    }

    fn usage(&self, bucket: &str) -> Result<Usage> {
        match self.buckets.get(bucket).map_err(storage("reading usage"))? {
            Some(g) => Usage::decode(g.value()),
            None => Ok(Usage::default()),
        }
    }

    fn put_usage(&mut self, bucket: &str, u: &Usage) -> Result<()> {
        self.buckets
            .insert(bucket, u.encode().as_slice())
            .map_err(storage("writing usage"))?;
        Ok(())
    }

    /// Remove `bucket`'s keys expired at `now`; returns how many.
    fn purge(&mut self, bucket: &str, u: &mut Usage, now: u64) -> Result<u64> {
        let start = codec::expiry_key(bucket, 0, "");
        let end = codec::expiry_key(bucket, now.saturating_add(1), "");
        let rows: Vec<Vec<u8>> = self
            .expiry
            .range::<&[u8]>(start.as_slice()..end.as_slice())
            .map_err(storage("reading the expiry index"))?
            .map(|r| r.map(|(k, _)| k.value().to_vec()))
            .collect::<std::result::Result<_, _>>()
            .map_err(storage("reading the expiry index"))?;
        let mut purged = 0;
        for row in &rows {
            self.expiry
                .remove(row.as_slice())
                .map_err(storage("purging expired keys"))?;
            let key = codec::expiry_key_of(bucket, row)?;
            if let Some(old) = self.old(bucket, key, now, false)?
                && old.expired
            {
                self.entries
                    .remove(codec::entry_key(bucket, key).as_slice())
                    .map_err(storage("purging expired keys"))?;
                u.keys = u.keys.saturating_sub(1);
                u.bytes = u.bytes.saturating_sub(old.cost);
                purged += 1;
            }
        }
        Ok(purged)
    }

    fn old(&self, bucket: &str, key: &str, now: u64, with_value: bool) -> Result<Option<Old>> {
        let composite = codec::entry_key(bucket, key);
        let Some(g) = self
            .entries
            .get(composite.as_slice())
            .map_err(storage("reading a key"))?
        else {
            return Ok(None);
        };
        let r = Record::decode(g.value())?;
        Ok(Some(Old {
            version: r.version,
            expires_ms: r.expires_ms,
            cost: codec::cost(key, r.value.len()),
            expired: r.expired(now),
            value: with_value.then(|| r.value.to_vec()),
        }))
    }

    /// Apply one request. The outer `Err` is a storage failure (the group is
    /// dropped); the inner one the request's own refusal.
    fn apply(
        &mut self,
        bucket: &str,
        quota: &Quota,
        write: &Write,
        u: &mut Usage,
        now: u64,
    ) -> Result<Result<Outcome>> {
        Ok(Ok(match write {
            Write::Set { key, value, ttl_ms } => {
                let expires = ttl_ms.map(|t| now.saturating_add(t));
                match self.put(bucket, quota, key, value, expires, u, now)? {
                    Ok(version) => Outcome::Set(version),
                    Err(e) => return Ok(Err(e)),
                }
            }
            Write::Delete { key } => Outcome::Deleted(self.remove(bucket, key, u, now)?),
            Write::CompareAndSwap {
                key,
                version,
                value,
            } => {
                let current = self
                    .old(bucket, key, now, false)?
                    .filter(|o| !o.expired)
                    .map_or(0, |o| o.version);
                if current != *version {
                    return Ok(Ok(Outcome::Swapped(None)));
                }
                match self.put(bucket, quota, key, value, None, u, now)? {
                    Ok(v) => Outcome::Swapped(Some(v)),
                    Err(e) => return Ok(Err(e)),
                }
            }
            Write::Increment { key, delta } => {
                let old = self.old(bucket, key, now, true)?.filter(|o| !o.expired);
                let current = match old.as_ref().and_then(|o| o.value.as_deref()) {
                    None => 0,
                    Some(v) => match parse_counter(v) {
                        Some(n) => n,
                        None => {
                            return Ok(Err(Error::NotACounter(format!(
                                "the value of `{}` is not a decimal u64 counter",
                                toka_core::text::bounded(key, 80)
                            ))));
                        }
                    },
                };
                let Some(next) = current.checked_add(*delta) else {
                    return Ok(Err(Error::NotACounter(format!(
                        "incrementing `{}` ({current}) by {delta} would overflow a u64",
                        toka_core::text::bounded(key, 80)
                    ))));
                };
                let expires = old.and_then(|o| o.expires_ms);
                let text = next.to_string();
                match self.put(bucket, quota, key, text.as_bytes(), expires, u, now)? {
                    Ok(_) => Outcome::Incremented(next),
                    Err(e) => return Ok(Err(e)),
                }
            }
            Write::SetMany(pairs) => {
                for (key, value) in pairs {
                    if let Err(e) = self.put(bucket, quota, key, value, None, u, now)? {
                        return Ok(Err(e));
                    }
                }
                Outcome::Batch
            }
            Write::DeleteMany(keys) => {
                for key in keys {
                    self.remove(bucket, key, u, now)?;
                }
                Outcome::Batch
            }
        }))
    }

    /// Write `key` = `value` (expiring at `expires`) under `quota`; returns
    /// its version, or the quota's refusal (nothing written).
    #[expect(clippy::too_many_arguments, reason = "one write's whole context")]
    fn put(
        &mut self,
        bucket: &str,
        quota: &Quota,
        key: &str,
        value: &[u8],
        expires: Option<u64>,
        u: &mut Usage,
        now: u64,
    ) -> Result<Result<u64>> {
        let old = self.old(bucket, key, now, false)?;
        let (old_keys, old_cost) = old.as_ref().map_or((0, 0), |o| (1, o.cost));
        let keys = u.keys.saturating_sub(old_keys) + 1;
        let bytes = u.bytes.saturating_sub(old_cost) + codec::cost(key, value.len());
        if let Err(e) = quota.check(u.keys, u.bytes, keys, bytes) {
            return Ok(Err(e));
        }
        let version = u.writes + 1;
        if let Some(at) = old.as_ref().and_then(|o| o.expires_ms) {
            self.expiry
                .remove(codec::expiry_key(bucket, at, key).as_slice())
                .map_err(storage("writing the expiry index"))?;
        }
        self.entries
            .insert(
                codec::entry_key(bucket, key).as_slice(),
                Record::encode(version, expires, value).as_slice(),
            )
            .map_err(storage("writing a key"))?;
        if let Some(at) = expires {
            self.expiry
                .insert(codec::expiry_key(bucket, at, key).as_slice(), ())
                .map_err(storage("writing the expiry index"))?;
        }
        *u = Usage {
            keys,
            bytes,
            writes: version,
        };
        Ok(Ok(version))
    }

    /// Delete `key`; returns whether it was live.
    fn remove(&mut self, bucket: &str, key: &str, u: &mut Usage, now: u64) -> Result<bool> {
        let Some(old) = self.old(bucket, key, now, false)? else {
            return Ok(false);
        };
        if let Some(at) = old.expires_ms {
            self.expiry
                .remove(codec::expiry_key(bucket, at, key).as_slice())
                .map_err(storage("writing the expiry index"))?;
        }
        self.entries
            .remove(codec::entry_key(bucket, key).as_slice())
            .map_err(storage("deleting a key"))?;
        u.keys = u.keys.saturating_sub(1);
        u.bytes = u.bytes.saturating_sub(old.cost);
        Ok(!old.expired)
    }
}

/// A counter's value: decimal digits only, as wasmtime's and wasmCloud's
/// key-value hosts store it.
fn parse_counter(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 20 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &Path) -> Store {
        Store::open(&dir.join("kv.redb"), Limits::default()).unwrap()
    }

    const Q: Quota = Quota::UNLIMITED;

    #[test]
    fn set_get_delete_and_versions_only_grow() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        assert_eq!(s.set("b", Q, "k", b"v1").unwrap(), 1);
        assert_eq!(s.set("b", Q, "other", b"x").unwrap(), 2);
        let e = s.get("b", "k").unwrap().unwrap();
        assert_eq!((e.value.as_slice(), e.version), (&b"v1"[..], 1));
        assert!(s.delete("b", "k").unwrap());
        assert!(!s.delete("b", "k").unwrap());
        assert_eq!(s.get("b", "k").unwrap(), None);
        // Written again after a delete: a version it never had.
        assert_eq!(s.set("b", Q, "k", b"v2").unwrap(), 3);
        // Buckets are separate.
        assert_eq!(s.get("c", "k").unwrap(), None);
        assert_eq!(s.set("c", Q, "k", b"c").unwrap(), 1);
        assert!(s.check().unwrap().is_empty());
        drop(s);
        let s = store(dir.path());
        assert_eq!(s.get("b", "k").unwrap().unwrap().version, 3);
        let usage: HashMap<_, _> = s.buckets().unwrap().into_iter().collect();
        assert_eq!(
            usage["b"],
            Usage {
                keys: 2,
                bytes: 3 + 6,
                writes: 3
            }
        );
    }

    #[test]
    fn increments_are_decimal_and_refuse_other_values() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let inc = |delta| {
            s.write(
                "b",
                Q,
                Write::Increment {
                    key: "n".into(),
                    delta,
                },
            )
        };
        assert_eq!(inc(5).unwrap(), Outcome::Incremented(5));
        assert_eq!(inc(2).unwrap(), Outcome::Incremented(7));
        assert_eq!(s.get("b", "n").unwrap().unwrap().value, b"7");
        assert!(matches!(inc(u64::MAX), Err(Error::NotACounter(_))));
        s.set("b", Q, "n", b"seven").unwrap();
        assert!(matches!(inc(1), Err(Error::NotACounter(_))));
        // An increment keeps the key's TTL (a rate-limit window stays one).
        let ttl = Write::Set {
            key: "n".into(),
            value: b"1".to_vec(),
            ttl_ms: Some(3_600_000),
        };
        s.write("b", Q, ttl).unwrap();
        let expires = s.get("b", "n").unwrap().unwrap().expires_ms;
        assert!(expires.is_some());
        assert_eq!(inc(1).unwrap(), Outcome::Incremented(2));
        assert_eq!(s.get("b", "n").unwrap().unwrap().expires_ms, expires);
        assert!(s.check().unwrap().is_empty());
    }

    #[test]
    fn many_threads_share_commits() {
        let dir = tempfile::tempdir().unwrap();
        let s = Arc::new(store(dir.path()));
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let s = Arc::clone(&s);
                std::thread::spawn(move || {
                    for i in 0..50 {
                        s.set("b", Q, &format!("{t}/{i}"), b"x").unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let usage = s.buckets().unwrap();
        assert_eq!(usage[0].1.keys, 400);
        assert_eq!(usage[0].1.writes, 400);
        assert!(s.check().unwrap().is_empty());
    }

    #[test]
    fn a_second_open_of_one_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let started = Instant::now();
        let err = Store::open(&dir.path().join("kv.redb"), Limits::default()).unwrap_err();
        assert!(matches!(err, Error::InUse { .. }), "{err}");
        assert!(started.elapsed() >= LOCK_WAIT);
        drop(s);
        store(dir.path());
    }

    #[test]
    fn counters_parse_digits_only() {
        assert_eq!(parse_counter(b"42"), Some(42));
        assert_eq!(parse_counter(b"18446744073709551615"), Some(u64::MAX));
        for bad in [
            &b""[..],
            b"-1",
            b" 1",
            b"1.0",
            b"18446744073709551616",
            b"0x1",
        ] {
            assert_eq!(parse_counter(bad), None);
        }
    }
}
