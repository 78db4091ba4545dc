//! Durable key-value buckets for Toka agents: the store behind the `kv`
//! capability (`wasi:keyvalue@0.2.0-draft` `store`, `atomics` and `batch`,
//! and the `toka:runtime/kv` extension) and `toka kv`.
//!
//! One [redb](https://www.redb.org) file per host (`[kv] path`) holds every
//! bucket. An agent granted `kv = true` has its own bucket, named after it;
//! `kv_shared = ["sessions"]` grants more. Keys are strings, values bytes;
//! each value carries a version (the bucket's write counter at the key's
//! last write, which only grows) and an optional expiry.
//!
//! # Guarantees
//! - **Acknowledged = fsync'd.** A write returns only after the redb
//!   transaction holding it committed with `Durability::Immediate`. One
//!   write thread takes every queued write, commits them in one transaction
//!   (group commit), then acknowledges each; a write whose transaction
//!   failed is reported as failed, never acknowledged. A SIGKILL at any
//!   moment loses no acknowledged write (`tests/crash.rs` kills a writer
//!   over and over and checks).
//! - **Exact quotas.** Each bucket's usage (keys, bytes) and write counter
//!   are written in the same transaction as the write that changes them, so
//!   they are right after a crash. Expired keys read as absent; a write to a
//!   bucket (and every open) first purges its expired keys, so they never
//!   count against a quota a write is checked against.
//! - **Fast reopen.** Every commit records redb's allocator state
//!   (`set_quick_repair(true)`), so opening after a crash does not walk the
//!   whole file.
//! - **Not encrypted at rest** (in this version): values are stored as the
//!   guest wrote them; protect the file like any database file.
//!
//! Reads (`get`, `exists`, lists) use their own read transactions and never
//! wait for the writer.
//!
//! # Layout
//! - [`store`]: [`Store`], its reads, [`Write`]s and the group-commit thread;
//! - [`config`]: `[kv]` ([`KvConfig`]) and the agents' grants ([`KvGrant`]);
//! - `codec` (private): composite keys `bucket \0 key`, records, usage rows;
//! - [`error`]: what can fail, [`Error`];
//! - `host` (feature `host`): the `kv` capability the kernel links.
#![deny(missing_docs)]

mod codec;
pub mod config;
pub mod error;
#[cfg(feature = "host")]
pub mod host;
pub mod store;

pub use codec::Usage;
pub use config::{KvConfig, KvGrant};
pub use error::{Error, Result};
pub use store::{Entry, KeyPage, Outcome, Pending, Store, Write};

/// Longest bucket name, in characters.
pub const MAX_BUCKET_NAME: usize = 64;
/// Most keys one page of a listing returns (`list-keys`, `list-prefix`).
pub const MAX_PAGE: usize = 1000;
/// Most keys one batch call (`get-many`, `set-many`, `delete-many`) names.
pub const MAX_BATCH_KEYS: usize = 1000;
/// Most value bytes one batch call moves (the values `set-many` writes, or
/// `get-many` returns): 16 MiB.
pub const MAX_BATCH_BYTES: u64 = 16 << 20;

/// Default `[[agents]] kv_quota_mb`: total bytes of an agent's own bucket, MiB.
pub const DEFAULT_QUOTA_MB: u64 = 64;
/// Default `[[agents]] kv_max_keys`: keys in an agent's own bucket.
pub const DEFAULT_MAX_KEYS: u64 = 100_000;
/// Default `[kv] shared_quota_mb`: total bytes of each shared bucket, MiB.
pub const DEFAULT_SHARED_QUOTA_MB: u64 = 64;
/// Default `[kv] shared_max_keys`: keys in each shared bucket.
pub const DEFAULT_SHARED_MAX_KEYS: u64 = 100_000;
/// Default `[kv] max_key_bytes`: the longest key.
pub const DEFAULT_MAX_KEY_BYTES: u64 = 1024;
/// Default `[kv] max_value_kb`: the largest value, KiB.
pub const DEFAULT_MAX_VALUE_KB: u64 = 1024;

