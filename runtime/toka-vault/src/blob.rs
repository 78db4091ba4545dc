//! [`BlobId`] and the sealed blob file format.
//!
//! A blob file is `MAGIC | nonce | ciphertext | tag`, where the plaintext is the blob's bytes
//! padded with zeros to a multiple of 256 bytes (so file sizes reveal sizes only roughly).
//! The associated data binds the file to one version of one blob: namespace, name, size,
//! file id and write generation. Decryption with any other binding fails, which is how a
//! swapped-in file (another blob's, or an older version of this one) is caught.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer, de::Error as _};

use crate::key::{Keys, NONCE_LEN, TAG_LEN, random_bytes};
use crate::{Result, hex};

/// Identifies one write of one blob; it is the blob file's name under `blobs/`.
///
/// Random rather than derived from the blob's name, so file names leak nothing, and fresh
/// per write, so a new version never overwrites the file the durable manifest still points to.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BlobId([u8; 16]);

impl BlobId {
    pub(crate) fn random() -> Result<Self> {
        random_bytes().map(Self)
    }

    /// The name of the blob's temp file while it is being written.
    pub(crate) fn temp_file_name(&self) -> String {
        format!("{self}{TEMP_SUFFIX}")
    }
}

/// Suffix of a blob file still being written.
pub(crate) const TEMP_SUFFIX: &str = ".tmp";

impl fmt::Display for BlobId {
    /// 32 lowercase hex digits: the file name under `blobs/`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(&self.0))
    }
}

impl fmt::Debug for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlobId({self})")
    }
}

/// The error of parsing a [`BlobId`]: the text is not 32 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a blob id (32 lowercase hex digits)")]
pub struct ParseBlobIdError;

impl FromStr for BlobId {
    type Err = ParseBlobIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        hex::decode(s).map(Self).ok_or(ParseBlobIdError)
    }
}

impl Serialize for BlobId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for BlobId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <&str>::deserialize(d)?.parse().map_err(D::Error::custom)
    }
}

/// Identifies the format (and its version) at the start of every blob file.
const MAGIC: &[u8; 8] = b"TKVBLOB1";
const HEADER_LEN: usize = MAGIC.len() + NONCE_LEN;
/// Plaintext is padded to a multiple of this many bytes.
pub(crate) const PAD_TO: u64 = 256;

/// Padded plaintext length: at least one block, so even an empty blob looks like a small one.
fn padded_len(size: u64) -> u64 {
    size.div_ceil(PAD_TO).max(1) * PAD_TO
}

/// The exact length of the file holding a blob of `size` bytes.
pub(crate) fn file_len(size: u64) -> u64 {
    HEADER_LEN as u64 + padded_len(size) + TAG_LEN as u64
}

/// What a blob file is bound to; any difference makes it fail to open.
pub(crate) struct Binding<'a> {
    pub(crate) namespace: &'a str,
    pub(crate) name: &'a str,
    pub(crate) size: u64,
    pub(crate) id: BlobId,
    pub(crate) generation: u64,
}

impl Binding<'_> {
    /// Length-prefixed fields, so no two bindings encode to the same bytes.
    fn associated_data(&self) -> Vec<u8> {
        let mut aad = Vec::with_capacity(64 + self.namespace.len() + self.name.len());
        aad.extend_from_slice(MAGIC);
        for field in [self.namespace.as_bytes(), self.name.as_bytes()] {
            aad.extend_from_slice(&(field.len() as u64).to_le_bytes());
            aad.extend_from_slice(field);
        }
        aad.extend_from_slice(&self.size.to_le_bytes());
        aad.extend_from_slice(&self.id.0);
        aad.extend_from_slice(&self.generation.to_le_bytes());
        aad
    }
}

