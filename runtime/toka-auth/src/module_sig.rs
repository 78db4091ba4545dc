//! Detached signatures for WebAssembly modules and components.
//!
//! `toka sign agent.wasm` writes `agent.wasm.sig`, a small JSON document:
//!
//! ```json
//! {
//!   "version": 1,
//!   "key_id": "<32 hex digits: the signer's KeyId>",
//!   "sha256": "<64 hex digits: SHA-256 of the whole file>",
//!   "signature": "<base64 Ed25519 signature>"
//! }
//! ```
//!
//! The signature is Ed25519 over `"toka-module-signature-v1\0" || SHA-256(file)`.
//! The prefix separates this use of a key from [token](crate::token) signing:
//! a JWS signing input is base64url and dots only and can never contain the
//! NUL byte, so nothing signed here can be replayed as a token or back.
//!
//! Every byte of the file is covered, custom sections included, and the file
//! is never parsed, so core modules (`\0asm` version 1) and components (layer
//! 1) are handled alike and a bug in a parser cannot skip a section.
//!
//! # Why not wasmsign2
//!
//! `wasmsign2` 0.2.8 (the WebAssembly signatures proposal's implementation)
//! does accept the component header, but only at the framing level: it reads
//! component sections as if they were core sections. It calls itself a proof
//! of concept; it embeds the signature in a custom section (rewriting the
//! module) or detaches it in a binary format; by design it lets sections
//! appended after signing through unverified; and it brings a second Ed25519
//! implementation (`ed25519-compact`) and key format alongside the
//! `ed25519-dalek` keys tokens use. A whole-file detached signature is a
//! simpler guarantee ("these exact bytes") in about a hundred lines.
//!
//! # What [`verify_module`] rejects
//!
//! [`ModuleSigError::UntrustedKey`] if no trusted key has the signature's key
//! id; [`ModuleSigError::Tampered`] if the file's SHA-256 differs from the one
//! signed; [`ModuleSigError::BadSignature`] if the signature does not verify
//! (the signature file was forged or corrupted). [`verify_module_file`] adds
//! [`ModuleSigError::Unsigned`] when there is no `.sig` file and
//! [`ModuleSigError::Malformed`] when it cannot be parsed.

use std::fs::File;
use std::io::{self, Read as _};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::error::{KeyError, ModuleSigError};
use crate::keys::{KeyId, PublicKey, SecretText, SigningKey, hex_decode, hex_encode};

/// Module signing keys are the same Ed25519 keys that sign tokens; the
/// signed message's prefix keeps the two uses apart.
pub type ModuleSigningKey = SigningKey;

/// The signature format [`Signature::to_file_string`] writes and
/// [`Signature::parse`] accepts.
pub const SIGNATURE_VERSION: u32 = 1;
/// Appended to a module's file name to find its signature (`a.wasm` → `a.wasm.sig`).
pub const SIGNATURE_SUFFIX: &str = ".sig";

/// Domain-separation prefix of the signed message; see the module docs.
const SIGNED_PREFIX: &[u8] = b"toka-module-signature-v1\0";
/// A version-1 signature file is about 250 bytes; reading is capped so a
/// wrong path cannot make the verifier slurp a huge file.
const MAX_SIGNATURE_FILE_LEN: u64 = 4096;

/// Generates a signing key pair for `toka keygen`: the secret key's text
/// (for `toka-signing.key`, to be written with mode 0600) and the public
/// key's text (for `toka-signing.pub`). Neither has a trailing newline.
pub fn keygen() -> Result<(SecretText, String), KeyError> {
    let key = SigningKey::generate()?;
    let public = key.verifying_key().to_string();
    Ok((key.to_text(), public))
}

/// A detached signature over one module's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    key_id: KeyId,
    sha256: [u8; 32],
    signature: [u8; 64],
}

/// The on-disk form; `deny_unknown_fields` so a future version's extra field
/// is refused rather than silently ignored.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignatureFile {
    version: u32,
    key_id: String,
    sha256: String,
    signature: String,
}

impl Signature {
    /// The id of the key that made the signature.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// The SHA-256 of the module as signed.
    pub fn sha256(&self) -> &[u8; 32] {
        &self.sha256
    }

    /// The `.sig` file's contents (pretty JSON, trailing newline).
    pub fn to_file_string(&self) -> String {
        let file = SignatureFile {
            version: SIGNATURE_VERSION,
            key_id: self.key_id.to_string(),
            sha256: hex_encode(&self.sha256),
            signature: STANDARD.encode(self.signature),
        };
        let mut text =
            serde_json::to_string_pretty(&file).expect("a struct of strings always serializes");
        text.push('\n');
        text
    }

