//! The crate's error type.
//!
//! No variant carries a secret value or key material: errors end up in logs
//! and terminals, so they name *which* secret or file is at fault and never
//! echo what was in it.

use std::io;
use std::path::PathBuf;

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong storing, reading or granting secrets.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A secret name does not follow the grammar of [`validate_name`](crate::validate_name).
    #[error("invalid secret name {name:?}: {reason}")]
    InvalidName {
        /// The rejected name (names are not secret).
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },

    /// A grant pattern does not follow the grammar documented on [`Grant`](crate::Grant).
    #[error("invalid secrets grant pattern {pattern:?}: {reason}")]
    InvalidPattern {
        /// The rejected pattern.
        pattern: String,
        /// Which rule it breaks.
        reason: &'static str,
    },

    /// Getting the master key failed (it does not parse, its file is
    /// missing or in the way).
    #[error(transparent)]
    Key(#[from] toka_keyring::KeyError),

    /// Reading or writing the store directory failed.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// The operating system's random number generator failed.
    #[error("the operating system random number generator failed")]
    Random,

    /// The master key does not open this store (its key-check record does
    /// not authenticate).
    #[error("wrong master key for this secret store")]
    WrongKey,

    /// The store holds secrets but no key-check record, so a wrong key
    /// could not be told apart from corruption. Refusing beats guessing.
    #[error("secret store has secrets but no key-check record; it is damaged")]
    MissingKeyCheck,

    /// A stored record failed authentication: tampered, truncated, or
    /// copied from another name.
    #[error("secret {name:?} is corrupt (it failed authentication)")]
    Corrupt {
        /// The secret (or internal record) that failed.
        name: String,
    },

    /// A record was written in a format this build does not know,
    /// presumably by a newer Toka.
    #[error("secret {name:?} uses record format {version}, which this build does not understand")]
    UnsupportedFormat {
        /// The secret (or internal record) concerned.
        name: String,
        /// The record's format byte.
        version: u8,
    },

    /// Encryption failed; only possible for values far beyond any sane size.
    #[error("encrypting secret {name:?} failed")]
    Encrypt {
        /// The secret being written.
        name: String,
    },

    /// The underlying sled database failed.
    #[error("secret store storage error: {0}")]
    Storage(#[from] sled::Error),
}

impl Error {
    /// True when the caller's input is to blame: a malformed name or grant
    /// pattern, a master key that is missing, malformed or does not open the
    /// store. False for what the input does not explain (I/O, corruption,
    /// the store's database failing). `toka`'s exit code (2 or 1) and the
    /// host's capability errors both follow it.
    pub fn is_operator_error(&self) -> bool {
        match self {
            Error::InvalidName { .. } | Error::InvalidPattern { .. } | Error::WrongKey => true,
            Error::Key(k) => k.is_operator_error(),
            _ => false,
        }
    }
}
