//! The precompiled module cache: compiled components kept on disk, so a
//! restart (or another `toka` process) deserializes machine code instead of
//! running Cranelift again.
//!
//! # The key
//! An artifact is stored under the SHA-256 of: this cache's format version,
//! the SHA-256 of the module's `.wasm` bytes, and the engine's [`Codegen`]
//! (wasmtime's version, the target, fuel metering, the memory layout's
//! bounds-checking strategy, and a revision bumped whenever Toka changes
//! another code-affecting setting). So a changed module, another wasmtime or
//! other engine settings give another key, and another's artifact is never
//! even looked up. The key is computed from settings, not from the compiler,
//! so a runtime-only build (no Cranelift) finds what a full build compiled.
//!
//! wasmtime's own check on deserialization is the second line of defence:
//! the artifact's header records wasmtime's version, the target, every
//! Cranelift and ISA flag, the tunables and the wasm features, and wasmtime
//! refuses one that does not match this engine and this CPU (an artifact
//! compiled on a machine with CPU features this one lacks, say). A full build
//! then recompiles it; a runtime-only build reports it.
//!
//! # Without a compiler
//! Built without the `compiler` feature, the cache is the only source of
//! code: a module with no usable artifact is an error naming the module, the
//! cache directory and the command that precompiles it, and an unusable
//! artifact is left in place (deleting it would not help).
//!
//! # The file format
//! `<dir>/<key in hex>.cwasm`:
//!
//! | bytes | content |
//! |---|---|
//! | 8 | magic `TOKACWSM` |
//! | 4 | format version, little-endian `u32` ([`FORMAT_VERSION`]) |
//! | 32 | the key (so a file copied under another key's name is refused) |
//! | 32 | SHA-256 of the payload |
//! | rest | payload: [`Component::serialize`] |
//!
//! A file is written to a temporary name in the same directory and renamed
//! into place, so concurrent `toka` processes see no file or a whole one,
//! never half of one. A file whose header or checksum does not match (a torn
//! write after a crash, truncation, a flipped bit) is logged, deleted,
//! recompiled and rewritten: the load still succeeds.
//!
//! # Trust model
//! Deserializing an artifact is loading native code: wasmtime trusts it
//! (`Component::deserialize` is `unsafe`). The checksum catches corruption,
//! not an attacker: whoever can write to the cache directory can write a
//! valid checksum too, and so run native code as the operator. **The cache
//! directory must be writable by the operator only.** [`Cache::open`] creates
//! it `0700` (artifacts `0600`) and refuses an existing directory that group
//! or others may write to.

use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rayon::prelude::*;
use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use super::compile::Compiler;
use super::compile::LoadOptions;
use super::engine::Codegen;
use super::file::{self as module, ModuleError};

/// The artifact file format version; part of the key and of every header.
/// (2: keyed on [`Codegen`] rather than wasmtime's compatibility hash.)
pub const FORMAT_VERSION: u32 = 2;
const MAGIC: &[u8; 8] = b"TOKACWSM";
const HEADER_LEN: usize = MAGIC.len() + 4 + 32 + 32;
const EXTENSION: &str = "cwasm";

/// The default cache directory: `$TOKA_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/toka/modules`, else `~/.cache/toka/modules`; `None` if
/// none of them is set.
pub fn default_dir() -> Option<PathBuf> {
    let var = |name| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dir) = var("TOKA_CACHE_DIR") {
        return Some(dir.into());
    }
    // The XDG spec says to ignore a relative XDG_CACHE_HOME.
    if let Some(xdg) = var("XDG_CACHE_HOME").map(PathBuf::from)
        && xdg.is_absolute()
    {
        return Some(xdg.join("toka/modules"));
    }
    var("HOME").map(|home| PathBuf::from(home).join(".cache/toka/modules"))
}

/// What an artifact is stored under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    /// SHA-256 of the module's `.wasm` bytes.
    pub module: [u8; 32],
    /// The artifact's key: module hash, engine settings, wasmtime version.
    pub artifact: [u8; 32],
}

