//! The operations, with an honest filesystem.

use std::sync::Arc;
use std::thread;

use sha2::{Digest, Sha256};
use toka_vault::{DEFAULT_MAX_BLOB_BYTES, DEFAULT_QUOTA_BYTES, Error, Limits, Vault};

use crate::{blob_file, blob_file_names, key, open, roomy};

#[test]
fn round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let vault = open(tmp.path());

    let entry = vault
        .put(
            "agent-a",
            "notes/today.txt",
            "text/plain",
            b"hello",
            &roomy(),
        )
        .unwrap();
    assert_eq!(entry.namespace, "agent-a");
    assert_eq!(entry.name, "notes/today.txt");
    assert_eq!(entry.size, 5);
    assert_eq!(entry.content_type, "text/plain");
    assert_eq!(entry.sha256, <[u8; 32]>::from(Sha256::digest(b"hello")));
    assert_eq!(entry.created_ms, entry.updated_ms);

    let (got, data) = vault.get("agent-a", "notes/today.txt").unwrap().unwrap();
    assert_eq!((got, data), (entry.clone(), b"hello".to_vec()));
    assert_eq!(vault.list("agent-a").unwrap(), [entry]);
    assert_eq!(vault.namespaces().unwrap(), ["agent-a"]);
    assert_eq!(vault.usage("agent-a").unwrap(), 5);

    assert!(vault.delete("agent-a", "notes/today.txt").unwrap());
    assert_eq!(vault.get("agent-a", "notes/today.txt").unwrap(), None);
    assert!(!vault.delete("agent-a", "notes/today.txt").unwrap());
    assert!(vault.list("agent-a").unwrap().is_empty());
    assert!(vault.namespaces().unwrap().is_empty());
    assert_eq!(vault.usage("agent-a").unwrap(), 0);
    assert!(
        blob_file_names(tmp.path()).is_empty(),
        "deleted blob's file removed"
    );
}

#[test]
fn empty_and_missing_blobs() {
    let tmp = tempfile::tempdir().unwrap();
    let vault = open(tmp.path());
    assert_eq!(vault.get("ns", "never-written").unwrap(), None);
    vault.put("ns", "empty", "", b"", &roomy()).unwrap();
    let (entry, data) = vault.get("ns", "empty").unwrap().unwrap();
    assert_eq!((entry.size, data.len()), (0, 0));
}

#[test]
fn survives_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let written = {
        let vault = open(tmp.path());
        vault.put("ns", "a", "x/y", b"first", &roomy()).unwrap();
        vault.put("ns", "b", "x/y", b"second", &roomy()).unwrap()
    };
    let vault = open(tmp.path());
    assert_eq!(
        vault.get("ns", "b").unwrap(),
        Some((written, b"second".to_vec()))
    );
    assert_eq!(vault.list("ns").unwrap().len(), 2);
    // Generations keep growing across opens, so no two writes ever share one.
    let next = vault.put("ns", "a", "x/y", b"third", &roomy()).unwrap();
    assert!(
        vault
            .list("ns")
            .unwrap()
            .iter()
            .all(|e| e.generation <= next.generation)
    );
    assert!(next.generation >= 2);
}

#[test]
fn namespaces_are_isolated() {
    let tmp = tempfile::tempdir().unwrap();
    let vault = open(tmp.path());
    vault
        .put("alpha", "same", "", b"alpha's", &roomy())
        .unwrap();
    vault.put("beta", "same", "", b"beta's", &roomy()).unwrap();
    vault.put("beta", "only-beta", "", b"b", &roomy()).unwrap();

    assert_eq!(vault.get("alpha", "same").unwrap().unwrap().1, b"alpha's");
    assert_eq!(vault.get("beta", "same").unwrap().unwrap().1, b"beta's");
    assert_eq!(vault.get("alpha", "only-beta").unwrap(), None);

    let alpha: Vec<_> = vault
        .list("alpha")
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(alpha, ["same"]);
    assert_eq!(vault.usage("alpha").unwrap(), 7);
    assert_eq!(vault.usage("beta").unwrap(), 7);

    assert!(vault.delete("alpha", "same").unwrap());
    assert_eq!(vault.get("beta", "same").unwrap().unwrap().1, b"beta's");
    assert_eq!(vault.namespaces().unwrap(), ["beta"]);
}

