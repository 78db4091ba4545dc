//! The encrypted secret store behind Toka's `secrets` capability.
//!
//! Operators store API keys and passwords with `toka secrets set NAME`;
//! agents read them through the host, and only the names their [`Grant`]
//! allows. This crate is the storage, crypto and permission logic, with no
//! wasm in sight:
//!
//! ```no_run
//! use toka_secrets::{Grant, MasterKey, SecretStore};
//!
//! # fn main() -> toka_secrets::Result<()> {
//! let key = MasterKey::resolve(Some("/etc/toka/master.key".as_ref()))?;
//! let store = SecretStore::open("/var/lib/toka/secrets", key)?;
//! store.set("stripe/live", b"sk_live_...")?;
//!
//! let grant = Grant::new(["stripe/*"])?;
//! if grant.allows("stripe/live") {
//!     let value = store.get("stripe/live")?;
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # Threat model, in brief
//!
//! Values are encrypted at rest with XChaCha20-Poly1305 under a key derived
//! from one 32-byte [`MasterKey`] kept outside the database (a 0600 key file
//! or `TOKA_MASTER_KEY`). Someone holding the database files but not the key
//! cannot read or undetectably alter any value, nor pass one secret's
//! ciphertext off as another's (the name is authenticated with it). They
//! *can* learn the secret **names** (stored in clear), each value's
//! **size** (ciphertext = plaintext + 41 bytes) and the **count** of
//! secrets; and, with write access, delete secrets or roll the store or a
//! single secret back to an older copy made under the same key.
//! Anyone holding the key, or the memory of a process using it, can read
//! everything. Decrypted values and key bytes are zeroed when dropped; that
//! is damage limitation, not a guarantee.
//!
//! # Layout
//!
//! - [`MasterKey`] is `toka_keyring`'s (loading, generating, key files,
//!   subkey derivation), re-exported here.
//! - `store`: [`SecretStore`]: the sled database of sealed records, key
//!   checking and atomic key rotation.
//! - `sealed`: [`SealedStore`], the store as the keyring's key rotation
//!   sees it.
//! - `record`: the versioned on-disk record format and its encryption.
//! - `value`: [`SecretValue`], a decrypted secret that redacts itself.
//! - `grant`: [`Grant`], an agent's permission patterns.
//! - `name`: the secret-name grammar ([`validate_name`]).
//! - `error`: [`Error`] and [`Result`].

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod error;
mod grant;
#[cfg(feature = "host")]
pub mod host;
mod name;
mod record;
mod sealed;
mod snapshot;
mod store;
mod value;

pub use error::{Error, Result};
pub use grant::Grant;
pub use name::{MAX_NAME_LEN, validate_name};
pub use sealed::SealedStore;
pub use store::SecretStore;
pub use toka_keyring::{KeyError, MASTER_KEY_ENV, MASTER_KEY_LEN, MasterKey};
pub use value::SecretValue;