impl Key {
    /// The key of `wasm` compiled for `codegen`.
    pub fn new(codegen: &Codegen, wasm: &[u8]) -> Key {
        let module: [u8; 32] = Sha256::digest(wasm).into();
        let mut h = Sha256::new();
        h.update(b"toka module cache\0");
        h.update(FORMAT_VERSION.to_le_bytes());
        h.update(module);
        h.update(codegen.as_str().as_bytes());
        Key {
            module,
            artifact: h.finalize().into(),
        }
    }

    /// The module hash in hex (what `sha256sum` prints for the file).
    pub fn module_hex(&self) -> String {
        hex(&self.module)
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// How a component was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Deserialized from a valid artifact.
    Cached,
    /// No artifact: compiled, and the artifact written.
    Compiled,
    /// The artifact was unusable (corrupt, truncated, refused by wasmtime):
    /// deleted, compiled, rewritten.
    Rebuilt,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Outcome::Cached => "cached",
            Outcome::Compiled => "compiled",
            Outcome::Rebuilt => "rebuilt",
        })
    }
}

/// Lookups so far; each lookup counts as exactly one of the three.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Loaded from a valid artifact.
    pub hits: u64,
    /// No artifact for the key: compiled.
    pub misses: u64,
    /// An unusable artifact, replaced.
    pub rebuilt: u64,
}

/// A component and how it was obtained.
#[derive(Debug)]
pub struct Cached {
    /// The compiled component.
    pub component: Component,
    /// Its key.
    pub key: Key,
    /// Hit, miss or rebuilt.
    pub outcome: Outcome,
}

/// What [`Cache::lookup`] found.
#[derive(Debug)]
pub enum Lookup {
    /// A valid artifact.
    Hit(Cached),
    /// None (or an unusable one, deleted): compile with [`Cache::fill`].
    Miss(Miss),
}

/// A module the cache has no artifact for, and where its artifact goes.
#[derive(Debug)]
pub struct Miss {
    key: Key,
    file: PathBuf,
    outcome: Outcome,
}

/// One module precompiled by [`Cache::precompile_all`].
#[derive(Debug, Clone)]
pub struct Precompiled {
    /// The module file.
    pub path: PathBuf,
    /// Its key.
    pub key: Key,
    /// Whether it was already cached.
    pub outcome: Outcome,
    /// Reading, hashing and compiling or loading it.
    pub elapsed: Duration,
}

/// A directory of precompiled components (see the [module docs](self)).
#[derive(Debug)]
pub struct Cache {
    dir: PathBuf,
    codegen: Codegen,
    hits: AtomicU64,
    misses: AtomicU64,
    rebuilt: AtomicU64,
}