#[test]
fn list_is_sorted_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let vault = open(tmp.path());
    for name in ["b", "a/z", "c", "a"] {
        vault
            .put("ns", name, "", name.as_bytes(), &roomy())
            .unwrap();
    }
    let names: Vec<_> = vault
        .list("ns")
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["a", "a/z", "b", "c"]);
}

#[test]
fn default_limits_are_documented_values() {
    assert_eq!(DEFAULT_MAX_BLOB_BYTES, 16 << 20);
    assert_eq!(DEFAULT_QUOTA_BYTES, 64 << 20);
    assert_eq!(
        Limits::default(),
        Limits {
            max_blob_bytes: DEFAULT_MAX_BLOB_BYTES,
            quota_bytes: DEFAULT_QUOTA_BYTES
        }
    );
}

#[test]
fn max_blob_size_is_enforced() {
    let tmp = tempfile::tempdir().unwrap();
    let vault = open(tmp.path());
    let limits = Limits {
        max_blob_bytes: 10,
        quota_bytes: 1000,
    };
    vault.put("ns", "fits", "", &[0; 10], &limits).unwrap();
    let err = vault.put("ns", "big", "", &[0; 11], &limits).unwrap_err();
    assert!(
        matches!(err, Error::TooLarge { size: 11, max: 10, ref name, .. } if name == "big"),
        "{err:?}"
    );
    assert_eq!(vault.get("ns", "big").unwrap(), None);
    assert_eq!(
        blob_file_names(tmp.path()).len(),
        1,
        "nothing written for the refused put"
    );
}