    /// Parses a `.sig` file's contents.
    pub fn parse(text: &str) -> Result<Self, ModuleSigError> {
        let malformed = |reason| ModuleSigError::Malformed { reason };
        let file: SignatureFile = serde_json::from_str(text)
            .map_err(|_| malformed("not a JSON object with version, key_id, sha256, signature"))?;
        if file.version != SIGNATURE_VERSION {
            return Err(malformed("unsupported version (expected 1)"));
        }
        let key_id = file
            .key_id
            .parse()
            .map_err(|_| malformed("key_id is not 32 hex digits"))?;
        let sha256 = hex_decode(&file.sha256).ok_or(malformed("sha256 is not 64 hex digits"))?;
        let signature = STANDARD
            .decode(&file.signature)
            .ok()
            .and_then(|bytes| <[u8; 64]>::try_from(bytes).ok())
            .ok_or(malformed("signature is not 64 base64-encoded bytes"))?;
        Ok(Self {
            key_id,
            sha256,
            signature,
        })
    }
}

impl FromStr for Signature {
    type Err = ModuleSigError;

    fn from_str(s: &str) -> Result<Self, ModuleSigError> {
        Self::parse(s)
    }
}

/// Signs the module or component `wasm` (its exact bytes).
pub fn sign_module(key: &ModuleSigningKey, wasm: &[u8]) -> Signature {
    let sha256: [u8; 32] = Sha256::digest(wasm).into();
    Signature {
        key_id: key.key_id(),
        sha256,
        signature: key.sign(&signed_message(&sha256)),
    }
}

/// Checks that `sig` is a valid signature over `wasm` by one of `trusted`,
/// and returns that key's id.
pub fn verify_module(
    wasm: &[u8],
    sig: &Signature,
    trusted: &[PublicKey],
) -> Result<KeyId, ModuleSigError> {
    let candidates: Vec<&PublicKey> = trusted
        .iter()
        .filter(|key| key.key_id() == sig.key_id)
        .collect();
    if candidates.is_empty() {
        return Err(ModuleSigError::UntrustedKey { key_id: sig.key_id });
    }
    // The recorded digest only makes the error precise; the decision below is
    // made on the digest of the bytes actually given.
    let sha256: [u8; 32] = Sha256::digest(wasm).into();
    if sha256 != sig.sha256 {
        return Err(ModuleSigError::Tampered);
    }
    let message = signed_message(&sha256);
    if candidates
        .iter()
        .any(|key| key.verify(&message, &sig.signature))
    {
        Ok(sig.key_id)
    } else {
        Err(ModuleSigError::BadSignature)
    }
}

/// Where a module's signature lives: its path with [`SIGNATURE_SUFFIX`] appended.
pub fn signature_path(module: &Path) -> PathBuf {
    let mut path = module.as_os_str().to_owned();
    path.push(SIGNATURE_SUFFIX);
    PathBuf::from(path)
}

/// A module whose signature checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedModule {
    /// The verified bytes. Compile these, not the file again: it may have
    /// changed since it was read.
    pub bytes: Vec<u8>,
    /// The trusted key that signed them.
    pub key_id: KeyId,
}

/// Reads the module at `path` and its signature at [`signature_path`], and
/// verifies them. A missing signature file is [`ModuleSigError::Unsigned`].
pub fn verify_module_file(
    path: impl AsRef<Path>,
    trusted: &[PublicKey],
) -> Result<VerifiedModule, ModuleSigError> {
    let path = path.as_ref();
    let io_error = |path: &Path| {
        let path = path.to_owned();
        move |source| ModuleSigError::Io { path, source }
    };
    let bytes = std::fs::read(path).map_err(io_error(path))?;

    let sig_path = signature_path(path);
    let file = match File::open(&sig_path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(ModuleSigError::Unsigned { sig_path });
        }
        Err(e) => return Err(io_error(&sig_path)(e)),
    };
    let mut text = Vec::new();
    file.take(MAX_SIGNATURE_FILE_LEN + 1)
        .read_to_end(&mut text)
        .map_err(io_error(&sig_path))?;
    if text.len() as u64 > MAX_SIGNATURE_FILE_LEN {
        return Err(ModuleSigError::Malformed {
            reason: "signature file is too large",
        });
    }
    let text = std::str::from_utf8(&text).map_err(|_| ModuleSigError::Malformed {
        reason: "signature file is not UTF-8",
    })?;
    let sig = Signature::parse(text)?;

    let key_id = verify_module(&bytes, &sig, trusted)?;
    Ok(VerifiedModule { bytes, key_id })
}