impl Cache {
    /// Use `dir` for an engine that generates `codegen` (see
    /// [`Codegen::new`]), creating it (`0700`) if missing. Refuses a
    /// directory that group or others may write to: its artifacts would be
    /// native code anyone could plant.
    pub fn open(dir: impl Into<PathBuf>, codegen: Codegen) -> io::Result<Cache> {
        let dir = dir.into();
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(&dir)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&dir)?.permissions().mode();
            if mode & 0o022 != 0 {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!(
                        "{} is writable by group or others (mode {:o}); a module cache must be private to the operator (chmod 700)",
                        dir.display(),
                        mode & 0o777
                    ),
                ));
            }
        }
        Ok(Cache {
            dir,
            codegen,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            rebuilt: AtomicU64::new(0),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The engine settings this cache serves.
    pub fn codegen(&self) -> &Codegen {
        &self.codegen
    }

    /// The key of `wasm` for this cache's engine settings.
    pub fn key(&self, wasm: &[u8]) -> Key {
        Key::new(&self.codegen, wasm)
    }

    /// Lookups so far.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            rebuilt: self.rebuilt.load(Ordering::Relaxed),
        }
    }

    /// Where the artifact for `key` lives.
    pub fn artifact_path(&self, key: &Key) -> PathBuf {
        self.dir.join(format!("{}.{EXTENSION}", hex(&key.artifact)))
    }

    /// The component for `wasm` (read from `path`, which names it in errors):
    /// from its artifact if valid, else compiled by `compiler` and the
    /// artifact written. Cache trouble (unreadable, unwritable) is logged,
    /// never an error; only a module that does not compile is, and then
    /// nothing is written. Without the `compiler` feature a missing or
    /// unusable artifact is the error (see the module docs).
    pub fn component(
        &self,
        engine: &Engine,
        compiler: &Compiler,
        path: &Path,
        wasm: &[u8],
    ) -> Result<Cached, ModuleError> {
        match self.lookup(engine, path, wasm)? {
            Lookup::Hit(cached) => Ok(cached),
            Lookup::Miss(miss) => self.fill(engine, compiler, path, wasm, miss),
        }
    }

    /// The first half of [`Cache::component`]: the artifact for `wasm` if
    /// there is a valid one (counted as a hit), else what [`Cache::fill`]
    /// needs to compile and store it (counted as a miss or a rebuild; an
    /// unusable artifact is deleted). Never compiles, so it is cheap enough
    /// to run before agents start while compiles happen in the background.
    pub fn lookup(&self, engine: &Engine, path: &Path, wasm: &[u8]) -> Result<Lookup, ModuleError> {
        let fail = |reason: String| ModuleError {
            path: path.to_path_buf(),
            reason,
        };
        module::check_header(wasm).map_err(fail)?;
        let key = self.key(wasm);
        let file = self.artifact_path(&key);
        let outcome = match self.read(engine, &file, &key) {
            Ok(Some(component)) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(
                    module = %path.display(),
                    artifact = %file.display(),
                    "module loaded from the cache"
                );
                return Ok(Lookup::Hit(Cached {
                    component,
                    key,
                    outcome: Outcome::Cached,
                }));
            }
            Ok(None) => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                if !cfg!(feature = "compiler") {
                    return Err(fail(format!(
                        "no precompiled artifact for this module (sha256 {}) in {} for this \
                         engine ({}), and this toka is a runtime-only build with no compiler; \
                         precompile it with a full build: `toka compile --config <config> \
                         --cache-dir {}`",
                        key.module_hex(),
                        self.dir.display(),
                        self.codegen,
                        self.dir.display(),
                    )));
                }
                Outcome::Compiled
            }
            Err(reason) => {
                self.rebuilt.fetch_add(1, Ordering::Relaxed);
                if !cfg!(feature = "compiler") {
                    return Err(fail(format!(
                        "the precompiled artifact {} cannot be used ({reason}), and this toka \
                         is a runtime-only build with no compiler to rebuild it; recompile it \
                         with a full build's `toka compile` on this machine",
                        file.display(),
                    )));
                }
                tracing::warn!(
                    module = %path.display(),
                    artifact = %file.display(),
                    %reason,
                    "cached artifact unusable; deleting and recompiling"
                );
                if let Err(e) = std::fs::remove_file(&file)
                    && e.kind() != io::ErrorKind::NotFound
                {
                    tracing::warn!(
                        artifact = %file.display(),
                        error = %e,
                        "cannot delete the unusable artifact"
                    );
                }
                Outcome::Rebuilt
            }
        };
        Ok(Lookup::Miss(Miss { key, file, outcome }))
    }

    /// The second half of [`Cache::component`]: compile `wasm` with
    /// `compiler` and write its artifact. A failed compile writes nothing.
    pub fn fill(
        &self,
        engine: &Engine,
        compiler: &Compiler,
        path: &Path,
        wasm: &[u8],
        miss: Miss,
    ) -> Result<Cached, ModuleError> {
        let Miss { key, file, outcome } = miss;
        let component = compiler.compile(engine, path, wasm)?;
        let written = component
            .serialize()
            .map_err(|e| format!("{e:#}"))
            .and_then(|payload| self.write(&file, &key, &payload).map_err(|e| e.to_string()));
        if let Err(error) = written {
            tracing::warn!(
                artifact = %file.display(),
                %error,
                "cannot write to the module cache; carrying on without it"
            );
        }
        Ok(Cached {
            component,
            key,
            outcome,
        })
    }

    /// Compile (or find cached) every module in `paths`, in parallel, read
    /// and compiled as `load` says.
    pub fn precompile_all(
        &self,
        engine: &Engine,
        load: &LoadOptions,
        paths: &[PathBuf],
    ) -> Vec<Result<Precompiled, ModuleError>> {
        paths
            .par_iter()
            .map(|path| {
                let start = Instant::now();
                let wasm = module::read(path, load.max_bytes)?;
                let cached = self.component(engine, &load.compiler, path, &wasm)?;
                Ok(Precompiled {
                    path: path.clone(),
                    key: cached.key,
                    outcome: cached.outcome,
                    elapsed: start.elapsed(),
                })
            })
            .collect()
    }

    /// `Ok(None)`: no artifact. `Err`: an artifact that must not be used, and why.
    fn read(&self, engine: &Engine, file: &Path, key: &Key) -> Result<Option<Component>, String> {
        let bytes = match std::fs::read(file) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot read it: {e}")),
        };
        let payload = verify(&bytes, key)?;
        deserialize(engine, payload)
            .map(Some)
            .map_err(|e| format!("wasmtime refused it: {e:#}"))
    }

    fn write(&self, file: &Path, key: &Key, payload: &[u8]) -> io::Result<()> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let tmp = self.dir.join(format!(
            ".{}.{}-{}.tmp",
            hex(&key.artifact[..8]),
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let result = (|| {
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut out = io::BufWriter::new(options.open(&tmp)?);
            out.write_all(&header(key, payload))?;
            out.write_all(payload)?;
            out.into_inner().map_err(|e| e.into_error())?;
            // No fsync: after a crash a torn file fails its checksum and is rebuilt.
            std::fs::rename(&tmp, file)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }
}

fn header(key: &Key, payload: &[u8]) -> Vec<u8> {
    let mut h = Vec::with_capacity(HEADER_LEN);
    h.extend_from_slice(MAGIC);
    h.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    h.extend_from_slice(&key.artifact);
    h.extend_from_slice(&Sha256::digest(payload));
    h
}

/// Check an artifact file's header and checksum; the payload if they hold.
fn verify<'a>(bytes: &'a [u8], key: &Key) -> Result<&'a [u8], String> {
    if bytes.len() < HEADER_LEN {
        return Err(format!(
            "truncated ({} bytes, shorter than the header)",
            bytes.len()
        ));
    }
    let (header, payload) = bytes.split_at(HEADER_LEN);
    let (magic, rest) = header.split_at(MAGIC.len());
    let (version, rest) = rest.split_at(4);
    let (stored_key, checksum) = rest.split_at(32);
    if magic != MAGIC {
        return Err("not a Toka cache artifact (bad magic)".into());
    }
    if version != FORMAT_VERSION.to_le_bytes() {
        return Err("written in another cache format version".into());
    }
    if stored_key != key.artifact {
        return Err("its header names another key".into());
    }
    if Sha256::digest(payload).as_slice() != checksum {
        return Err("checksum mismatch (corrupt or truncated)".into());
    }
    Ok(payload)
}

