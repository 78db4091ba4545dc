//! Atomic, durable file replacement: temp file → write → fsync → rename → fsync directory.
//!
//! After a crash the destination holds either its old content or the complete new content,
//! never a mix; after `write_atomic` returns `Ok`, the new content survives a power cut.
//! `write_new` is the cheaper form for files nothing references yet.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

/// A failed atomic write, and whether the destination may already have changed.
#[derive(Debug)]
pub(crate) struct WriteError {
    /// The rename happened: the destination may hold the new content (just possibly not
    /// durably), so whatever the new content references must not be removed.
    pub(crate) renamed: bool,
    pub(crate) source: io::Error,
}

/// Replaces `dest` with `bytes` through `temp` (in the same directory as `dest`).
pub(crate) fn write_atomic(temp: &Path, dest: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    let before_rename = |source| {
        // Best effort: a leftover temp file is removed at the next open anyway.
        let _ = fs::remove_file(temp);
        WriteError {
            renamed: false,
            source,
        }
    };
    write_and_sync(temp, bytes).map_err(before_rename)?;
    fs::rename(temp, dest).map_err(before_rename)?;
    sync_dir(parent(dest)).map_err(|source| WriteError {
        renamed: true,
        source,
    })
}

/// Creates `path` (which must not exist) holding `bytes`, fsynced, without a temp file and
/// without syncing the directory.
///
/// Only for a file nothing references until a later commit: a crash can leave it partly
/// written, which is harmless because it is then an unreferenced leftover, and the caller
/// syncs the directory once, before the commit, rather than once per file.
pub(crate) fn write_new(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new().write(true).create_new(true).open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

fn write_and_sync(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// The directory holding `path`; `.` for a bare relative name, whose `parent()` is `""`.
pub(crate) fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Makes the directory's entries (creations, renames) durable.
#[cfg(unix)]
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Windows cannot open a directory as a `File`; NTFS journals renames itself.
#[cfg(not(unix))]
pub(crate) fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parent_of_a_bare_name_is_the_current_dir() {
        assert_eq!(parent(Path::new("vault")), Path::new("."));
        assert_eq!(parent(Path::new("a/vault")), Path::new("a"));
        assert_eq!(parent(Path::new("/")), Path::new("."));
    }

    #[test]
    fn replaces_and_leaves_no_temp() {
        let tmp = tempfile::tempdir().unwrap();
        let (temp, dest) = (tmp.path().join("f.tmp"), tmp.path().join("f"));
        write_atomic(&temp, &dest, b"one").unwrap();
        write_atomic(&temp, &dest, b"two").unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"two");
        assert!(!temp.exists());
    }

    #[test]
    fn write_new_never_replaces() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("f");
        write_new(&path, b"one").unwrap();
        let err = write_new(&path, b"two").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&path).unwrap(), b"one");
    }

    #[test]
    fn failure_before_rename_keeps_the_old_content() {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("f");
        write_atomic(&tmp.path().join("f.tmp"), &dest, b"old").unwrap();
        // The temp file's directory does not exist: the write fails before the rename.
        let err = write_atomic(&tmp.path().join("missing/f.tmp"), &dest, b"new").unwrap_err();
        assert!(!err.renamed);
        assert_eq!(fs::read(&dest).unwrap(), b"old");
    }
}
