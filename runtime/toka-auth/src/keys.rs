//! Ed25519 keys, shared by [tokens](crate::token) and [module signatures](crate::module_sig),
//! and their one-line text forms.
//!
//! A secret key is stored as its 32-byte seed, a public key as its 32-byte
//! compressed point, each base64 (standard alphabet, padded) behind a prefix
//! that says what it is:
//!
//! ```text
//! toka-ed25519-secret:<44 base64 chars>
//! toka-ed25519-public:<44 base64 chars>
//! ```
//!
//! The prefixes exist so that a public key pasted where a secret one is
//! expected (or the reverse) is refused instead of silently misread, and so
//! that a leaked secret is recognisable to secret scanners.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::Signer as _;
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

use crate::error::KeyError;
pub use crate::key_id::KeyId;
pub(crate) use crate::key_id::{hex_decode, hex_encode};

/// Prefix of a secret key's text form.
pub const SECRET_KEY_PREFIX: &str = "toka-ed25519-secret:";
/// Prefix of a public key's text form.
pub const PUBLIC_KEY_PREFIX: &str = "toka-ed25519-public:";

/// An Ed25519 private key.
///
/// The key bytes are wiped when the value is dropped, and `Debug` prints only
/// the public [`KeyId`]. There is deliberately no `Display`: the only way to
/// turn the key into text is [`SigningKey::to_text`], whose result is itself
/// wiped on drop.
#[derive(Clone)]
pub struct SigningKey(ed25519_dalek::SigningKey);

impl SigningKey {
    /// Generates a key from the operating system's random number generator.
    pub fn generate() -> Result<Self, KeyError> {
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::fill(seed.as_mut_slice()).map_err(|e| KeyError::Randomness(e.to_string()))?;
        Ok(Self::from_seed(&seed))
    }

    /// Builds the key from its 32-byte seed (RFC 8032's "private key").
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self(ed25519_dalek::SigningKey::from_bytes(seed))
    }

    /// The 32-byte seed, for storing the key; wiped when dropped.
    pub fn to_seed(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0.to_bytes())
    }

    /// Parses the text form `toka-ed25519-secret:<base64 seed>`; surrounding
    /// whitespace (a file's trailing newline) is ignored.
    pub fn from_text(text: &str) -> Result<Self, KeyError> {
        let b64 = text
            .trim()
            .strip_prefix(SECRET_KEY_PREFIX)
            .ok_or(KeyError::InvalidSecretKey)?;
        let bytes = Zeroizing::new(
            STANDARD
                .decode(b64)
                .map_err(|_| KeyError::InvalidSecretKey)?,
        );
        let seed: &[u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| KeyError::InvalidSecretKey)?;
        Ok(Self::from_seed(seed))
    }

    /// The text form `toka-ed25519-secret:<base64 seed>` (no newline), for a
    /// key file or a secrets store.
    pub fn to_text(&self) -> SecretText {
        let seed = self.to_seed();
        SecretText(Zeroizing::new(format!(
            "{SECRET_KEY_PREFIX}{}",
            STANDARD.encode(seed.as_slice())
        )))
    }

    /// The matching public key.
    pub fn verifying_key(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// The public key's [`KeyId`].
    pub fn key_id(&self) -> KeyId {
        self.verifying_key().key_id()
    }

    /// Signs `message` (pure Ed25519, no prehash).
    pub(crate) fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.0.sign(message).to_bytes()
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("key_id", &self.key_id())
            .finish_non_exhaustive()
    }
}

impl FromStr for SigningKey {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, KeyError> {
        Self::from_text(s)
    }
}

/// A secret key's text form: wiped when dropped, and redacted by `Debug` so
/// that logging a struct holding one does not leak it.
pub struct SecretText(Zeroizing<String>);

impl SecretText {
    /// The text itself, to write to a key file or a secrets store.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretText(<redacted>)")
    }
}

/// An Ed25519 public key: verifies tokens and module signatures.
///
/// `Display` and [`FromStr`] use the text form `toka-ed25519-public:<base64>`.
/// Small-order ("weak") points are refused when parsing, since any signature
/// verifies under them for some messages.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(ed25519_dalek::VerifyingKey);

