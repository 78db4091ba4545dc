//! [`Entry`] and the sealed manifest file format.
//!
//! The manifest file is `MAGIC | nonce | key check | ciphertext | tag`. The plaintext is JSON
//! (`{"version", "next_generation", "entries"}`) padded with spaces to a multiple of 1 KiB.
//! The key check (an HMAC of the nonce under a key derived from the vault key) lets
//! [`Vault::open`](crate::Vault::open) say "wrong key" instead of "corrupt"; it and the magic
//! are the associated data, so neither can be altered without the manifest failing to open.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::blob::BlobId;
use crate::key::{KEY_CHECK_LEN, Keys, NONCE_LEN, TAG_LEN};
use crate::names::{validate_content_type, validate_name, validate_namespace};
use crate::{Error, Result, hex};

/// The metadata of one stored blob, as listed and returned by the vault.
///
/// A snapshot: changing it changes nothing in the vault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Entry {
    /// The namespace (one per agent) the blob lives in.
    pub namespace: String,
    /// The blob's name within its namespace.
    pub name: String,
    /// Size of the content in bytes.
    pub size: u64,
    /// SHA-256 of the content, checked on every read.
    #[serde(with = "hex::serde32")]
    pub sha256: [u8; 32],
    /// The content type given when the blob was last written; may be empty.
    pub content_type: String,
    /// When the blob was first written, in milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// When the blob was last written, in milliseconds since the Unix epoch.
    pub updated_ms: u64,
    /// The file under `blobs/` holding the current version.
    pub blob_id: BlobId,
    /// The vault-wide write counter at the last write; bound into the blob file so an older
    /// version of the file cannot be passed off as the current one.
    pub generation: u64,
}

impl Entry {
    /// [`Entry::sha256`] as 64 lowercase hex digits.
    pub fn sha256_hex(&self) -> String {
        hex::encode(&self.sha256)
    }
}

/// Identifies the format (and its version) at the start of the manifest file.
const MAGIC: &[u8; 8] = b"TKVMANI1";
const HEADER_LEN: usize = MAGIC.len() + NONCE_LEN + KEY_CHECK_LEN;
/// The version field inside the sealed JSON, for changes that keep the outer framing.
const VERSION: u32 = 1;
/// The plaintext is padded to a multiple of this many bytes.
const PAD_TO: usize = 1024;

/// The manifest in memory: entries by namespace, then by name, so listings come out sorted.
#[derive(Debug, Default)]
pub(crate) struct Manifest {
    /// Exceeds every generation in use; persisted so generations never repeat across opens.
    pub(crate) next_generation: u64,
    namespaces: BTreeMap<String, BTreeMap<String, Entry>>,
}

#[derive(Serialize)]
struct StoredRef<'a> {
    version: u32,
    next_generation: u64,
    entries: Vec<&'a Entry>,
}

/// Read first, so a newer format is reported as such rather than as undecodable.
#[derive(Deserialize)]
struct StoredVersion {
    version: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Stored {
    #[expect(
        dead_code,
        reason = "checked through `StoredVersion`; listed for `deny_unknown_fields`"
    )]
    version: u32,
    next_generation: u64,
    entries: Vec<Entry>,
}

impl Manifest {
    pub(crate) fn get(&self, namespace: &str, name: &str) -> Option<&Entry> {
        self.namespaces.get(namespace)?.get(name)
    }

    /// Inserts or replaces; returns the replaced entry.
    pub(crate) fn insert(&mut self, entry: Entry) -> Option<Entry> {
        self.namespaces
            .entry(entry.namespace.clone())
            .or_default()
            .insert(entry.name.clone(), entry)
    }

    pub(crate) fn remove(&mut self, namespace: &str, name: &str) -> Option<Entry> {
        let entries = self.namespaces.get_mut(namespace)?;
        let removed = entries.remove(name);
        // An empty namespace is not listed by `namespaces()`.
        if entries.is_empty() {
            self.namespaces.remove(namespace);
        }
        removed
    }