#[test]
fn quota_is_enforced_per_namespace() {
    let tmp = tempfile::tempdir().unwrap();
    let vault = open(tmp.path());
    let limits = Limits {
        max_blob_bytes: 100,
        quota_bytes: 100,
    };
    vault.put("ns", "a", "", &[1; 60], &limits).unwrap();
    vault.put("ns", "b", "", &[2; 40], &limits).unwrap(); // exactly at quota
    let err = vault.put("ns", "c", "", &[3; 1], &limits).unwrap_err();
    assert!(
        matches!(
            err,
            Error::QuotaExceeded {
                used: 101,
                quota: 100,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(vault.get("ns", "c").unwrap(), None);
    assert_eq!(vault.usage("ns").unwrap(), 100);
    // Another namespace has its own quota.
    vault.put("other", "c", "", &[3; 100], &limits).unwrap();
    // Deleting frees quota.
    vault.delete("ns", "a").unwrap();
    vault.put("ns", "c", "", &[3; 60], &limits).unwrap();
}

#[test]
fn overwrite_updates_and_quota_counts_the_new_size() {
    let tmp = tempfile::tempdir().unwrap();
    let vault = open(tmp.path());
    let limits = Limits {
        max_blob_bytes: 100,
        quota_bytes: 100,
    };
    let first = vault
        .put("ns", "doc", "text/plain", &[1; 80], &limits)
        .unwrap();
    // 80 + 90 would exceed the quota; replacing counts only the new 90.
    let second = vault
        .put("ns", "doc", "text/markdown", &[2; 90], &limits)
        .unwrap();
    assert_eq!(vault.usage("ns").unwrap(), 90);
    assert_eq!(second.created_ms, first.created_ms);
    assert!(second.updated_ms >= first.updated_ms);
    assert!(second.generation > first.generation);
    assert_ne!(second.blob_id, first.blob_id);
    assert_eq!(second.content_type, "text/markdown");

    let (entry, data) = vault.get("ns", "doc").unwrap().unwrap();
    assert_eq!((entry, data), (second.clone(), vec![2; 90]));
    assert_eq!(vault.list("ns").unwrap(), std::slice::from_ref(&second));
    // The old version's file is gone once the new manifest is durable.
    assert_eq!(blob_file_names(tmp.path()), [second.blob_id.to_string()]);
    assert!(!blob_file(tmp.path(), &first).exists());

    // Growing past the quota by overwrite is still refused, and keeps the old content.
    let err = vault.put(
        "ns",
        "doc",
        "",
        &[3; 101],
        &Limits {
            max_blob_bytes: 200,
            ..limits
        },
    );
    assert!(
        matches!(err, Err(Error::QuotaExceeded { used: 101, .. })),
        "{err:?}"
    );
    assert_eq!(vault.get("ns", "doc").unwrap().unwrap().1, vec![2; 90]);
}

#[test]
fn invalid_arguments_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let vault = open(tmp.path());
    let put = |ns: &str, name: &str, ct: &str| vault.put(ns, name, ct, b"x", &roomy());
    assert!(matches!(
        put("", "a", ""),
        Err(Error::InvalidNamespace { .. })
    ));
    assert!(matches!(
        put("a/b", "a", ""),
        Err(Error::InvalidNamespace { .. })
    ));
    assert!(matches!(
        put(&"n".repeat(129), "a", ""),
        Err(Error::InvalidNamespace { .. })
    ));
    assert!(matches!(
        put("ns", "/etc/passwd", ""),
        Err(Error::InvalidName { .. })
    ));
    assert!(matches!(
        put("ns", "a/../../b", ""),
        Err(Error::InvalidName { .. })
    ));
    assert!(matches!(
        put("ns", &"n".repeat(513), ""),
        Err(Error::InvalidName { .. })
    ));
    assert!(matches!(
        put("ns", "a", "text/\r\n"),
        Err(Error::InvalidContentType { .. })
    ));
    assert!(matches!(
        vault.get("ns", "../x"),
        Err(Error::InvalidName { .. })
    ));
    assert!(matches!(
        vault.delete("", "x"),
        Err(Error::InvalidNamespace { .. })
    ));
    assert!(matches!(
        vault.list("a b"),
        Err(Error::InvalidNamespace { .. })
    ));
    assert!(matches!(
        vault.usage("ü"),
        Err(Error::InvalidNamespace { .. })
    ));
    assert!(vault.namespaces().unwrap().is_empty());
}

#[test]
fn wrong_key_is_a_clear_error_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    drop(
        open(tmp.path())
            .put("ns", "a", "", b"secret", &roomy())
            .unwrap(),
    );
    let before = blob_file_names(tmp.path());

    let err = Vault::open(tmp.path(), key(2)).unwrap_err();
    assert!(matches!(err, Error::WrongKey { .. }), "{err:?}");
    assert!(err.to_string().contains("wrong key"), "{err}");
    assert!(!err.is_corrupt());

    assert_eq!(blob_file_names(tmp.path()), before);
    assert_eq!(
        open(tmp.path()).get("ns", "a").unwrap().unwrap().1,
        b"secret"
    );
}

#[test]
fn second_open_is_locked_until_the_first_is_dropped() {
    let tmp = tempfile::tempdir().unwrap();
    let first = open(tmp.path());
    let err = Vault::open(tmp.path(), key(1)).unwrap_err();
    assert!(matches!(err, Error::Locked { .. }), "{err:?}");
    drop(first);
    open(tmp.path());
}

#[test]
fn open_creates_missing_directories() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("deep/er/vault");
    open(&dir).put("ns", "a", "", b"x", &roomy()).unwrap();
    assert!(dir.join("manifest").is_file());
    assert!(dir.join("blobs").is_dir());
}

#[test]
fn concurrent_puts_from_many_threads() {
    let tmp = tempfile::tempdir().unwrap();
    let vault = Arc::new(open(tmp.path()));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let vault = Arc::clone(&vault);
            thread::spawn(move || {
                for i in 0..10 {
                    let name = format!("t{t}/b{i}");
                    // Every thread also fights over one shared name.
                    vault
                        .put("ns", &name, "", name.as_bytes(), &roomy())
                        .unwrap();
                    vault
                        .put("ns", "shared", "", name.as_bytes(), &roomy())
                        .unwrap();
                    assert_eq!(vault.get("ns", &name).unwrap().unwrap().1, name.as_bytes());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(vault.list("ns").unwrap().len(), 41);
    assert!(vault.get("ns", "shared").unwrap().is_some());
    assert_eq!(
        blob_file_names(tmp.path()).len(),
        41,
        "no superseded files left"
    );
}

#[test]
fn debug_output_shows_no_secrets() {
    let tmp = tempfile::tempdir().unwrap();
    let vault = open(tmp.path());
    let shown = format!("{vault:?} {:?}", key(0x5a));
    assert!(
        !shown.contains("90, 90") && !shown.contains("5a5a"),
        "{shown}"
    );
}
