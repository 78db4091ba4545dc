//! An encrypted, crash-safe blob store: the storage behind Toka's `vault` capability.
//!
//! Agents put, get, delete and list blobs in their own namespace through the host; this crate
//! is only the storage and the cryptography (no wasmtime). One [`Vault`] is a directory sealed
//! with one [`VaultKey`]:
//!
//! ```
//! use toka_vault::{Limits, Vault, VaultKey};
//!
//! # fn main() -> toka_vault::Result<()> {
//! # let tmp = tempfile::tempdir().unwrap();
//! # let dir = tmp.path();
//! // The caller derives the key from its master key; the vault only takes the bytes.
//! let vault = Vault::open(dir, VaultKey::from_bytes([7; 32]))?;
//! vault.put("agent-a", "notes/today.txt", "text/plain", b"hello", &Limits::default())?;
//! let (entry, data) = vault.get("agent-a", "notes/today.txt")?.expect("just written");
//! assert_eq!((entry.size, data.as_slice()), (5, &b"hello"[..]));
//! # Ok(())
//! # }
//! ```
//!
//! # On-disk layout
//!
//! ```text
//! <dir>/
//!   LOCK                   empty; holds the advisory lock while a `Vault` is open
//!   manifest               the sealed manifest: every entry's metadata
//!   manifest.tmp           transient, only during a manifest write
//!   blobs/<32 hex>         one sealed blob per file, named by a random id
//!   blobs/<32 hex>.tmp     transient, only during a blob write
//! ```
//!
//! Every file is sealed with XChaCha20-Poly1305 under a key derived from the [`VaultKey`], with
//! a fresh random nonce per write. A blob's associated data binds its namespace, name, size,
//! file id and write generation, so a blob file swapped for another blob's file, or for an
//! older version of itself, fails to open and reads as [`Error::Corrupt`]. The manifest
//! (namespace, name, size, SHA-256, content type, timestamps, file id, generation per entry) is
//! one sealed file; a tampered or truncated manifest is refused at [`Vault::open`] with
//! [`Error::CorruptManifest`], never served. [`Vault::get`] also checks the decrypted content's
//! size and SHA-256 against the manifest.
//!
//! # Threat model, in brief
//!
//! Someone with the files but not the key learns the number of blobs, their approximate sizes
//! (plaintext is padded to a multiple of 256 bytes; the manifest to a multiple of 1 KiB) and the
//! files' timestamps, and nothing else: not namespaces, names, content types, contents, the
//! manifest's timestamps, nor whether two vaults share a key. Tampering is detected, not
//! prevented, and the key is needed to tell. What is *not* detected: rolling the whole
//! directory back to an older complete copy (nothing outside the directory records the
//! latest state), and deleting the whole vault.
//!
//! # Crash safety
//!
//! Every file is written as temp file → write → fsync → rename → fsync directory. A `put`
//! writes the new blob file first and the manifest last; a `delete` writes the manifest
//! first. A blob file that a write makes obsolete is removed only after the manifest that no
//! longer references it is durable. So a process killed at any point (SIGKILL included)
//! leaves the vault in the old or the new state, readable without [`Error::Corrupt`]; the
//! leftovers are unreferenced blob and temp files, which [`Vault::open`] removes. Durability
//! of directory entries relies on fsync of a directory, which is how unix does it.
//!
//! # Re-keying
//!
//! [`Vault::rekey`] re-encrypts every blob and the manifest under a new key, with the manifest
//! as the single commit point: every blob is re-sealed into a new file first, then the
//! manifest (sealed under the new key, referencing only the new files) replaces the old one,
//! then the old files go. Killed at any point, the vault is entirely under the old key or
//! entirely under the new one, and the other half's files are leftovers the next open
//! removes. [`Vault::key_matches`] tells which key a vault is under without opening it, which
//! is what a caller re-keying several stores together needs to finish or undo an interrupted
//! rotation.
//!
//! # One writer process
//!
//! [`Vault::open`] takes an exclusive advisory lock on `<dir>/LOCK` and holds it until the
//! [`Vault`] is dropped; a second open, from this process or another, fails with
//! [`Error::Locked`] (after a grace period of a quarter of a second: a child process forked
//! at the wrong moment briefly shares the lock until it execs). The manifest is read once at
//! open and kept in memory, so two writers would each overwrite the other's manifest; the
//! lock turns that silent loss into an error.
//! The OS drops the lock when the process dies, so a crash never leaves the vault locked.
//! Within a process, one [`Vault`] is shared between threads (`Send + Sync`).
//!
//! # Layout
//!
//! - [`key`]: [`VaultKey`] and the keys derived from it.
//! - `names`: validation of namespaces, blob names and content types.
//! - [`blob`]: [`BlobId`] and the sealed blob file format.
//! - [`manifest`]: [`Entry`] and the sealed manifest file format.
//! - `durable`: atomic, fsynced file replacement.
//! - `sealed`: [`SealedVault`], the vault as the keyring's key rotation sees it, and
//!   [`VaultKey::from_master`].
//! - [`vault`]: [`Vault`] and [`Limits`], the public operations.
//! - [`error`]: [`Error`] and [`Result`].

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod blob;
mod durable;
pub mod error;
mod hex;
#[cfg(feature = "host")]
pub mod host;
pub mod key;
pub mod manifest;
mod names;
mod sealed;
pub mod vault;

pub use blob::BlobId;
pub use error::{Error, Result};
pub use key::VaultKey;
pub use manifest::Entry;
pub use names::{MAX_CONTENT_TYPE_LEN, MAX_NAME_LEN, MAX_NAMESPACE_LEN};
pub use sealed::SealedVault;
pub use vault::{DEFAULT_MAX_BLOB_BYTES, DEFAULT_QUOTA_BYTES, Limits, Vault};