fn signed_message(sha256: &[u8; 32]) -> Vec<u8> {
    [SIGNED_PREFIX, sha256.as_slice()].concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest core module: magic and version 1, no sections.
    const CORE_MODULE: &[u8] = b"\0asm\x01\0\0\0";
    /// An empty component plus a custom section (`name` "x", payload "hi").
    const COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0\x00\x04\x01xhi";

    fn signer() -> SigningKey {
        SigningKey::from_seed(&[9u8; 32])
    }

    #[test]
    fn keygen_texts_parse_back() {
        let (secret, public) = keygen().unwrap();
        let key = SigningKey::from_text(secret.expose()).unwrap();
        assert_eq!(public.parse::<PublicKey>().unwrap(), key.verifying_key());
    }

    #[test]
    fn round_trip_core_module_and_component() {
        let key = signer();
        for wasm in [CORE_MODULE, COMPONENT] {
            let sig = sign_module(&key, wasm);
            let parsed = Signature::parse(&sig.to_file_string()).unwrap();
            assert_eq!(parsed, sig);
            let key_id = verify_module(wasm, &parsed, &[key.verifying_key()]).unwrap();
            assert_eq!(key_id, key.key_id());
        }
    }

    #[test]
    fn any_flipped_byte_is_tampering() {
        let key = signer();
        let sig = sign_module(&key, COMPONENT);
        for i in 0..COMPONENT.len() {
            let mut tampered = COMPONENT.to_vec();
            tampered[i] ^= 0x01;
            assert!(
                matches!(
                    verify_module(&tampered, &sig, &[key.verifying_key()]),
                    Err(ModuleSigError::Tampered)
                ),
                "byte {i}"
            );
        }
        let mut appended = COMPONENT.to_vec();
        appended.extend_from_slice(b"\x00\x02\x01y");
        assert!(matches!(
            verify_module(&appended, &sig, &[key.verifying_key()]),
            Err(ModuleSigError::Tampered)
        ));
    }

    #[test]
    fn forged_signature_file_is_bad_signature() {
        let key = signer();
        let mut sig = sign_module(&key, COMPONENT);
        sig.signature[0] ^= 0x01;
        assert!(matches!(
            verify_module(COMPONENT, &sig, &[key.verifying_key()]),
            Err(ModuleSigError::BadSignature)
        ));

        // Updating the recorded digest to match a modified module is not enough.
        let modified = [COMPONENT, b"\x00\x02\x01y"].concat();
        let mut sig = sign_module(&key, COMPONENT);
        sig.sha256 = Sha256::digest(&modified).into();
        assert!(matches!(
            verify_module(&modified, &sig, &[key.verifying_key()]),
            Err(ModuleSigError::BadSignature)
        ));
    }

    #[test]
    fn untrusted_key() {
        let key = signer();
        let other = SigningKey::from_seed(&[10u8; 32]);
        let sig = sign_module(&other, COMPONENT);
        for trusted in [&[key.verifying_key()][..], &[]] {
            match verify_module(COMPONENT, &sig, trusted) {
                Err(ModuleSigError::UntrustedKey { key_id }) => assert_eq!(key_id, other.key_id()),
                other => panic!("expected UntrustedKey, got {other:?}"),
            }
        }
        // Trusting several keys, one of them the signer, is fine.
        let trusted = [key.verifying_key(), other.verifying_key()];
        assert_eq!(
            verify_module(COMPONENT, &sig, &trusted).unwrap(),
            other.key_id()
        );
    }

    #[test]
    fn files_signed_unsigned_and_malformed() {
        let dir = tempfile::tempdir().unwrap();
        let module = dir.path().join("agent.wasm");
        std::fs::write(&module, COMPONENT).unwrap();
        let trusted = [signer().verifying_key()];

        let sig_path = dir.path().join("agent.wasm.sig");
        assert_eq!(signature_path(&module), sig_path);
        match verify_module_file(&module, &trusted) {
            Err(ModuleSigError::Unsigned { sig_path: p }) => assert_eq!(p, sig_path),
            other => panic!("expected Unsigned, got {other:?}"),
        }

        let sig = sign_module(&signer(), COMPONENT);
        std::fs::write(&sig_path, sig.to_file_string()).unwrap();
        let verified = verify_module_file(&module, &trusted).unwrap();
        assert_eq!(verified.bytes, COMPONENT);
        assert_eq!(verified.key_id, signer().key_id());

        std::fs::write(&sig_path, "{}").unwrap();
        assert!(matches!(
            verify_module_file(&module, &trusted),
            Err(ModuleSigError::Malformed { .. })
        ));
        std::fs::write(&sig_path, vec![b' '; 5000]).unwrap();
        assert!(matches!(
            verify_module_file(&module, &trusted),
            Err(ModuleSigError::Malformed { .. })
        ));

        let missing = dir.path().join("missing.wasm");
        assert!(matches!(
            verify_module_file(&missing, &trusted),
            Err(ModuleSigError::Io { .. })
        ));
    }

    #[test]
    fn malformed_signature_text() {
        let good = sign_module(&signer(), CORE_MODULE).to_file_string();
        let value: serde_json::Value = serde_json::from_str(&good).unwrap();
        let with = |field: &str, v: serde_json::Value| {
            let mut value = value.clone();
            value[field] = v;
            value.to_string()
        };
        for text in [
            String::new(),
            "not json".to_owned(),
            "[]".to_owned(),
            with("version", 2.into()),
            with("key_id", "abc".into()),
            with("sha256", "00".into()),
            with("signature", "AAAA".into()),
            with("extra", true.into()),
        ] {
            assert!(
                matches!(
                    Signature::parse(&text),
                    Err(ModuleSigError::Malformed { .. })
                ),
                "{text}"
            );
        }
    }
}
