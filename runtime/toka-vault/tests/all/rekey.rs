//! `Vault::rekey` and `Vault::key_matches`: every blob survives a change of key, the old key
//! stops working, and the two states a crash can leave (before and after the manifest's
//! commit) each open with exactly one key and lose nothing.
//!
//! The crash states are made from real runs: the files of the vault before a rekey are
//! copied back over the vault after it, which is what the directory holds when a rekey is
//! killed between the steps in question.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use toka_vault::{Entry, Error, Vault};

use crate::{blob_file, blob_file_names, key, open, roomy};

/// Blobs in several namespaces (one of them the kind several agents are granted), including
/// an empty blob and one spanning many padding blocks.
fn sample() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    vec![
        ("agent-a", "notes/today.txt", b"hello".to_vec()),
        ("agent-a", "empty", Vec::new()),
        (
            "agent-b",
            "big.bin",
            (0..300_000u32).map(|i| i as u8).collect(),
        ),
        ("reports", "2024/q1.json", b"{\"total\": 42}".repeat(50)),
    ]
}

/// A vault at `dir` under `key(1)` holding [`sample`]; returns the entries.
fn populate(dir: &Path) -> Vec<Entry> {
    let vault = open(dir);
    sample()
        .into_iter()
        .map(|(ns, name, data)| vault.put(ns, name, "x/y", &data, &roomy()).unwrap())
        .collect()
}

/// Checks that `vault` holds exactly [`sample`], with `entries`' metadata apart from the
/// file each blob lives in.
#[track_caller]
fn assert_holds_sample(vault: &Vault, entries: &[Entry]) {
    assert_eq!(
        vault.namespaces().unwrap(),
        ["agent-a", "agent-b", "reports"]
    );
    for ((ns, name, data), before) in sample().into_iter().zip(entries) {
        let (entry, got) = vault.get(ns, name).unwrap().expect("blob kept");
        assert_eq!(got, data, "{ns}/{name}");
        let mut moved = before.clone();
        moved.blob_id = entry.blob_id;
        assert_eq!(entry, moved, "{ns}/{name}: metadata kept");
    }
}

/// The vault's own files (the manifest and the blob files) with their contents.
fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut paths = vec![dir.join("manifest")];
    paths.extend(
        blob_file_names(dir)
            .iter()
            .map(|n| dir.join("blobs").join(n)),
    );
    paths
        .into_iter()
        .map(|p| {
            let bytes = fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect()
}

fn write_back(files: &[(PathBuf, Vec<u8>)]) {
    for (path, bytes) in files {
        fs::write(path, bytes).unwrap();
    }
}

fn wrong_key(result: Result<Vault, Error>) -> bool {
    matches!(result, Err(Error::WrongKey { .. }))
}

#[test]
fn rekey_keeps_every_blob_and_only_the_new_key_opens() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let entries = populate(dir);
    let old_files: BTreeSet<String> = blob_file_names(dir).into_iter().collect();

    let mut vault = open(dir);
    assert_eq!(vault.rekey(key(2)).unwrap(), entries.len());
    // The handle itself moves to the new key.
    assert_holds_sample(&vault, &entries);
    drop(vault);

    let new_files: BTreeSet<String> = blob_file_names(dir).into_iter().collect();
    assert_eq!(new_files.len(), entries.len(), "one file per blob");
    assert!(
        old_files.is_disjoint(&new_files),
        "every blob in a new file"
    );
    assert!(!dir.join("manifest.tmp").exists());

    assert!(wrong_key(Vault::open(dir, key(1))));
    assert_eq!(Vault::key_matches(dir, &key(1)).unwrap(), Some(false));
    assert_eq!(Vault::key_matches(dir, &key(2)).unwrap(), Some(true));
    let mut vault = Vault::open(dir, key(2)).unwrap();
    assert_holds_sample(&vault, &entries);

    // And back: a rekey is repeatable.
    assert_eq!(vault.rekey(key(1)).unwrap(), entries.len());
    drop(vault);
    assert!(wrong_key(Vault::open(dir, key(2))));
    assert_holds_sample(&open(dir), &entries);
}

#[test]
fn rekey_of_an_empty_vault() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut vault = open(dir);
    assert_eq!(vault.rekey(key(2)).unwrap(), 0);
    drop(vault);
    assert!(wrong_key(Vault::open(dir, key(1))));
    let vault = Vault::open(dir, key(2)).unwrap();
    assert!(vault.namespaces().unwrap().is_empty());
    assert!(blob_file_names(dir).is_empty());
}

