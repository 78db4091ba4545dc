//! Repair for the one crash state sled 0.34 cannot recover from by itself.
//!
//! sled writes a snapshot to `snap.<lsn>.generating`, fsyncs it, then
//! renames it to `snap.<lsn>`. On open it takes the lexically greatest
//! `snap.*` file as the latest snapshot, and `.generating` files are not
//! filtered out (spacejam/sled#1387, #1527). A process killed between
//! creating that file and renaming it (every open that recovers new log
//! entries writes a snapshot, so `toka secrets set` does) leaves a torn file
//! that makes every later open fail with "Read corrupted data".
//!
//! A `.generating` file was never committed: the snapshot before it and the
//! log it summarises are still whole. Deleting it puts the store back in
//! the state of its last completed write, which is what sled would have
//! recovered had it ignored the file.

use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::path::Path;

/// Deletes torn `snap.*.generating` files in the sled directory `dir`.
///
/// Done only while holding sled's own lock on `dir/db` (an advisory
/// `flock`, the one sled takes), so a snapshot another process is writing
/// right now is never touched; if the lock is held, nothing is removed and
/// sled's open reports the lock. Returns how many files were removed.
pub(crate) fn discard_torn(dir: &Path) -> io::Result<usize> {
    let db = match OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.join("db"))
    {
        Ok(file) => file,
        // A new store has no snapshot to repair.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    match db.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => return Ok(0),
        Err(TryLockError::Error(e)) => return Err(e),
    }
    let removed = remove_generating(dir)?;
    if removed > 0 {
        // The removal must be durable before sled writes the next snapshot.
        File::open(dir)?.sync_all()?;
    }
    drop(db); // releases the lock; sled takes it again on open
    Ok(removed)
}

fn remove_generating(dir: &Path) -> io::Result<usize> {
    let mut removed = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("snap.") && name.ends_with(".generating") {
            std::fs::remove_file(entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sled store holding `k = v`, closed, and the name of its snapshot.
    fn store_with_snapshot(dir: &Path) -> String {
        {
            let db = sled::open(dir).unwrap();
            db.insert("k", "v").unwrap();
            db.flush().unwrap();
        }
        // Reopening recovers the write and snapshots it.
        drop(sled::open(dir).unwrap());
        let snaps: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("snap."))
            .collect();
        assert_eq!(snaps.len(), 1, "{snaps:?}");
        snaps.into_iter().next().unwrap()
    }

    #[test]
    fn a_torn_snapshot_breaks_sled_and_discarding_it_restores_the_store() {
        for torn in [&b""[..], &[7u8; 40][..]] {
            let dir = tempfile::tempdir().unwrap();
            let snap = store_with_snapshot(dir.path());
            // What a kill between create and rename leaves behind.
            std::fs::write(dir.path().join(format!("{snap}.generating")), torn).unwrap();

            let err = sled::open(dir.path()).expect_err("sled refuses a torn snapshot");
            assert!(matches!(err, sled::Error::Corruption { .. }), "{err:?}");

            assert_eq!(discard_torn(dir.path()).unwrap(), 1);
            let db = sled::open(dir.path()).unwrap();
            assert_eq!(db.get("k").unwrap().as_deref(), Some(&b"v"[..]));
        }
    }

    #[test]
    fn nothing_is_removed_while_another_handle_holds_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let snap = store_with_snapshot(dir.path());
        let _db = sled::open(dir.path()).unwrap();
        let generating = dir.path().join(format!("{snap}.generating"));
        std::fs::write(&generating, b"").unwrap();
        assert_eq!(discard_torn(dir.path()).unwrap(), 0);
        assert!(generating.exists());
    }

    #[test]
    fn a_new_store_needs_nothing() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(discard_torn(&dir.path().join("missing")).unwrap(), 0);
    }
}
