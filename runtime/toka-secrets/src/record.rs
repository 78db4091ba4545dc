//! The on-disk record: `version (1) || nonce (24) || ciphertext || tag (16)`.
//!
//! The version byte lets the format evolve; a reader refuses versions it does
//! not know instead of misreading them. It is also authenticated (prepended
//! to the associated data), so it cannot be flipped to reinterpret a record.

use chacha20poly1305::aead::rand_core::RngCore;
use chacha20poly1305::aead::{AeadInPlace, OsRng};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// XChaCha20-Poly1305, random nonce, caller-supplied associated data.
pub(crate) const FORMAT_V1: u8 = 1;

const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
const HEADER_LEN: usize = 1 + NONCE_LEN;

/// Bytes a record adds to its plaintext.
#[cfg(test)]
pub(crate) const OVERHEAD: usize = HEADER_LEN + TAG_LEN;

/// Why a record would not open; the caller knows which name to blame.
#[derive(Debug)]
pub(crate) enum OpenError {
    /// Written by a format this build does not know.
    Unsupported(u8),
    /// Truncated, tampered, under another key, or under other associated data.
    Invalid,
}

/// Encrypts `plaintext` under a fresh random nonce. `what` names the record
/// in the (practically impossible) encryption error.
pub(crate) fn seal(
    cipher: &XChaCha20Poly1305,
    ad: &[u8],
    plaintext: &[u8],
    what: &str,
) -> Result<Vec<u8>> {
    let mut nonce = [0; NONCE_LEN];
    OsRng
        .try_fill_bytes(&mut nonce)
        .map_err(|_| Error::Random)?;
    // Zeroizing until encrypted: on an early return it still holds plaintext.
    // Sized up front so nothing reallocates and strands a plaintext copy.
    let mut record = Zeroizing::new(Vec::with_capacity(HEADER_LEN + plaintext.len() + TAG_LEN));
    record.push(FORMAT_V1);
    record.extend_from_slice(&nonce);
    record.extend_from_slice(plaintext);
    let tag = cipher
        .encrypt_in_place_detached(
            XNonce::from_slice(&nonce),
            &full_ad(FORMAT_V1, ad),
            &mut record[HEADER_LEN..],
        )
        .map_err(|_| Error::Encrypt {
            name: what.to_owned(),
        })?;
    record.extend_from_slice(&tag);
    Ok(std::mem::take(&mut *record))
}

/// Authenticates and decrypts a record into a buffer zeroed on drop.
pub(crate) fn open(
    cipher: &XChaCha20Poly1305,
    ad: &[u8],
    record: &[u8],
) -> Result<Zeroizing<Vec<u8>>, OpenError> {
    let (&version, rest) = record.split_first().ok_or(OpenError::Invalid)?;
    if version != FORMAT_V1 {
        return Err(OpenError::Unsupported(version));
    }
    if rest.len() < NONCE_LEN + TAG_LEN {
        return Err(OpenError::Invalid);
    }
    let (nonce, body) = rest.split_at(NONCE_LEN);
    let (ciphertext, tag) = body.split_at(body.len() - TAG_LEN);
    let mut plaintext = Zeroizing::new(ciphertext.to_vec());
    cipher
        .decrypt_in_place_detached(
            XNonce::from_slice(nonce),
            &full_ad(version, ad),
            &mut plaintext,
            Tag::from_slice(tag),
        )
        .map_err(|_| OpenError::Invalid)?;
    Ok(plaintext)
}

fn full_ad(version: u8, ad: &[u8]) -> Vec<u8> {
    let mut full = Vec::with_capacity(1 + ad.len());
    full.push(version);
    full.extend_from_slice(ad);
    full
}

#[cfg(test)]
mod tests {
    use chacha20poly1305::KeyInit;

    use super::*;

    fn cipher(byte: u8) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(&[byte; 32].into())
    }

    #[test]
    fn round_trip_and_layout() {
        let c = cipher(1);
        let record = seal(&c, b"ad", b"hello", "x").unwrap();
        assert_eq!(record.len(), 5 + OVERHEAD);
        assert_eq!(record[0], FORMAT_V1);
        assert_eq!(open(&c, b"ad", &record).unwrap().as_slice(), b"hello");
    }

    #[test]
    fn nonces_are_fresh() {
        let c = cipher(1);
        assert_ne!(
            seal(&c, b"", b"same", "x").unwrap(),
            seal(&c, b"", b"same", "x").unwrap()
        );
    }

    #[test]
    fn rejects_wrong_key_ad_tampering_and_truncation() {
        let c = cipher(1);
        let record = seal(&c, b"ad", b"hello", "x").unwrap();
        assert!(matches!(
            open(&cipher(2), b"ad", &record),
            Err(OpenError::Invalid)
        ));
        assert!(matches!(
            open(&c, b"other", &record),
            Err(OpenError::Invalid)
        ));
        for i in 1..record.len() {
            let mut bad = record.clone();
            bad[i] ^= 1;
            assert!(
                matches!(open(&c, b"ad", &bad), Err(OpenError::Invalid)),
                "byte {i}"
            );
        }
        for len in 0..record.len() {
            assert!(open(&c, b"ad", &record[..len]).is_err(), "len {len}");
        }
        let mut future = record.clone();
        future[0] = 2;
        assert!(matches!(
            open(&c, b"ad", &future),
            Err(OpenError::Unsupported(2))
        ));
    }
}