/// The complete file for `data`, which must be `binding.size` bytes long.
pub(crate) fn seal(keys: &Keys, binding: &Binding<'_>, data: &[u8]) -> Result<Vec<u8>> {
    debug_assert_eq!(data.len() as u64, binding.size);
    let file_len = usize::try_from(file_len(binding.size)).map_err(|_| crate::Error::Encrypt)?;
    let mut file = Vec::with_capacity(file_len);
    file.extend_from_slice(MAGIC);
    let nonce = Keys::fresh_nonce()?;
    file.extend_from_slice(&nonce);
    file.extend_from_slice(data);
    // The padding is encrypted along with the data, so it is as opaque as the rest.
    file.resize(file_len - TAG_LEN, 0);
    let tag = keys.seal(&nonce, &binding.associated_data(), &mut file[HEADER_LEN..])?;
    file.extend_from_slice(&tag);
    Ok(file)
}

/// Decrypts a blob file in place into the blob's bytes; `None` if it is not exactly the
/// file `binding` describes.
pub(crate) fn open(keys: &Keys, binding: &Binding<'_>, mut file: Vec<u8>) -> Option<Vec<u8>> {
    if file.len() as u64 != file_len(binding.size) || !file.starts_with(MAGIC) {
        return None;
    }
    let (header, rest) = file.split_at_mut(HEADER_LEN);
    let (body, tag) = rest.split_at_mut(rest.len() - TAG_LEN);
    let nonce: &[u8; NONCE_LEN] = header[MAGIC.len()..].try_into().ok()?;
    let tag: &[u8; TAG_LEN] = (&*tag).try_into().ok()?;
    if !keys.open(nonce, &binding.associated_data(), body, tag) {
        return None;
    }
    // `file_len` matched, so the size fits in the body; drop header, padding and tag.
    let size = usize::try_from(binding.size).ok()?;
    file.copy_within(HEADER_LEN..HEADER_LEN + size, 0);
    file.truncate(size);
    Some(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::VaultKey;

    fn keys() -> Keys {
        Keys::derive(&VaultKey::from_bytes([9; 32]))
    }

    fn binding(size: u64) -> Binding<'static> {
        Binding {
            namespace: "ns",
            name: "a/b",
            size,
            id: BlobId([1; 16]),
            generation: 7,
        }
    }

    #[test]
    fn padding_hides_exact_sizes() {
        assert_eq!(padded_len(0), 256);
        assert_eq!(padded_len(1), 256);
        assert_eq!(padded_len(256), 256);
        assert_eq!(padded_len(257), 512);
        assert_eq!(file_len(3), file_len(200));
    }

    #[test]
    fn round_trip() {
        let keys = keys();
        for data in [&b""[..], b"hello", &[0x5a; 1000]] {
            let b = binding(data.len() as u64);
            let file = seal(&keys, &b, data).unwrap();
            assert_eq!(file.len() as u64, file_len(b.size));
            assert_eq!(open(&keys, &b, file).as_deref(), Some(data));
        }
    }

    #[test]
    fn any_change_in_binding_fails() {
        let keys = keys();
        let file = seal(&keys, &binding(5), b"hello").unwrap();
        let variants = [
            Binding {
                namespace: "other",
                ..binding(5)
            },
            Binding {
                name: "a/c",
                ..binding(5)
            },
            Binding {
                generation: 6,
                ..binding(5)
            },
            Binding {
                id: BlobId([2; 16]),
                ..binding(5)
            },
            // Same padded length, so only the associated data tells them apart.
            binding(4),
        ];
        for b in &variants {
            assert_eq!(open(&keys, b, file.clone()), None);
        }
        assert!(open(&keys, &binding(5), file).is_some());
    }

    #[test]
    fn associated_data_is_unambiguous() {
        let a = Binding {
            namespace: "ab",
            name: "c",
            ..binding(1)
        };
        let b = Binding {
            namespace: "a",
            name: "bc",
            ..binding(1)
        };
        assert_ne!(a.associated_data(), b.associated_data());
    }

    #[test]
    fn blob_id_text_round_trip() {
        let id = BlobId([0xab; 16]);
        assert_eq!(id.to_string(), "ab".repeat(16));
        assert_eq!(id.to_string().parse(), Ok(id));
        assert!("AB".repeat(16).parse::<BlobId>().is_err());
    }
}
