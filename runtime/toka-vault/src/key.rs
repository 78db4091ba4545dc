//! [`VaultKey`], and the keys the vault derives from it.

use std::{fmt, io};

use chacha20poly1305::{AeadInPlace, Key, KeyInit, Tag, XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::{Error, Result};

/// Length of a [`VaultKey`] in bytes.
pub const KEY_LEN: usize = 32;
/// Length of an XChaCha20-Poly1305 nonce.
pub(crate) const NONCE_LEN: usize = 24;
/// Length of a Poly1305 tag.
pub(crate) const TAG_LEN: usize = 16;
/// Length of the key-check value stored in the manifest header.
pub(crate) const KEY_CHECK_LEN: usize = 32;

/// The 32-byte secret a vault is sealed with.
///
/// The caller derives it from its master key; the vault only takes the bytes. It is wiped
/// from memory on drop and its `Debug` output is redacted. It is deliberately not `Clone`,
/// so the secret is not copied around by accident.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct VaultKey([u8; KEY_LEN]);

impl VaultKey {
    /// Wraps 32 key bytes. The caller should wipe its own copy (e.g. with `zeroize`).
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// The vault key derived from Toka's master key (context
    /// [`toka_keyring::contexts::VAULT`]), as the runtime and the CLI derive it.
    pub fn from_master(master: &toka_keyring::MasterKey) -> Self {
        Self(*master.derive(toka_keyring::contexts::VAULT))
    }
}

impl fmt::Debug for VaultKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("VaultKey(<redacted>)")
    }
}

/// Labels for key derivation: each derived key has one job, so the AEAD key is never also
/// published (the key check) or reused across formats.
const AEAD_KEY_LABEL: &[u8] = b"toka-vault/v1/aead-key";
const KEY_CHECK_LABEL: &[u8] = b"toka-vault/v1/key-check";

/// The working keys, derived once at open.
pub(crate) struct Keys {
    cipher: XChaCha20Poly1305,
    /// Keys the key check: an HMAC of the manifest's nonce, stored in clear beside it so a
    /// wrong key is reported as such rather than as a corrupt manifest. Keyed over the
    /// per-write nonce, so it differs between vaults sharing a key and reveals nothing.
    check_key: Zeroizing<[u8; 32]>,
}

impl Keys {
    pub(crate) fn derive(key: &VaultKey) -> Self {
        let aead_key = Zeroizing::new(hmac_sha256(&key.0, AEAD_KEY_LABEL));
        Self {
            cipher: XChaCha20Poly1305::new(Key::from_slice(aead_key.as_slice())),
            check_key: Zeroizing::new(hmac_sha256(&key.0, KEY_CHECK_LABEL)),
        }
    }

    /// The key check to store beside `nonce`.
    pub(crate) fn key_check(&self, nonce: &[u8; NONCE_LEN]) -> [u8; KEY_CHECK_LEN] {
        hmac_sha256(self.check_key.as_slice(), nonce)
    }

    /// Whether `check` was made by [`Keys::key_check`] with this key (constant time).
    pub(crate) fn verify_key_check(&self, nonce: &[u8; NONCE_LEN], check: &[u8]) -> bool {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.check_key.as_slice())
            .expect("HMAC takes keys of any length");
        mac.update(nonce);
        mac.verify_slice(check).is_ok()
    }

    /// A fresh random nonce; one per sealed file, never reused.
    pub(crate) fn fresh_nonce() -> Result<[u8; NONCE_LEN]> {
        random_bytes()
    }

    /// Encrypts `buf` in place under `nonce` (from [`Keys::fresh_nonce`]); returns the tag.
    pub(crate) fn seal(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
    ) -> Result<[u8; TAG_LEN]> {
        let tag = self
            .cipher
            .encrypt_in_place_detached(XNonce::from_slice(nonce), aad, buf)
            .map_err(|_| Error::Encrypt)?;
        Ok(tag.into())
    }

    /// Decrypts `buf` in place; `false` when it does not authenticate (wrong data, wrong
    /// associated data or wrong key), in which case `buf` holds garbage.
    #[must_use]
    pub(crate) fn open(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> bool {
        self.cipher
            .decrypt_in_place_detached(XNonce::from_slice(nonce), aad, buf, Tag::from_slice(tag))
            .is_ok()
    }
}

fn hmac_sha256(key: &[u8], label: &[u8]) -> [u8; 32] {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(label);
    mac.finalize().into_bytes().into()
}

/// Bytes from the OS random number generator.
pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut bytes = [0; N];
    getrandom::fill(&mut bytes)
        .map_err(|e| Error::io("reading OS randomness", io::Error::other(e)))?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let key = VaultKey::from_bytes([0xAB; KEY_LEN]);
        let shown = format!("{key:?}");
        assert_eq!(shown, "VaultKey(<redacted>)");
        assert!(!shown.to_lowercase().contains("ab"));
    }

    #[test]
    fn seal_then_open_round_trips_and_binds_aad() {
        let keys = Keys::derive(&VaultKey::from_bytes([1; KEY_LEN]));
        let nonce = Keys::fresh_nonce().unwrap();
        let mut buf = *b"attack at dawn";
        let tag = keys.seal(&nonce, b"aad", &mut buf).unwrap();
        assert_ne!(&buf, b"attack at dawn");

        let mut wrong_aad = buf;
        assert!(!keys.open(&nonce, b"other", &mut wrong_aad, &tag));

        let other = Keys::derive(&VaultKey::from_bytes([2; KEY_LEN]));
        let mut wrong_key = buf;
        assert!(!other.open(&nonce, b"aad", &mut wrong_key, &tag));

        assert!(keys.open(&nonce, b"aad", &mut buf, &tag));
        assert_eq!(&buf, b"attack at dawn");
    }

    #[test]
    fn nonces_are_fresh() {
        assert_ne!(Keys::fresh_nonce().unwrap(), Keys::fresh_nonce().unwrap());
    }

    #[test]
    fn key_check_verifies_only_with_its_key_and_nonce() {
        let a = Keys::derive(&VaultKey::from_bytes([1; KEY_LEN]));
        let b = Keys::derive(&VaultKey::from_bytes([2; KEY_LEN]));
        let (n1, n2) = ([1; NONCE_LEN], [2; NONCE_LEN]);
        let check = a.key_check(&n1);
        assert!(a.verify_key_check(&n1, &check));
        assert!(!b.verify_key_check(&n1, &check));
        assert!(!a.verify_key_check(&n2, &check));
        // Different for each write, so it does not link vaults that share a key.
        assert_ne!(check, a.key_check(&n2));
        assert_ne!(check, [1; KEY_CHECK_LEN]);
    }
}
