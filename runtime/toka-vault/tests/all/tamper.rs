//! Someone with the files but not the key: what they can read, and what they can break
//! without being noticed (nothing).

use std::fs;

use toka_vault::{Error, Vault};

use crate::{blob_file, blob_file_names, key, open, roomy};

fn corrupt_blob(err: &Error, ns: &str, blob: &str) -> bool {
    matches!(err, Error::Corrupt { namespace, name } if namespace == ns && name == blob)
}

#[test]
fn flipped_blob_byte_is_corrupt() {
    let tmp = tempfile::tempdir().unwrap();
    let vault = open(tmp.path());
    let entry = vault.put("ns", "a", "", &[7; 1000], &roomy()).unwrap();
    let path = blob_file(tmp.path(), &entry);
    let original = fs::read(&path).unwrap();
    // Header, ciphertext (data and padding) and tag.
    for i in [0, 10, 40, 500, original.len() - 30, original.len() - 1] {
        let mut bad = original.clone();
        bad[i] ^= 0x80;
        fs::write(&path, &bad).unwrap();
        let err = vault.get("ns", "a").unwrap_err();
        assert!(corrupt_blob(&err, "ns", "a"), "byte {i}: {err:?}");
        assert!(err.is_corrupt());
    }
    fs::write(&path, &original).unwrap();
    assert_eq!(vault.get("ns", "a").unwrap().unwrap().1, vec![7; 1000]);
}

#[test]
fn truncated_or_extended_blob_is_corrupt() {
    let tmp = tempfile::tempdir().unwrap();
    let vault = open(tmp.path());
    let entry = vault.put("ns", "a", "", &[7; 1000], &roomy()).unwrap();
    let path = blob_file(tmp.path(), &entry);
    let original = fs::read(&path).unwrap();
    for len in [0, 1, 31, original.len() - 16, original.len() - 1] {
        fs::write(&path, &original[..len]).unwrap();
        let err = vault.get("ns", "a").unwrap_err();
        assert!(corrupt_blob(&err, "ns", "a"), "length {len}: {err:?}");
    }
    fs::write(&path, [&original[..], b"more"].concat()).unwrap();
    assert!(corrupt_blob(&vault.get("ns", "a").unwrap_err(), "ns", "a"));
}

#[test]
fn missing_blob_file_is_corrupt() {
    let tmp = tempfile::tempdir().unwrap();
    let vault = open(tmp.path());
    let entry = vault.put("ns", "a", "", b"x", &roomy()).unwrap();
    fs::remove_file(blob_file(tmp.path(), &entry)).unwrap();
    assert!(corrupt_blob(&vault.get("ns", "a").unwrap_err(), "ns", "a"));
}

#[test]
fn blob_swapped_for_another_blobs_file_is_corrupt() {
    let tmp = tempfile::tempdir().unwrap();
    let vault = open(tmp.path());
    // Same size, so the files are the same length and only the binding tells them apart.
    let a = vault.put("ns", "a", "", b"content of a", &roomy()).unwrap();
    let b = vault.put("ns", "b", "", b"content of b", &roomy()).unwrap();
    let other_ns = vault
        .put("other", "a", "", b"content of A", &roomy())
        .unwrap();

    fs::copy(blob_file(tmp.path(), &b), blob_file(tmp.path(), &a)).unwrap();
    assert!(corrupt_blob(&vault.get("ns", "a").unwrap_err(), "ns", "a"));

    // The same name in another namespace is another blob too.
    fs::copy(blob_file(tmp.path(), &other_ns), blob_file(tmp.path(), &a)).unwrap();
    assert!(corrupt_blob(&vault.get("ns", "a").unwrap_err(), "ns", "a"));

    assert_eq!(vault.get("ns", "b").unwrap().unwrap().1, b"content of b");
}

#[test]
fn blob_rolled_back_to_an_older_version_is_corrupt() {
    let tmp = tempfile::tempdir().unwrap();
    let vault = open(tmp.path());
    let v1 = vault.put("ns", "a", "", b"version 1", &roomy()).unwrap();
    let old_file = fs::read(blob_file(tmp.path(), &v1)).unwrap();
    let v2 = vault.put("ns", "a", "", b"version 2", &roomy()).unwrap();

    fs::write(blob_file(tmp.path(), &v2), &old_file).unwrap();
    assert!(corrupt_blob(&vault.get("ns", "a").unwrap_err(), "ns", "a"));
}

