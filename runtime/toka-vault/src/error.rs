//! The vault's error type.
//!
//! No variant carries blob contents or key material; names and namespaces given by a caller
//! are echoed only in shortened form, so an agent cannot flood a log through an error.

use std::io;
use std::path::PathBuf;

/// `Result` with the vault's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong in a vault operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The namespace is empty, too long or has a character outside `[A-Za-z0-9._-]`.
    #[error("invalid namespace {namespace:?}: {reason}")]
    InvalidNamespace {
        /// The namespace as given, shortened if long.
        namespace: String,
        /// Which rule it breaks.
        reason: &'static str,
    },

    /// The blob name is empty, too long, has a character outside `[A-Za-z0-9._/-]`, starts
    /// with `/` or has a `..` segment.
    #[error("invalid blob name {name:?}: {reason}")]
    InvalidName {
        /// The name as given, shortened if long.
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },

    /// The content type is too long or not printable ASCII.
    #[error("invalid content type: {reason}")]
    InvalidContentType {
        /// Which rule it breaks.
        reason: &'static str,
    },

    /// The blob is larger than [`Limits::max_blob_bytes`](crate::Limits::max_blob_bytes).
    #[error("blob {name:?} in namespace {namespace:?} is {size} bytes, over the {max}-byte limit")]
    TooLarge {
        /// The namespace written to.
        namespace: String,
        /// The blob's name.
        name: String,
        /// The blob's size in bytes.
        size: u64,
        /// The limit it exceeds.
        max: u64,
    },

    /// The write would take the namespace over [`Limits::quota_bytes`](crate::Limits::quota_bytes).
    #[error("namespace {namespace:?} would use {used} bytes, over its {quota}-byte quota")]
    QuotaExceeded {
        /// The namespace written to.
        namespace: String,
        /// The namespace's total size had the write gone through.
        used: u64,
        /// The quota it exceeds.
        quota: u64,
    },

    /// The blob's file is missing, truncated or altered (or was swapped for another blob's
    /// file or an older version). Its data is not returned.
    #[error("blob {name:?} in namespace {namespace:?} is corrupt or was tampered with")]
    Corrupt {
        /// The namespace of the blob.
        namespace: String,
        /// The blob's name.
        name: String,
    },

    /// The manifest is missing, truncated or altered; the vault refuses to open rather than
    /// serve entries it cannot vouch for. Nothing in the directory is changed.
    #[error("vault manifest {path} is corrupt or was tampered with: {reason}")]
    CorruptManifest {
        /// The manifest file.
        path: PathBuf,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// The vault was sealed with a different key. (A manifest whose header, the nonce or
    /// key-check bytes, was altered also reads as this: the two cannot be told apart.)
    #[error("wrong key for the vault at {dir}")]
    WrongKey {
        /// The vault directory.
        dir: PathBuf,
    },

    /// Another [`Vault`](crate::Vault), in this process or another, has the directory open.
    #[error("the vault at {dir} is already open (its LOCK file is held)")]
    Locked {
        /// The vault directory.
        dir: PathBuf,
    },

    /// The AEAD refused to seal: the message is beyond the cipher's limits (256 GiB), which a
    /// blob held in memory does not reach in practice.
    #[error("encryption failed: message too long for the cipher")]
    Encrypt,

    /// A filesystem or OS randomness operation failed.
    #[error("{context}")]
    Io {
        /// What was being done, naming the path.
        context: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// True for [`Error::Corrupt`] and [`Error::CorruptManifest`]: the stored data failed
    /// verification (as opposed to a bad request or an I/O failure).
    pub fn is_corrupt(&self) -> bool {
        matches!(self, Error::Corrupt { .. } | Error::CorruptManifest { .. })
    }

    /// True when the caller's input is to blame: a name, size or quota the
    /// request got wrong, or a key that does not open the vault. False for
    /// what the input does not explain (I/O, corruption, a vault held by
    /// another process). `toka`'s exit code (2 or 1) and the host's
    /// capability errors both follow it.
    pub fn is_operator_error(&self) -> bool {
        matches!(
            self,
            Error::InvalidNamespace { .. }
                | Error::InvalidName { .. }
                | Error::InvalidContentType { .. }
                | Error::TooLarge { .. }
                | Error::QuotaExceeded { .. }
                | Error::WrongKey { .. }
        )
    }

    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// Longest caller-supplied string echoed in an error.
const EXCERPT_CHARS: usize = 64;

/// Shortens a caller-supplied string for an error message.
pub(crate) fn excerpt(s: &str) -> String {
    match s.char_indices().nth(EXCERPT_CHARS) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpt_shortens_long_input_on_a_char_boundary() {
        assert_eq!(excerpt("short"), "short");
        let long = "é".repeat(100);
        let cut = excerpt(&long);
        assert_eq!(cut.chars().count(), EXCERPT_CHARS + 1);
        assert!(cut.ends_with('…'));
    }
}
