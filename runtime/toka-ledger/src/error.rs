//! The ledger's errors. Five kinds a caller can act on ([`ErrorKind`], what
//! the `ledger` WIT interface will carry) and the failures underneath
//! (redb, PostgreSQL, a damaged file), which never reach a guest verbatim.

use std::path::PathBuf;

/// `Result` with the ledger's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a ledger operation failed. In every case nothing changed: an
/// operation is one transaction, committed whole or not at all.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The caller is not granted this (raised by the capability layer, not
    /// by a backend; it reads the same as [`Error::UnknownAccount`] there so
    /// grants do not reveal which accounts exist).
    #[error("access denied")]
    AccessDenied,
    /// The debit would take `account` below its overdraft limit.
    #[error(
        "insufficient funds in {asset}/{account}: balance {balance}, overdraft {overdraft}, debit {amount}"
    )]
    InsufficientFunds {
        /// The asset.
        asset: String,
        /// The account debited.
        account: String,
        /// Its balance before the operation.
        balance: i128,
        /// Its overdraft limit.
        overdraft: u128,
        /// The amount the operation debits.
        amount: u128,
    },
    /// The idempotency key was used before for a different operation, or the
    /// account to open exists already.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The account does not exist (debits and reads never create one).
    #[error("unknown account {asset}/{account}")]
    UnknownAccount {
        /// The asset.
        asset: String,
        /// The account.
        account: String,
    },
    /// A malformed argument: a name, a key, an amount of zero, one that
    /// would overflow, a transfer to the same account.
    #[error("invalid: {0}")]
    Invalid(String),
    /// Another process (or a handle not yet dropped) holds the ledger file.
    #[error("the ledger {} is open in another process", path.display())]
    InUse {
        /// The ledger file.
        path: PathBuf,
    },
    /// redb failed (I/O, a corrupt file); `action` says at what.
    #[error("ledger: {action}: {source}")]
    Storage {
        /// What the ledger was doing.
        action: &'static str,
        /// redb's error.
        #[source]
        source: redb::Error,
    },
    /// PostgreSQL failed (connecting, a query, a commit, retries exhausted
    /// on contention); `action` says at what. The operation did not happen,
    /// unless the connection was lost during its commit (and again on the
    /// backend's own second try): then retry it with its key, which
    /// replays it if it landed.
    #[cfg(feature = "pg")]
    #[error("ledger: {action}: {}", describe(source))]
    Postgres {
        /// What the ledger was doing.
        action: &'static str,
        /// The client's error (a server's carries its SQLSTATE).
        #[source]
        source: postgres::Error,
    },
    /// `[ledger]` asks for what this build cannot do (a backend not
    /// compiled in, a missing `path` or `url`).
    #[error("ledger configuration: {0}")]
    Config(String),
    /// A record in the file does not decode: the file is damaged.
    #[error("ledger: corrupt record: {0}")]
    Corrupt(String),
}

/// What a caller sees of an [`Error`]: the WIT `ledger` error's cases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Not granted, or (at the capability) does not exist.
    AccessDenied,
    /// A debit past the overdraft limit.
    InsufficientFunds,
    /// An idempotency key reused for another operation; an account that exists.
    Conflict,
    /// An account that does not exist.
    UnknownAccount,
    /// A malformed argument.
    Invalid,
    /// The ledger itself failed (storage); the operation did not happen.
    Internal,
}

impl Error {
    /// The kind a caller acts on.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::AccessDenied => ErrorKind::AccessDenied,
            Error::InsufficientFunds { .. } => ErrorKind::InsufficientFunds,
            Error::Conflict(_) => ErrorKind::Conflict,
            Error::UnknownAccount { .. } => ErrorKind::UnknownAccount,
            Error::Invalid(_) => ErrorKind::Invalid,
            Error::InUse { .. } | Error::Storage { .. } | Error::Config(_) | Error::Corrupt(_) => {
                ErrorKind::Internal
            }
            #[cfg(feature = "pg")]
            Error::Postgres { .. } => ErrorKind::Internal,
        }
    }

    pub(crate) fn unknown(asset: &str, account: &str) -> Error {
        Error::UnknownAccount {
            asset: asset.to_owned(),
            account: account.to_owned(),
        }
    }
}

/// Wraps any redb error with what the ledger was doing.
pub(crate) fn storage<E: Into<redb::Error>>(action: &'static str) -> impl FnOnce(E) -> Error {
    move |e| Error::Storage {
        action,
        source: e.into(),
    }
}

/// A PostgreSQL error with the server's message and SQLSTATE (the client's
/// own `Display` says only "db error" for those).
#[cfg(feature = "pg")]
fn describe(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{db} (SQLSTATE {})", db.code().code()),
        None => e.to_string(),
    }
}
