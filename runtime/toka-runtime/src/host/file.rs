//! Module files: reading one safely (only a regular file, bounded), the
//! header checks that name common mistakes, and compiling in this process.
//!
//! [`read`] is the one way a module file is read (by the runtime, the cache,
//! `toka compile`, `inspect`, `sign` and `verify`): only a regular file, at
//! most `max_module_mb` (checked on the open handle, so a path swapped after
//! the check changes nothing, and the read itself is bounded, so a file
//! that grows while read is refused too). The file is opened non-blocking
//! and without becoming a controlling terminal, so a FIFO with no writer or
//! a terminal device is refused at once rather than waited on.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use wasmtime::Engine;
use wasmtime::component::Component;
/// A module that could not be loaded, and why.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}: {reason}", path.display())]
pub struct ModuleError {
    /// The file.
    pub path: PathBuf,
    /// Why it was refused.
    pub reason: String,
}

const MAGIC: &[u8; 4] = b"\0asm";
/// Version and layer of a core module (version 1, layer 0).
const CORE_LAYER: [u8; 4] = [1, 0, 0, 0];

/// Check the header so the common mistakes get a precise message before
/// wasmtime's more technical one.
pub fn check_header(bytes: &[u8]) -> Result<(), String> {
    if bytes.is_empty() {
        return Err("the file is empty (0 bytes), not a WebAssembly component".into());
    }
    if bytes.len() < 8 || &bytes[..4] != MAGIC {
        return Err("not a WebAssembly file (it does not start with the `\\0asm` header)".into());
    }
    if bytes[4..8] == CORE_LAYER {
        return Err(
            "this is a core WebAssembly module, not a component; build agents for \
             `--target wasm32-wasip2` (or wrap a core module with `wasm-tools component new`)"
                .into(),
        );
    }
    Ok(())
}

/// Compile `bytes` as a component in this process, with no budget (the file
/// is only used for messages): [`Compiler::InProcess`]. Untrusted modules go
/// through [`Compiler::compile`] with the operator's compiler instead.
/// Without the `compiler` feature this only checks the header and explains
/// that modules must come precompiled.
pub fn compile(engine: &Engine, path: &Path, bytes: &[u8]) -> Result<Component, ModuleError> {
    let fail = |reason: String| ModuleError {
        path: path.to_path_buf(),
        reason,
    };
    check_header(bytes).map_err(fail)?;
    #[cfg(feature = "compiler")]
    return Component::new(engine, bytes).map_err(|e| fail(format!("invalid component: {e:#}")));
    #[cfg(not(feature = "compiler"))]
    {
        let _ = engine;
        Err(fail(NO_COMPILER.into()))
    }
}

/// Why a runtime-only build cannot load a module without the cache.
#[cfg(not(feature = "compiler"))]
pub(crate) const NO_COMPILER: &str = "this toka is a runtime-only build with no compiler: it runs only \
    modules precompiled into the module cache (give it the cache directory, and precompile \
    with a full build's `toka compile`)";

/// Why a file was not read (see [`read_file`]).
#[derive(Debug)]
pub enum ReadError {
    /// It could not be opened or read.
    Io(std::io::Error),
    /// It is not a regular file: what it is ("a FIFO", "a directory", ...).
    NotRegular(&'static str),
    /// It is larger than the limit: its size, or the bytes read before the
    /// read stopped when it grew past the limit.
    TooLarge {
        /// At least this many bytes.
        size: u64,
        /// The limit.
        max: u64,
    },
}

impl ReadError {
    /// The reason for an operator, for a file whose limit is `[modules]
    /// max_module_mb`.
    pub fn module_reason(&self) -> String {
        match self {
            ReadError::Io(e) => format!("cannot read the module: {e}"),
            ReadError::NotRegular(what) => {
                format!("not a regular file ({what}); only regular files are read as modules")
            }
            ReadError::TooLarge { size, max } => {
                let limit = if max % (1 << 20) == 0 {
                    format!("max_module_mb = {} MiB", max >> 20)
                } else {
                    format!("the limit of {max} bytes")
                };
                format!("larger than {limit}: {size} bytes")
            }
        }
    }
}

/// What a non-regular file is, for messages.
fn file_kind(ty: std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt as _;
        if ty.is_fifo() {
            return "a FIFO";
        }
        if ty.is_char_device() {
            return "a character device";
        }
        if ty.is_block_device() {
            return "a block device";
        }
        if ty.is_socket() {
            return "a socket";
        }
    }
    if ty.is_dir() {
        "a directory"
    } else if ty.is_file() {
        "a regular file"
    } else {
        "not a file"
    }
}

