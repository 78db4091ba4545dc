//! Toka's auth capability: password hashes, signed tokens and signed
//! WebAssembly modules.
//!
//! The wasmtime host glue (agents hashing and verifying passwords, issuing and
//! verifying tokens, when granted) and the `toka keygen` / `toka sign` /
//! `toka verify` commands are built on this crate; it has no wasmtime in it.
//!
//! # Algorithms
//!
//! - **Passwords**: Argon2id, v=19, OWASP's m=19 MiB, t=2, p=1, 16-byte random
//!   salt, 32-byte output, as a PHC string (`$argon2id$v=19$m=19456,t=2,p=1$…`).
//!   Verification is constant time and refuses PHC strings asking for more
//!   than 64 MiB, 10 passes or 8 lanes, since they may come from a guest.
//! - **Tokens**: JWTs in JWS compact form signed with EdDSA (Ed25519) only,
//!   header `{"alg":"EdDSA","typ":"JWT","kid":…}`; readable by any JWT library.
//! - **Modules**: a detached `<file>.wasm.sig` holding an Ed25519 signature
//!   over the SHA-256 of the whole file (modules and components alike).
//! - **Keys**: one Ed25519 key type for both, stored as a one-line text
//!   `toka-ed25519-secret:<base64 seed>` / `toka-ed25519-public:<base64>`.
//!
//! # What is rejected
//!
//! - [`password::verify_password`]: a wrong password is `Ok(false)`; a
//!   malformed PHC string, a non-Argon2id one, or one over the cost limits is
//!   an error.
//! - [`token::verify`]: oversized or malformed tokens, `alg: none`, any `alg`
//!   but `EdDSA` (HS256 algorithm confusion), `crit`, a `kid` of another key,
//!   bad signatures (tampered header, payload or signature; another key),
//!   invalid claims, expired, not yet valid, wrong or missing audience, each
//!   with its own [`TokenError`] variant.
//! - [`module_sig::verify_module_file`]: no signature file
//!   ([`Unsigned`](ModuleSigError::Unsigned)), an unparsable one
//!   ([`Malformed`](ModuleSigError::Malformed)), a signer outside the trusted
//!   set ([`UntrustedKey`](ModuleSigError::UntrustedKey)), a changed module
//!   ([`Tampered`](ModuleSigError::Tampered)), a forged signature
//!   ([`BadSignature`](ModuleSigError::BadSignature)).
//!
//! Errors never contain a password, a private key or a token, and keys'
//! `Debug` output shows only the public [`KeyId`].
//!
//! # Example
//!
//! ```
//! use toka_auth::token::{self, Claims, Validation};
//! use toka_auth::SigningKey;
//!
//! let key = SigningKey::generate()?;
//! let now = token::unix_now();
//! let claims = Claims::new("agent:alice", now, now + 300)
//!     .with_audience("toka:kv")
//!     .with_claim("role", "reader");
//! let jwt = token::issue(&key, &claims)?;
//!
//! let checked = token::verify(
//!     &key.verifying_key(),
//!     &jwt,
//!     &Validation::new().with_audience("toka:kv"),
//! )?;
//! assert_eq!(checked.extra["role"], "reader");
//! # Ok::<(), toka_auth::Error>(())
//! ```
//!
//! # Layout
//!
//! - [`password`]: Argon2id hashing and verification, parameters.
//! - [`token`]: [`Claims`](token::Claims), [`Validation`](token::Validation),
//!   [`issue`](token::issue), [`verify`](token::verify).
//! - [`keys`]: [`SigningKey`], [`PublicKey`], [`KeyId`] and their text forms.
//! - [`module_sig`]: [`keygen`](module_sig::keygen), signing and verifying
//!   modules, the `.sig` format.
//! - [`error`]: one error enum per concern and the umbrella [`Error`].

#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod error;
#[cfg(feature = "host")]
pub mod host;
mod key_id;
pub mod keys;
pub mod module_sig;
pub mod password;
pub mod token;

pub use error::{Error, KeyError, ModuleSigError, PasswordError, Result, TokenError};
pub use keys::{KeyId, PublicKey, SecretText, SigningKey};