/// True for a valid bucket name: 1-[`MAX_BUCKET_NAME`] characters of
/// `a-z A-Z 0-9 _ - .` (every agent name is one).
pub fn valid_bucket_name(name: &str) -> bool {
    (1..=MAX_BUCKET_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// The host-wide bounds every bucket shares (`[kv]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The longest key, bytes (`[kv] max_key_bytes`).
    pub max_key_bytes: usize,
    /// The largest value, bytes (`[kv] max_value_kb` × 1024).
    pub max_value_bytes: u64,
}

impl Default for Limits {
    /// [`DEFAULT_MAX_KEY_BYTES`] and [`DEFAULT_MAX_VALUE_KB`].
    fn default() -> Self {
        Limits {
            max_key_bytes: DEFAULT_MAX_KEY_BYTES as usize,
            max_value_bytes: DEFAULT_MAX_VALUE_KB << 10,
        }
    }
}

/// One bucket's quota, as the writer sees it. Writes that would take the
/// bucket past it are refused; writes that shrink a bucket already past it
/// (after an operator lowered the quota) are not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Total bytes: each key's length plus its value's length.
    pub max_bytes: u64,
    /// Keys.
    pub max_keys: u64,
    /// Which config keys set it, for the error text.
    pub source: QuotaSource,
}

/// Where a [`Quota`] comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaSource {
    /// An agent's own bucket: `kv_quota_mb`, `kv_max_keys`.
    Agent,
    /// A shared bucket: `[kv] shared_quota_mb`, `shared_max_keys`.
    Shared,
    /// The operator (`toka kv put`): no quota.
    Operator,
}

impl Quota {
    /// No quota: the operator's writes.
    pub const UNLIMITED: Quota = Quota {
        max_bytes: u64::MAX,
        max_keys: u64::MAX,
        source: QuotaSource::Operator,
    };

    /// An agent's own bucket's quota.
    pub fn agent(quota_mb: u64, max_keys: u64) -> Self {
        Quota {
            max_bytes: quota_mb.saturating_mul(1 << 20),
            max_keys,
            source: QuotaSource::Agent,
        }
    }

    /// A shared bucket's quota.
    pub fn shared(quota_mb: u64, max_keys: u64) -> Self {
        Quota {
            max_bytes: quota_mb.saturating_mul(1 << 20),
            max_keys,
            source: QuotaSource::Shared,
        }
    }

    fn keys_key(&self) -> &'static str {
        match self.source {
            QuotaSource::Agent => "kv_max_keys",
            QuotaSource::Shared => "[kv] shared_max_keys",
            QuotaSource::Operator => "no limit",
        }
    }

    fn bytes_key(&self) -> &'static str {
        match self.source {
            QuotaSource::Agent => "kv_quota_mb",
            QuotaSource::Shared => "[kv] shared_quota_mb",
            QuotaSource::Operator => "no limit",
        }
    }

    /// Checks a bucket going from `(keys, bytes)` to `(new_keys, new_bytes)`.
    pub(crate) fn check(&self, keys: u64, bytes: u64, new_keys: u64, new_bytes: u64) -> Result<()> {
        if new_keys > self.max_keys && new_keys > keys {
            return Err(Error::QuotaExceeded(format!(
                "{}: the bucket holds {keys} keys, the most allowed is {}",
                self.keys_key(),
                self.max_keys
            )));
        }
        if new_bytes > self.max_bytes && new_bytes > bytes {
            return Err(Error::QuotaExceeded(format!(
                "{}: the write would take the bucket to {new_bytes} bytes, over its {} bytes",
                self.bytes_key(),
                self.max_bytes
            )));
        }
        Ok(())
    }
}

/// Milliseconds since the Unix epoch (expiry times are wall-clock: a clock
/// set back makes keys live longer, never shorter).
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_names() {
        for ok in ["a", "sessions", "my-agent_2", "v1.2", &"x".repeat(64)] {
            assert!(valid_bucket_name(ok), "{ok}");
        }
        for bad in ["", "a b", "a\0b", "a/b", "é", &"x".repeat(65)] {
            assert!(!valid_bucket_name(bad), "{bad}");
        }
    }

    #[test]
    fn quotas_refuse_growth_past_the_limit_only() {
        let q = Quota::agent(1, 2);
        assert!(q.check(1, 10, 2, 20).is_ok());
        let e = q.check(2, 10, 3, 20).unwrap_err().to_string();
        assert!(
            e.contains("kv_max_keys") && e.contains("most allowed is 2"),
            "{e}"
        );
        let e = q.check(0, 0, 1, (1 << 20) + 1).unwrap_err().to_string();
        assert!(e.contains("kv_quota_mb"), "{e}");
        // Already over (the quota was lowered): shrinking is allowed.
        assert!(q.check(5, 2 << 20, 4, 2 << 20).is_ok());
        let e = Quota::shared(1, 1)
            .check(1, 0, 2, 0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("[kv] shared_max_keys"), "{e}");
    }
}