/// Read the regular file at `path`, at most `max_bytes` of it: see the
/// [module docs](self#reading-a-module-file). Following a symlink is fine;
/// what it names must be a regular file.
pub fn read_file(path: &Path, max_bytes: u64) -> Result<Vec<u8>, ReadError> {
    // Checked on the path first so a device is never even opened (opening
    // some has side effects), and then on the open handle, which is what
    // counts: the path may have been swapped in between.
    if let Ok(meta) = std::fs::metadata(path)
        && !meta.is_file()
    {
        return Err(ReadError::NotRegular(file_kind(meta.file_type())));
    }
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use rustix::fs::OFlags;
        std::os::unix::fs::OpenOptionsExt::custom_flags(
            &mut options,
            (OFlags::NONBLOCK | OFlags::NOCTTY).bits() as i32,
        );
    }
    let file = options.open(path).map_err(ReadError::Io)?;
    let meta = file.metadata().map_err(ReadError::Io)?;
    if !meta.is_file() {
        return Err(ReadError::NotRegular(file_kind(meta.file_type())));
    }
    if meta.len() > max_bytes {
        return Err(ReadError::TooLarge {
            size: meta.len(),
            max: max_bytes,
        });
    }
    read_bounded(file, meta.len(), max_bytes)
}

/// Read all of `reader`, refusing more than `max_bytes`; `expected` sizes
/// the buffer.
fn read_bounded(
    reader: impl std::io::Read,
    expected: u64,
    max_bytes: u64,
) -> Result<Vec<u8>, ReadError> {
    let mut bytes = Vec::with_capacity(expected.min(max_bytes) as usize);
    reader
        .take(max_bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(ReadError::Io)?;
    if bytes.len() as u64 > max_bytes {
        return Err(ReadError::TooLarge {
            size: bytes.len() as u64,
            max: max_bytes,
        });
    }
    Ok(bytes)
}

/// Read the module file (a regular file of at most `max_bytes`), naming it
/// in the error: every reader of module files goes through here.
pub fn read(path: &Path, max_bytes: u64) -> Result<Vec<u8>, ModuleError> {
    read_file(path, max_bytes).map_err(|e| ModuleError {
        path: path.to_path_buf(),
        reason: e.module_reason(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_checks_name_the_problem() {
        assert!(check_header(b"").unwrap_err().contains("empty"));
        assert!(
            check_header(b"hello world")
                .unwrap_err()
                .contains("not a WebAssembly")
        );
        assert!(
            check_header(b"\0asm\x01\0\0\0")
                .unwrap_err()
                .contains("core WebAssembly module")
        );
        assert!(check_header(b"\0asm\x0d\0\x01\0").is_ok());
    }

    #[test]
    fn reads_are_bounded_even_when_the_file_grows() {
        // A reader that never ends (a file still growing, a /proc file whose
        // size says 0) is cut at the limit and refused.
        let endless = std::io::repeat(0);
        match read_bounded(endless, 0, 1 << 20) {
            Err(ReadError::TooLarge { size, max }) => {
                assert_eq!((size, max), ((1 << 20) + 1, 1 << 20));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(read_bounded(&b"abc"[..], 3, 3).unwrap(), b"abc");
        let reason = ReadError::TooLarge {
            size: 70_000_000,
            max: 64 << 20,
        }
        .module_reason();
        assert_eq!(reason, "larger than max_module_mb = 64 MiB: 70000000 bytes");
    }

    #[cfg(unix)]
    #[test]
    fn only_regular_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let reason = |path: &Path| read(path, 1 << 20).unwrap_err().reason;
        assert!(reason(dir.path()).contains("not a regular file (a directory)"));
        assert!(reason(Path::new("/dev/null")).contains("(a character device)"));
        let big = dir.path().join("big.wasm");
        std::fs::File::create(&big)
            .unwrap()
            .set_len((1 << 20) + 1)
            .unwrap();
        assert!(reason(&big).contains("larger than max_module_mb = 1 MiB: 1048577 bytes"));
        let ok = dir.path().join("ok.wasm");
        std::fs::write(&ok, b"\0asm").unwrap();
        assert_eq!(read(&ok, 4).unwrap(), b"\0asm");
        assert!(reason(&dir.path().join("missing")).contains("cannot read the module"));
    }
}