#[test]
fn writes_after_a_rekey_use_the_new_key() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let entries = populate(dir);
    let mut vault = open(dir);
    vault.rekey(key(2)).unwrap();

    let replaced = vault
        .put("agent-a", "notes/today.txt", "", b"again", &roomy())
        .unwrap();
    assert!(
        replaced.generation > entries[0].generation,
        "generations go on"
    );
    vault.put("agent-c", "new", "", b"fresh", &roomy()).unwrap();
    assert!(vault.delete("reports", "2024/q1.json").unwrap());
    drop(vault);

    let vault = Vault::open(dir, key(2)).unwrap();
    assert_eq!(
        vault.get("agent-a", "notes/today.txt").unwrap().unwrap().1,
        b"again"
    );
    assert_eq!(vault.get("agent-c", "new").unwrap().unwrap().1, b"fresh");
    assert_eq!(vault.get("reports", "2024/q1.json").unwrap(), None);
    assert_eq!(blob_file_names(dir).len(), entries.len(), "3 kept + 1 new");
}

/// Killed after writing the new blob files, before the manifest's rename: the old manifest
/// and old files are all there, plus new files nothing references (one torn mid-write).
#[test]
fn killed_before_the_manifest_commit_stays_under_the_old_key() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let entries = populate(dir);
    let before = files(dir);
    let old_files = blob_file_names(dir);

    open(dir).rekey(key(2)).unwrap();
    write_back(&before);
    fs::write(dir.join("blobs").join("ab".repeat(16)), b"torn").unwrap();
    assert_eq!(
        blob_file_names(dir).len(),
        2 * entries.len() + 1,
        "old, new and torn files side by side"
    );

    assert_eq!(Vault::key_matches(dir, &key(1)).unwrap(), Some(true));
    assert_eq!(Vault::key_matches(dir, &key(2)).unwrap(), Some(false));
    assert!(wrong_key(Vault::open(dir, key(2))));
    let mut vault = open(dir);
    assert_holds_sample(&vault, &entries);
    assert_eq!(
        blob_file_names(dir),
        old_files,
        "open removed the new files"
    );

    // Retrying the rekey from here completes it.
    assert_eq!(vault.rekey(key(2)).unwrap(), entries.len());
    drop(vault);
    assert_holds_sample(&Vault::open(dir, key(2)).unwrap(), &entries);
}

/// Killed after the manifest's rename, before the old files were removed.
#[test]
fn killed_after_the_manifest_commit_is_under_the_new_key() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let entries = populate(dir);
    let old_blobs: Vec<_> = files(dir).into_iter().skip(1).collect();

    open(dir).rekey(key(2)).unwrap();
    let new_files = blob_file_names(dir);
    write_back(&old_blobs);
    assert_eq!(blob_file_names(dir).len(), 2 * entries.len());

    assert_eq!(Vault::key_matches(dir, &key(1)).unwrap(), Some(false));
    assert!(wrong_key(Vault::open(dir, key(1))));
    let vault = Vault::open(dir, key(2)).unwrap();
    assert_holds_sample(&vault, &entries);
    assert_eq!(
        blob_file_names(dir),
        new_files,
        "open removed the old files"
    );
}

#[test]
fn a_corrupt_blob_aborts_the_rekey_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let entries = populate(dir);
    let old_files = blob_file_names(dir);
    let bad = blob_file(dir, &entries[2]);
    let mut bytes = fs::read(&bad).unwrap();
    bytes[100] ^= 0x01;
    fs::write(&bad, &bytes).unwrap();

    let mut vault = open(dir);
    let err = vault.rekey(key(2)).unwrap_err();
    assert!(
        matches!(&err, Error::Corrupt { namespace, name } if namespace == "agent-b" && name == "big.bin"),
        "{err:?}"
    );
    assert_eq!(blob_file_names(dir), old_files, "no new file left behind");
    // The handle is still under the old key and serves the intact blobs.
    assert_eq!(
        vault.get("agent-a", "notes/today.txt").unwrap().unwrap().1,
        b"hello"
    );
    drop(vault);
    assert_eq!(Vault::key_matches(dir, &key(1)).unwrap(), Some(true));
    let vault = open(dir);
    assert!(vault.get("agent-b", "big.bin").unwrap_err().is_corrupt());

    // Once the damaged blob is gone, the rekey goes through.
    assert!(vault.delete("agent-b", "big.bin").unwrap());
    let mut vault = vault;
    assert_eq!(vault.rekey(key(2)).unwrap(), entries.len() - 1);
}

#[test]
fn key_matches_reads_only_the_manifest_header() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("vault");
    assert_eq!(Vault::key_matches(&dir, &key(1)).unwrap(), None);
    assert!(!dir.exists(), "asking creates nothing");

    let vault = open(&dir);
    vault.put("ns", "a", "", b"data", &roomy()).unwrap();
    // No lock taken: it answers while the vault is open.
    assert_eq!(Vault::key_matches(&dir, &key(1)).unwrap(), Some(true));
    assert_eq!(Vault::key_matches(&dir, &key(2)).unwrap(), Some(false));
    drop(vault);

    fs::write(dir.join("manifest"), b"TKVMANI1 short").unwrap();
    let err = Vault::key_matches(&dir, &key(1)).unwrap_err();
    assert!(matches!(err, Error::CorruptManifest { .. }), "{err:?}");
}