impl PublicKey {
    /// Builds the key from its 32-byte compressed Edwards point.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, KeyError> {
        let key = ed25519_dalek::VerifyingKey::from_bytes(bytes)
            .map_err(|_| KeyError::InvalidPublicKey)?;
        if key.is_weak() {
            return Err(KeyError::InvalidPublicKey);
        }
        Ok(Self(key))
    }

    /// The 32-byte compressed Edwards point.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// A short fingerprint naming this key in tokens and signature files.
    pub fn key_id(&self) -> KeyId {
        let digest = Sha256::digest(self.0.as_bytes());
        let mut id = [0u8; 16];
        id.copy_from_slice(&digest[..16]);
        KeyId(id)
    }

    /// Checks `signature` over `message` with `verify_strict`, which also
    /// refuses non-canonical signatures so one message has one valid signature.
    pub(crate) fn verify(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        let signature = ed25519_dalek::Signature::from_bytes(signature);
        self.0.verify_strict(message, &signature).is_ok()
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{PUBLIC_KEY_PREFIX}{}",
            STANDARD.encode(self.0.as_bytes())
        )
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl FromStr for PublicKey {
    type Err = KeyError;

    /// Parses `toka-ed25519-public:<base64>`, ignoring surrounding whitespace.
    fn from_str(s: &str) -> Result<Self, KeyError> {
        let b64 = s
            .trim()
            .strip_prefix(PUBLIC_KEY_PREFIX)
            .ok_or(KeyError::InvalidPublicKey)?;
        let bytes = STANDARD
            .decode(b64)
            .map_err(|_| KeyError::InvalidPublicKey)?;
        let bytes: &[u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| KeyError::InvalidPublicKey)?;
        Self::from_bytes(bytes)
    }
}

impl FromStr for KeyId {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, KeyError> {
        hex_decode(s).map(KeyId).ok_or(KeyError::InvalidKeyId)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_forms_round_trip() {
        let key = SigningKey::generate().unwrap();
        let text = key.to_text();
        assert!(text.expose().starts_with(SECRET_KEY_PREFIX));
        let back = SigningKey::from_text(&format!("{}\n", text.expose())).unwrap();
        assert_eq!(*back.to_seed(), *key.to_seed());

        let public = key.verifying_key();
        let parsed: PublicKey = format!("  {public}\n").parse().unwrap();
        assert_eq!(parsed, public);
        assert_eq!(parsed.key_id(), key.key_id());
        assert_eq!(
            key.key_id().to_string().parse::<KeyId>().unwrap(),
            key.key_id()
        );
    }

    #[test]
    fn prefixes_are_not_interchangeable() {
        let key = SigningKey::generate().unwrap();
        let public = key.verifying_key().to_string();
        assert_eq!(
            SigningKey::from_text(&public).unwrap_err(),
            KeyError::InvalidSecretKey
        );
        assert_eq!(
            key.to_text().expose().parse::<PublicKey>().unwrap_err(),
            KeyError::InvalidPublicKey
        );
    }

    #[test]
    fn bad_text_is_rejected() {
        for text in [
            "",
            "toka-ed25519-secret:",
            "toka-ed25519-secret:not base64!",
            "toka-ed25519-secret:AAAA",
            // 33 bytes.
            "toka-ed25519-secret:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        ] {
            assert!(SigningKey::from_text(text).is_err(), "{text:?}");
        }
        // The identity point is a valid encoding but a weak key.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert_eq!(
            PublicKey::from_bytes(&identity).unwrap_err(),
            KeyError::InvalidPublicKey
        );
        assert!("00".parse::<KeyId>().is_err());
        assert!("zz".repeat(16).parse::<KeyId>().is_err());
    }

    #[test]
    fn debug_does_not_show_key_material() {
        let key = SigningKey::from_seed(&[7u8; 32]);
        let debug = format!("{key:?}");
        let seed_b64 = STANDARD.encode([7u8; 32]);
        assert!(!debug.contains(&seed_b64), "{debug}");
        assert!(!debug.contains(&hex_encode(&[7u8; 32])), "{debug}");
        assert!(!debug.contains("7, 7, 7"), "{debug}");
        assert!(debug.contains(&key.key_id().to_string()), "{debug}");
        let text = key.to_text();
        let debug = format!("{text:?}");
        assert!(!debug.contains(&seed_b64), "{debug}");
        assert_eq!(debug, "SecretText(<redacted>)");
    }
}