/// Load an artifact: from the cache (below), or from a compiling child
/// process ([`Compiler::Subprocess`]).
#[expect(
    unsafe_code,
    reason = "Component::deserialize loads native code; see the SAFETY comment"
)]
pub(crate) fn deserialize(engine: &Engine, payload: &[u8]) -> wasmtime::Result<Component> {
    // SAFETY: wasmtime requires the bytes to be the unmodified output of
    // `Component::serialize` (or `Engine::precompile_component`, the same
    // format). From a compiling child: the bytes are what the operator's own
    // `toka` binary (`Subprocess::program`) wrote on a pipe only this
    // process reads, after the child checked its engine settings equal
    // ours; wasmtime's header check refuses another version's or setting's
    // artifact. Compiling an untrusted module there instead of here changes
    // nothing about trusting Cranelift's output. From the cache: `payload`
    // comes from an artifact in the
    // operator's own cache directory (`Cache::open` refuses one that group or
    // others may write to), written by `Cache::write` from
    // `Component::serialize`, and `verify` checked its SHA-256 and its key
    // just now, so it is exactly what this code wrote for this module and
    // engine: corruption on disk is caught by the checksum, and another
    // version's or setting's artifact has another key (and would still fail
    // wasmtime's own header check). What no checksum can catch, a writer
    // with the operator's permissions, could run code as the operator anyway.
    unsafe { Component::deserialize(engine, payload) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codegen() -> Codegen {
        use crate::host::engine::{EngineOptions, MemoryLayout};
        Codegen::new(&EngineOptions::default(), MemoryLayout::OnDemand)
    }

    fn key() -> Key {
        Key {
            module: [1; 32],
            artifact: [2; 32],
        }
    }

    fn artifact(payload: &[u8]) -> Vec<u8> {
        let mut bytes = header(&key(), payload);
        bytes.extend_from_slice(payload);
        bytes
    }

    #[test]
    fn a_written_artifact_verifies() {
        let bytes = artifact(b"payload");
        assert_eq!(verify(&bytes, &key()).unwrap(), b"payload");
    }

    #[test]
    fn corruption_is_named() {
        let good = artifact(b"payload");
        let mut flipped = good.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(verify(&flipped, &key()).unwrap_err().contains("checksum"));
        assert!(
            verify(&good[..good.len() - 1], &key())
                .unwrap_err()
                .contains("checksum")
        );
        assert!(
            verify(&good[..10], &key())
                .unwrap_err()
                .contains("truncated")
        );
        let mut magic = good.clone();
        magic[0] = b'X';
        assert!(verify(&magic, &key()).unwrap_err().contains("magic"));
        let other = Key {
            artifact: [3; 32],
            ..key()
        };
        assert!(verify(&good, &other).unwrap_err().contains("another key"));
    }

    #[test]
    fn keys_differ_by_module_and_engine_settings() {
        use crate::host::engine::{EngineOptions, MemoryLayout};
        let layout = MemoryLayout::OnDemand;
        let plain = Codegen::new(&EngineOptions { fuel: false }, layout);
        let fuel = Codegen::new(&EngineOptions { fuel: true }, layout);
        let again = Codegen::new(&EngineOptions { fuel: false }, layout);
        assert_eq!(Key::new(&plain, b"a"), Key::new(&again, b"a"));
        assert_ne!(
            Key::new(&plain, b"a").artifact,
            Key::new(&plain, b"b").artifact
        );
        assert_ne!(
            Key::new(&plain, b"a").artifact,
            Key::new(&fuel, b"a").artifact
        );
        assert_eq!(Key::new(&plain, b"a").module, Key::new(&fuel, b"a").module);
    }

    /// The second line of defence: an artifact for other settings that
    /// somehow sits under this key (copied by hand, a bug in the key) passes
    /// the checksum but wasmtime refuses it, so it is rebuilt, never run.
    #[cfg(feature = "compiler")]
    #[test]
    fn an_artifact_for_other_settings_under_this_key_is_never_loaded() {
        use crate::host::engine::{EngineOptions, MemoryLayout, new_engine};
        let wasm = b"\0asm\x0d\0\x01\0";
        let fuel = EngineOptions { fuel: true };
        let foreign = Component::new(&new_engine(&fuel).unwrap(), wasm)
            .unwrap()
            .serialize()
            .unwrap();

        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path().join("c"), codegen()).unwrap();
        let key = cache.key(wasm);
        cache
            .write(&cache.artifact_path(&key), &key, &foreign)
            .unwrap();
        let engine = new_engine(&EngineOptions::default()).unwrap();
        let compiler = Compiler::InProcess;
        let first = cache
            .component(&engine, &compiler, Path::new("x.wasm"), wasm)
            .unwrap();
        assert_eq!(first.outcome, Outcome::Rebuilt);
        let second = cache
            .component(&engine, &compiler, Path::new("x.wasm"), wasm)
            .unwrap();
        assert_eq!(second.outcome, Outcome::Cached);
        assert_eq!(
            cache.codegen(),
            &Codegen::new(&EngineOptions::default(), MemoryLayout::OnDemand)
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_shared_directory_is_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(
            Cache::open(&shared, codegen())
                .unwrap_err()
                .to_string()
                .contains("chmod 700")
        );
        let fresh = dir.path().join("a/b");
        Cache::open(&fresh, codegen()).unwrap();
        let mode = std::fs::metadata(&fresh).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }
}
