//! Toka's master key and everything sealed under it.
//!
//! One 32-byte [`MasterKey`] (a 0600 key file or `TOKA_MASTER_KEY`) is the
//! root of every capability that encrypts at rest: each derives its own
//! subkey from it with a context from [`contexts`], the one table of them,
//! so no capability can compute another's key. This crate owns
//!
//! - the key: parsing, generating, key files, [`MasterKey::derive`]
//!   (module `key`);
//! - the contexts ([`contexts`]);
//! - the crash-safe rotation of the key over every store sealed under it,
//!   with its `<key file>.lock`, its `<key file>.new` and the roll-forward /
//!   roll-back of an interrupted rotation, written over the [`Sealed`] trait
//!   that each store implements in its own crate (module `rotation`).
//!
//! It knows no store and no wasm: the secret store and the vault implement
//! [`Sealed`], the `toka` command lists the ones a configuration names and
//! calls [`rotate`], [`rotate_unrecorded`] or [`settle`].
//!
//! ```no_run
//! use toka_keyring::{KeyFile, MasterKey, Sealed, contexts};
//!
//! # fn stores() -> Vec<Box<dyn Sealed>> { Vec::new() }
//! # fn main() -> Result<(), toka_keyring::Error> {
//! let key_file = KeyFile::new("/etc/toka/master.key");
//! let mut stores: Vec<Box<dyn Sealed>> = stores();
//! // Before opening anything: finish or undo a rotation that was killed.
//! toka_keyring::settle(&key_file, &mut stores)?;
//! let key: MasterKey = key_file.read()?;
//! let vault_key = key.derive(contexts::VAULT);
//! # let _ = vault_key;
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod key;
mod rotation;

pub use key::{KeyError, MASTER_KEY_ENV, MASTER_KEY_LEN, MasterKey, default_key_file};
pub use rotation::{
    BoxError, Error, KeyFile, RotationLock, Sealed, Settled, Unsupported, UnsupportedError, rotate,
    rotate_unrecorded, settle,
};

/// The key-derivation contexts: every subkey of the master key, in one
/// table. [`MasterKey::derive`] with distinct contexts gives independent
/// keys.
///
/// The byte strings are part of the stores' format: a store sealed under a
/// context opens only with the same one, so an entry is never changed,
/// only added (`"<crate>/<purpose>/v<n>"`), and never reused for another
/// purpose.
pub mod contexts {
    /// The secret store's record key (`toka-secrets`).
    pub const SECRETS: &str = "toka-secrets/store/v1";
    /// The vault key (`toka-vault`), from which the vault derives its own
    /// sealing and key-check keys.
    pub const VAULT: &str = "toka-vault/v1";

    /// Every context above, for checking that none repeats.
    pub const ALL: &[&str] = &[SECRETS, VAULT];
}

#[cfg(test)]
mod tests {
    use super::contexts;

    /// The strings existing stores were sealed under: changing one would
    /// make every such store unreadable.
    #[test]
    fn contexts_are_the_ones_existing_stores_use_and_distinct() {
        assert_eq!(contexts::SECRETS, "toka-secrets/store/v1");
        assert_eq!(contexts::VAULT, "toka-vault/v1");
        for (i, a) in contexts::ALL.iter().enumerate() {
            for b in &contexts::ALL[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }
}