    pub(crate) fn list(&self, namespace: &str) -> Vec<Entry> {
        self.namespaces
            .get(namespace)
            .map(|entries| entries.values().cloned().collect())
            .unwrap_or_default()
    }

    pub(crate) fn namespaces(&self) -> Vec<String> {
        self.namespaces.keys().cloned().collect()
    }

    pub(crate) fn usage(&self, namespace: &str) -> u64 {
        self.namespaces
            .get(namespace)
            .map_or(0, |entries| entries.values().map(|e| e.size).sum())
    }

    pub(crate) fn blob_ids(&self) -> HashSet<BlobId> {
        self.entries().map(|e| e.blob_id).collect()
    }

    pub(crate) fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.namespaces.values().flat_map(BTreeMap::values)
    }

    /// The complete manifest file.
    pub(crate) fn seal(&self, keys: &Keys) -> Result<Vec<u8>> {
        let stored = StoredRef {
            version: VERSION,
            next_generation: self.next_generation,
            entries: self.entries().collect(),
        };
        let nonce = Keys::fresh_nonce()?;
        let key_check = keys.key_check(&nonce);
        let mut file = Vec::new();
        file.extend_from_slice(MAGIC);
        file.extend_from_slice(&nonce);
        file.extend_from_slice(&key_check);
        serde_json::to_writer(&mut file, &stored)
            .map_err(|e| Error::io("encoding the manifest", e.into()))?;
        // Trailing spaces are JSON whitespace: the padding needs no length field.
        let plain_len = file.len() - HEADER_LEN;
        file.resize(
            HEADER_LEN + plain_len.div_ceil(PAD_TO).max(1) * PAD_TO,
            b' ',
        );
        let tag = keys.seal(
            &nonce,
            &associated_data(&key_check),
            &mut file[HEADER_LEN..],
        )?;
        file.extend_from_slice(&tag);
        Ok(file)
    }

    /// Whether the manifest file read from `path` (used in errors) was sealed under `keys`,
    /// from its header alone: the rest of the file is not authenticated, so `true` does not
    /// mean it will open.
    pub(crate) fn is_sealed_with(keys: &Keys, file: &[u8], path: &Path) -> Result<bool> {
        let (nonce, key_check) = header(file, path)?;
        Ok(keys.verify_key_check(nonce, key_check))
    }

    /// Opens a manifest file read from `path` (used in errors); `dir` is the vault directory.
    pub(crate) fn open(keys: &Keys, mut file: Vec<u8>, path: &Path, dir: &Path) -> Result<Self> {
        let corrupt = |reason| Error::CorruptManifest {
            path: path.to_owned(),
            reason,
        };
        let (nonce, key_check) = header(&file, path).map(|(n, c)| (*n, *c))?;
        if !keys.verify_key_check(&nonce, &key_check) {
            return Err(Error::WrongKey {
                dir: dir.to_owned(),
            });
        }
        let body_len = file.len() - HEADER_LEN - TAG_LEN;
        let (body, tag) = file[HEADER_LEN..].split_at_mut(body_len);
        let tag: &[u8; TAG_LEN] = (&*tag).try_into().map_err(|_| corrupt("truncated"))?;
        if !keys.open(&nonce, &associated_data(&key_check), body, tag) {
            return Err(corrupt("does not authenticate (altered or truncated)"));
        }
        let undecodable = |_| corrupt("authentic but undecodable");
        let StoredVersion { version } = serde_json::from_slice(body).map_err(undecodable)?;
        if version != VERSION {
            return Err(corrupt("unsupported manifest version"));
        }
        let stored: Stored = serde_json::from_slice(body).map_err(undecodable)?;
        Self::from_stored(stored).ok_or_else(|| corrupt("inconsistent entries"))
    }

    /// Rejects what this crate never writes: invalid names, duplicates, a shared blob file,
    /// a generation not below `next_generation`.
    fn from_stored(stored: Stored) -> Option<Self> {
        let mut manifest = Manifest {
            next_generation: stored.next_generation,
            namespaces: BTreeMap::new(),
        };
        let mut ids = HashSet::new();
        for entry in stored.entries {
            let valid = validate_namespace(&entry.namespace).is_ok()
                && validate_name(&entry.name).is_ok()
                && validate_content_type(&entry.content_type).is_ok()
                && entry.generation < stored.next_generation
                && ids.insert(entry.blob_id);
            if !valid || manifest.insert(entry).is_some() {
                return None;
            }
        }
        Some(manifest)
    }
}

