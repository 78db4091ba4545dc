//! Error types: one enum per concern, and [`Error`] to carry any of them.
//!
//! Every function returns the narrow enum of its own concern (for example
//! [`token::verify`](crate::token::verify) returns [`TokenError`]), so the host
//! glue can map each case to a WIT error variant with an exhaustive `match`.
//!
//! No variant carries a password, a private key or a token, nor any text
//! derived from one (such as a serde message quoting the payload): errors end
//! up in logs and in guests' hands.

use std::path::PathBuf;

use crate::key_id::KeyId;

/// A `Result` whose error defaults to the crate-wide [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Any error from this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Hashing or verifying a password failed.
    #[error(transparent)]
    Password(#[from] PasswordError),
    /// Issuing or verifying a token failed.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// Generating or parsing a key failed.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// Signing or verifying a WebAssembly module failed.
    #[error(transparent)]
    ModuleSig(#[from] ModuleSigError),
}

/// Why hashing or verifying a password failed.
///
/// A wrong password is not an error: [`verify_password`](crate::password::verify_password)
/// returns `Ok(false)`.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// The stored hash is not a complete PHC string (`$argon2id$v=19$m=…,t=…,p=…$salt$hash`).
    #[error("malformed password hash (expected an Argon2id PHC string)")]
    MalformedHash,
    /// The stored hash is a well-formed PHC string for an algorithm other than Argon2id.
    #[error("unsupported password hash algorithm (only Argon2id is accepted)")]
    UnsupportedAlgorithm,
    /// The stored hash asks for more memory, passes or lanes than
    /// verification allows (see [`password::MAX_VERIFY_M_COST_KIB`](crate::password::MAX_VERIFY_M_COST_KIB)
    /// and its siblings).
    #[error("password hash parameters exceed the verification limits")]
    CostTooHigh,
    /// Argon2 refused the input or parameters (for example an over-long password).
    #[error("password hashing failed: {reason}")]
    Hashing {
        /// Argon2's description of the problem; it never contains the password.
        reason: String,
    },
    /// The operating system's random number generator failed.
    #[error("random number generator failed: {0}")]
    Randomness(String),
}

/// Why issuing or verifying a token failed.
///
/// Each rejection has its own variant so callers can tell an expired session
/// from a forgery. Tampering with the payload and tampering with the signature
/// are cryptographically indistinguishable; both are [`TokenError::BadSignature`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// Longer than [`token::MAX_TOKEN_LEN`](crate::token::MAX_TOKEN_LEN): refused
    /// before parsing, or (issuing) the claims are too big to fit.
    #[error("token exceeds the maximum length")]
    TooLarge,
    /// Not a compact JWS: wrong segment count, bad base64url, or a header that
    /// is not a JSON object with a string `alg`.
    #[error("malformed token")]
    Malformed,
    /// The header says `alg: none`: the token carries no signature.
    #[error("unsigned token (alg \"none\") rejected")]
    Unsigned,
    /// The header names an algorithm other than `EdDSA` (for example `HS256`,
    /// the algorithm-confusion attack).
    #[error("unsupported token algorithm (only EdDSA is accepted)")]
    UnsupportedAlgorithm,
    /// The header uses a feature this verifier does not implement (`crit`), or
    /// a `typ` other than `JWT`.
    #[error("unsupported token header")]
    UnsupportedHeader,
    /// The header's `kid` names a different key than the one verifying it.
    #[error("token was issued with a different key")]
    KeyMismatch,
    /// The signature does not verify: the header, payload or signature was
    /// changed, or another key signed it without naming itself in `kid`.
    #[error("token signature is invalid")]
    BadSignature,
    /// The signed payload is not a valid claim set (missing `sub`, `exp` or
    /// `iat`, or a wrongly typed registered claim).
    #[error("token claims are invalid")]
    InvalidClaims,
    /// `exp` has passed (allowing for leeway).
    #[error("token has expired")]
    Expired,
    /// `nbf` is still in the future (allowing for leeway).
    #[error("token is not yet valid")]
    NotYetValid,
    /// The token's `aud` does not name this verifier's audience, or the
    /// verifier expects no audience but the token is addressed to one.
    #[error("token audience does not match")]
    WrongAudience,
    /// The verifier requires an audience and the token has no `aud`.
    #[error("token has no audience but one is required")]
    MissingAudience,
    /// [`Validation::leeway_secs`](crate::token::Validation::leeway_secs) is
    /// above [`token::MAX_LEEWAY_SECS`](crate::token::MAX_LEEWAY_SECS).
    #[error("leeway of {leeway_secs}s exceeds the maximum of {max}s")]
    LeewayTooLarge {
        /// The configured leeway.
        leeway_secs: u64,
        /// The largest leeway accepted.
        max: u64,
    },
    /// Issuing: a custom claim reuses a name the [`Claims`](crate::token::Claims)
    /// struct owns (`sub`, `aud`, `exp`, `nbf`, `iat`), which would emit a
    /// duplicate JSON key.
    #[error("custom claim '{name}' collides with a registered claim")]
    ReservedClaim {
        /// The colliding claim name (the caller's own input, not a token's).
        name: String,
    },
}

/// Why generating or parsing a key failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    /// Not a `toka-ed25519-secret:` line holding 32 base64 bytes.
    #[error("invalid Ed25519 secret key (expected 'toka-ed25519-secret:<base64 seed>')")]
    InvalidSecretKey,
    /// Not a `toka-ed25519-public:` line holding a valid, non-weak Ed25519 point.
    #[error("invalid Ed25519 public key (expected 'toka-ed25519-public:<base64 key>')")]
    InvalidPublicKey,
    /// Not 32 lowercase or uppercase hex digits.
    #[error("invalid key id (expected 32 hex digits)")]
    InvalidKeyId,
    /// The operating system's random number generator failed.
    #[error("random number generator failed: {0}")]
    Randomness(String),
}

/// Why a WebAssembly module's signature was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum ModuleSigError {
    /// There is no signature file next to the module.
    #[error("module is not signed: {} does not exist", sig_path.display())]
    Unsigned {
        /// Where the signature was expected.
        sig_path: PathBuf,
    },
    /// The signature file is not a version-1 Toka module signature.
    #[error("malformed module signature: {reason}")]
    Malformed {
        /// Which part of the format is wrong.
        reason: &'static str,
    },
    /// The module's bytes differ from the bytes that were signed.
    #[error("module was modified after it was signed")]
    Tampered,
    /// The signature does not verify under the trusted key it names: the
    /// signature file was forged or corrupted.
    #[error("module signature is invalid")]
    BadSignature,
    /// The signature was made by a key that is not in the trusted set.
    #[error("module is signed by untrusted key {key_id}")]
    UntrustedKey {
        /// The signer's key id, for the operator to look up.
        key_id: KeyId,
    },
    /// Reading the module or its signature file failed.
    #[error("reading {}", path.display())]
    Io {
        /// The file that could not be read.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
}
