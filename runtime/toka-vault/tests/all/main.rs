//! Integration tests for `toka-vault` through its public API: the operations (`api`),
//! tampering with the files on disk (`tamper`), changing the key (`rekey`), and SIGKILL
//! during writes and re-keying (`crash`).
//!
//! One test binary rather than one per file: it links once, and `crash` re-executes it.

mod api;
mod crash;
mod rekey;
mod tamper;

use std::path::{Path, PathBuf};

use toka_vault::{Entry, Limits, Vault, VaultKey};

/// A deterministic test key; different `seed`s give different keys.
fn key(seed: u8) -> VaultKey {
    VaultKey::from_bytes([seed; 32])
}

fn open(dir: &Path) -> Vault {
    Vault::open(dir, key(1)).expect("open vault")
}

/// Generous limits for tests that are not about limits.
fn roomy() -> Limits {
    Limits {
        max_blob_bytes: 1 << 30,
        quota_bytes: 1 << 30,
    }
}

/// The file holding `entry`'s content, per the documented layout.
fn blob_file(dir: &Path, entry: &Entry) -> PathBuf {
    dir.join("blobs").join(entry.blob_id.to_string())
}

/// Names of the files directly under `<dir>/blobs`.
fn blob_file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join("blobs"))
        .expect("list blobs dir")
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}