/// The nonce and key check from a manifest file's header.
fn header<'a>(
    file: &'a [u8],
    path: &Path,
) -> Result<(&'a [u8; NONCE_LEN], &'a [u8; KEY_CHECK_LEN])> {
    let corrupt = |reason| Error::CorruptManifest {
        path: path.to_owned(),
        reason,
    };
    if file.len() < HEADER_LEN + TAG_LEN {
        return Err(corrupt("truncated"));
    }
    if !file.starts_with(MAGIC) {
        return Err(corrupt(
            "not a toka-vault manifest, or an unsupported format version",
        ));
    }
    let (nonce, key_check) = file[MAGIC.len()..HEADER_LEN].split_at(NONCE_LEN);
    let nonce = nonce.try_into().map_err(|_| corrupt("truncated"))?;
    let key_check = key_check.try_into().map_err(|_| corrupt("truncated"))?;
    Ok((nonce, key_check))
}

fn associated_data(key_check: &[u8; KEY_CHECK_LEN]) -> Vec<u8> {
    [&MAGIC[..], key_check].concat()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::VaultKey;

    fn keys(byte: u8) -> Keys {
        Keys::derive(&VaultKey::from_bytes([byte; 32]))
    }

    fn entry(namespace: &str, name: &str, id: u8, generation: u64) -> Entry {
        Entry {
            namespace: namespace.into(),
            name: name.into(),
            size: 3,
            sha256: [id; 32],
            content_type: "text/plain".into(),
            created_ms: 1,
            updated_ms: 2,
            blob_id: format!("{:032x}", id).parse().unwrap(),
            generation,
        }
    }

    fn sample() -> Manifest {
        let mut m = Manifest {
            next_generation: 10,
            ..Manifest::default()
        };
        m.insert(entry("b", "x", 1, 1));
        m.insert(entry("a", "z", 2, 2));
        m.insert(entry("a", "y", 3, 3));
        m
    }

    fn open(keys: &Keys, file: Vec<u8>) -> Result<Manifest> {
        Manifest::open(keys, file, Path::new("manifest"), Path::new("."))
    }

    #[test]
    fn round_trip_and_ordering() {
        let keys = keys(1);
        let m = open(&keys, sample().seal(&keys).unwrap()).unwrap();
        assert_eq!(m.next_generation, 10);
        assert_eq!(m.namespaces(), ["a", "b"]);
        let names: Vec<_> = m.list("a").into_iter().map(|e| e.name).collect();
        assert_eq!(names, ["y", "z"]);
        assert_eq!(m.get("b", "x"), Some(&entry("b", "x", 1, 1)));
        assert_eq!(m.usage("a"), 6);
    }

    #[test]
    fn padded_to_a_multiple() {
        let keys = keys(1);
        let file = Manifest::default().seal(&keys).unwrap();
        assert_eq!(file.len(), HEADER_LEN + PAD_TO + TAG_LEN);
    }

    #[test]
    fn the_header_tells_the_key_without_the_body() {
        let file = sample().seal(&keys(1)).unwrap();
        let path = Path::new("manifest");
        assert!(Manifest::is_sealed_with(&keys(1), &file, path).unwrap());
        assert!(!Manifest::is_sealed_with(&keys(2), &file, path).unwrap());
        // Only the header is read: a damaged body is for `open` to find.
        let mut damaged = file.clone();
        let last = damaged.len() - 1;
        damaged[last] ^= 0x01;
        assert!(Manifest::is_sealed_with(&keys(1), &damaged, path).unwrap());
        assert!(matches!(
            Manifest::is_sealed_with(&keys(1), &file[..HEADER_LEN], path),
            Err(Error::CorruptManifest { .. })
        ));
    }

    #[test]
    fn wrong_key_is_not_corrupt() {
        let file = sample().seal(&keys(1)).unwrap();
        assert!(matches!(open(&keys(2), file), Err(Error::WrongKey { .. })));
    }

    #[test]
    fn every_flipped_byte_is_refused() {
        let keys = keys(1);
        let file = sample().seal(&keys).unwrap();
        let key_check_input = MAGIC.len()..HEADER_LEN;
        for i in (0..file.len()).filter(|i| !key_check_input.contains(i)) {
            let mut bad = file.clone();
            bad[i] ^= 0x01;
            assert!(
                matches!(open(&keys, bad), Err(Error::CorruptManifest { .. })),
                "byte {i}"
            );
        }
        // A damaged nonce or key check cannot be told from a wrong key; either way, no data.
        for i in key_check_input {
            let mut bad = file.clone();
            bad[i] ^= 0x01;
            assert!(
                matches!(open(&keys, bad), Err(Error::WrongKey { .. })),
                "byte {i}"
            );
        }
    }

    #[test]
    fn newer_version_is_reported_as_such() {
        let keys = keys(1);
        let json = br#"{"version":2,"next_generation":0,"entries":[],"new_field":1}"#;
        let nonce = Keys::fresh_nonce().unwrap();
        let key_check = keys.key_check(&nonce);
        let mut body = json.to_vec();
        let tag = keys
            .seal(&nonce, &associated_data(&key_check), &mut body)
            .unwrap();
        let file = [&MAGIC[..], &nonce, &key_check, &body, &tag].concat();
        let err = open(&keys, file).unwrap_err();
        assert!(
            matches!(err, Error::CorruptManifest { reason, .. } if reason.contains("version")),
            "{err:?}"
        );
    }

    #[test]
    fn every_truncation_is_corrupt() {
        let keys = keys(1);
        let file = sample().seal(&keys).unwrap();
        for len in 0..file.len() {
            assert!(
                matches!(
                    open(&keys, file[..len].to_vec()),
                    Err(Error::CorruptManifest { .. })
                ),
                "length {len}"
            );
        }
    }

    #[test]
    fn inconsistent_entries_are_refused() {
        let stale_generation = Stored {
            version: VERSION,
            next_generation: 1,
            entries: vec![entry("a", "x", 1, 1)],
        };
        assert!(Manifest::from_stored(stale_generation).is_none());

        let shared_file = Stored {
            version: VERSION,
            next_generation: 9,
            entries: vec![entry("a", "x", 1, 1), entry("a", "y", 1, 2)],
        };
        assert!(Manifest::from_stored(shared_file).is_none());

        let duplicate = Stored {
            version: VERSION,
            next_generation: 9,
            entries: vec![entry("a", "x", 1, 1), entry("a", "x", 2, 2)],
        };
        assert!(Manifest::from_stored(duplicate).is_none());

        let bad_name = Stored {
            version: VERSION,
            next_generation: 9,
            entries: vec![entry("a", "../x", 1, 1)],
        };
        assert!(Manifest::from_stored(bad_name).is_none());
    }

    #[test]
    fn remove_drops_empty_namespaces() {
        let mut m = sample();
        assert!(m.remove("b", "x").is_some());
        assert_eq!(m.namespaces(), ["a"]);
        assert!(m.remove("b", "x").is_none());
    }
}