#[test]
fn tampered_manifest_is_refused_on_open() {
    let tmp = tempfile::tempdir().unwrap();
    drop(open(tmp.path()).put("ns", "a", "", b"x", &roomy()).unwrap());
    let path = tmp.path().join("manifest");
    let original = fs::read(&path).unwrap();
    let blobs_before = blob_file_names(tmp.path());

    // The magic, the ciphertext, the tag.
    for i in [0, 100, original.len() - 1] {
        let mut bad = original.clone();
        bad[i] ^= 0x01;
        fs::write(&path, &bad).unwrap();
        let err = Vault::open(tmp.path(), key(1)).unwrap_err();
        assert!(
            matches!(err, Error::CorruptManifest { .. }),
            "byte {i}: {err:?}"
        );
        assert!(err.is_corrupt());
    }
    // The nonce and key check (bytes 8..64): indistinguishable from a wrong key, and refused.
    for i in [8, 40] {
        let mut bad = original.clone();
        bad[i] ^= 0x01;
        fs::write(&path, &bad).unwrap();
        let err = Vault::open(tmp.path(), key(1)).unwrap_err();
        assert!(matches!(err, Error::WrongKey { .. }), "byte {i}: {err:?}");
    }

    // A refused open must not "clean up" the blobs it could no longer see.
    assert_eq!(blob_file_names(tmp.path()), blobs_before);
    fs::write(&path, &original).unwrap();
    assert_eq!(open(tmp.path()).get("ns", "a").unwrap().unwrap().1, b"x");
}

#[test]
fn truncated_manifest_is_refused_on_open() {
    let tmp = tempfile::tempdir().unwrap();
    drop(open(tmp.path()).put("ns", "a", "", b"x", &roomy()).unwrap());
    let path = tmp.path().join("manifest");
    let original = fs::read(&path).unwrap();
    for len in [0, 7, 8, 40, 64, 100, original.len() - 1] {
        fs::write(&path, &original[..len]).unwrap();
        let err = Vault::open(tmp.path(), key(1)).unwrap_err();
        assert!(
            matches!(err, Error::CorruptManifest { .. }),
            "length {len}: {err:?}"
        );
    }
}

#[test]
fn deleted_manifest_with_blobs_present_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    drop(open(tmp.path()).put("ns", "a", "", b"x", &roomy()).unwrap());
    fs::remove_file(tmp.path().join("manifest")).unwrap();
    let err = Vault::open(tmp.path(), key(1)).unwrap_err();
    assert!(matches!(err, Error::CorruptManifest { .. }), "{err:?}");
    assert_eq!(blob_file_names(tmp.path()).len(), 1);
}

#[test]
fn files_on_disk_reveal_no_plaintext() {
    let tmp = tempfile::tempdir().unwrap();
    let marker = b"TOKA-PLAINTEXT-MARKER-3f9c";
    {
        let vault = open(tmp.path());
        let data = marker.repeat(100);
        vault
            .put(
                "marker-namespace",
                "marker/blob-name",
                "marker/content-type",
                &data,
                &roomy(),
            )
            .unwrap();
        vault
            .put("marker-namespace", "short", "", marker, &roomy())
            .unwrap();
    }
    let mut files = vec![tmp.path().join("manifest")];
    files.extend(
        blob_file_names(tmp.path())
            .into_iter()
            .map(|name| tmp.path().join("blobs").join(name)),
    );
    assert_eq!(files.len(), 3);
    for file in &files {
        let bytes = fs::read(file).unwrap();
        for needle in [
            &marker[..],
            &marker[..8],
            b"marker-namespace",
            b"blob-name",
            b"content-type",
        ] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "{} contains {:?}",
                file.display(),
                String::from_utf8_lossy(needle)
            );
        }
    }
    // File names are random ids, not derived from the names.
    for name in blob_file_names(tmp.path()) {
        assert_eq!(name.len(), 32);
        assert!(name.bytes().all(|b| b.is_ascii_hexdigit()));
    }
}

#[test]
fn leftovers_of_interrupted_writes_are_removed_on_open() {
    let tmp = tempfile::tempdir().unwrap();
    let kept = open(tmp.path()).put("ns", "a", "", b"x", &roomy()).unwrap();
    let blobs = tmp.path().join("blobs");
    let orphan = "0123456789abcdef0123456789abcdef";
    fs::write(blobs.join(orphan), b"orphan").unwrap();
    fs::write(blobs.join(format!("{orphan}.tmp")), b"half").unwrap();
    fs::write(tmp.path().join("manifest.tmp"), b"half").unwrap();
    // Not a name this crate produces: left alone.
    fs::write(blobs.join("README"), b"mine").unwrap();

    let vault = open(tmp.path());
    let mut expected = vec!["README".to_owned(), kept.blob_id.to_string()];
    expected.sort();
    assert_eq!(blob_file_names(tmp.path()), expected);
    assert!(!tmp.path().join("manifest.tmp").exists());
    assert_eq!(vault.get("ns", "a").unwrap().unwrap().1, b"x");
}
