//! The store's errors: what a caller got wrong (a name, a size, a quota),
//! which the host turns into WIT error values, and what failed underneath
//! (redb, the write thread), which never reaches a guest verbatim.

use std::path::PathBuf;

/// `Result` with the store's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a key-value operation failed. In every case the write did not happen
/// (a batch stops at its first failing pair: see [`crate::Store::set_many`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A bucket name outside 1-64 characters of `a-z A-Z 0-9 _ - .`.
    #[error("invalid bucket name `{name}`: use 1-64 characters of a-z A-Z 0-9 _ - .")]
    InvalidBucket {
        /// The name, bounded for display.
        name: String,
    },
    /// A key that is empty or longer than `[kv] max_key_bytes`.
    #[error("invalid key: {reason}")]
    InvalidKey {
        /// What is wrong with it.
        reason: String,
    },
    /// A malformed argument other than a key: a TTL of zero, a batch too
    /// long, a prefix or cursor too long.
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// A value longer than `[kv] max_value_kb`.
    #[error("value of {len} bytes is larger than the {max} bytes allowed ([kv] max_value_kb)")]
    ValueTooLarge {
        /// The value's length.
        len: usize,
        /// The most allowed.
        max: u64,
    },
    /// The write would pass the bucket's quota; the text names which.
    #[error("quota exceeded: {0}")]
    QuotaExceeded(String),
    /// `increment` on a value that is not a decimal `u64`, or one that would
    /// overflow.
    #[error("{0}")]
    NotACounter(String),
    /// Another process (or a handle not yet closed) holds the store file.
    #[error("the key-value store {} is open in another process (a running `toka run`?)", path.display())]
    InUse {
        /// The store file.
        path: PathBuf,
    },
    /// The write thread is gone (it panicked, or the store is closing); the
    /// write did not happen.
    #[error("the key-value store's write thread stopped")]
    WriterStopped,
    /// redb failed (I/O, a corrupt file); `action` says at what.
    #[error("key-value store: {action}: {source}")]
    Storage {
        /// What the store was doing.
        action: &'static str,
        /// redb's error.
        #[source]
        source: redb::Error,
    },
    /// The transaction holding the write failed (the text says how): the
    /// write did not happen.
    #[error("key-value store: the write's transaction failed: {0}")]
    Transaction(String),
    /// A record in the file does not decode: the file is damaged.
    #[error("key-value store: corrupt record: {0}")]
    Corrupt(String),
}

impl Error {
    /// True if the caller's input is to blame (a name, size, quota or
    /// counter), false for failures of the store itself.
    pub fn is_caller_error(&self) -> bool {
        matches!(
            self,
            Error::InvalidBucket { .. }
                | Error::InvalidKey { .. }
                | Error::Invalid(_)
                | Error::ValueTooLarge { .. }
                | Error::QuotaExceeded(_)
                | Error::NotACounter(_)
        )
    }
}

/// Wraps any redb error with what the store was doing.
pub(crate) fn storage<E: Into<redb::Error>>(action: &'static str) -> impl FnOnce(E) -> Error {
    move |e| Error::Storage {
        action,
        source: e.into(),
    }
}
