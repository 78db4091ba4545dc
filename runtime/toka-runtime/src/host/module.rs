//! Loading agent modules: read, check, compile and pre-link a component once,
//! so every instance of it (first start and every restart) is a cheap
//! `InstancePre::instantiate`. With a [`Cache`] the compile step is a
//! checked deserialization whenever the file was compiled before.
//!
//! Every failure names the file and says why in operator terms: empty file,
//! not WebAssembly, a core module rather than a component, a corrupt or
//! truncated component, an import this host does not provide (by name), or a
//! component that does not export the agent world.

use std::path::{Path, PathBuf};

use rayon::prelude::*;
use wasmtime::Engine;
use wasmtime::component::{Component, Linker};

use super::bindings::AgentPre;
use super::cache::Cache;
use super::state::HostState;
use super::trust::Trust;

/// A module that could not be loaded, and why.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}: {reason}", path.display())]
pub struct ModuleError {
    /// The file.
    pub path: PathBuf,
    /// Why it was refused.
    pub reason: String,
}

/// A compiled, pre-linked agent module.
#[derive(Clone)]
pub struct Module {
    /// Where it was loaded from.
    pub path: PathBuf,
    /// The compiled component.
    pub component: Component,
    /// Pre-linked against the host: instantiation does no import resolution.
    pub pre: AgentPre<HostState>,
}

impl std::fmt::Debug for Module {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Module")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
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

/// Compile `bytes` as a component (the file is only used for messages).
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
const NO_COMPILER: &str = "this toka is a runtime-only build with no compiler: it runs only \
    modules precompiled into the module cache (give it the cache directory, and precompile \
    with a full build's `toka compile`)";

/// Pre-link `component` against the host's linker and check it exports the
/// agent world.
pub fn prelink(
    linker: &Linker<HostState>,
    path: &Path,
    component: Component,
) -> Result<Module, ModuleError> {
    let fail = |reason: String| ModuleError {
        path: path.to_path_buf(),
        reason,
    };
    let pre = linker
        .instantiate_pre(&component)
        .map_err(|e| fail(format!("cannot be linked: {e:#}")))?;
    let pre = AgentPre::new(pre).map_err(|e| {
        fail(format!(
            "does not export the Toka agent world (`toka:runtime/handler@0.1.1` with `init` and `handle`): {e:#}"
        ))
    })?;
    Ok(Module {
        path: path.to_path_buf(),
        component,
        pre,
    })
}

/// Read the module file, naming it in the error.
pub fn read(path: &Path) -> Result<Vec<u8>, ModuleError> {
    std::fs::read(path).map_err(|e| ModuleError {
        path: path.to_path_buf(),
        reason: format!("cannot read the module: {e}"),
    })
}

/// Read, compile and pre-link the module at `path`.
pub fn load(
    engine: &Engine,
    linker: &Linker<HostState>,
    path: &Path,
) -> Result<Module, ModuleError> {
    load_cached(engine, linker, path, None)
}

/// [`load`], taking the compiled component from `cache` when it has a valid
/// artifact for this file's bytes and engine (and writing one when not).
pub fn load_cached(
    engine: &Engine,
    linker: &Linker<HostState>,
    path: &Path,
    cache: Option<&Cache>,
) -> Result<Module, ModuleError> {
    load_trusted(engine, linker, path, cache, &Trust::default())
}

/// [`load_cached`] under the operator's signature policy: the signature is
/// checked on the very bytes that are then compiled (or looked up in the
/// cache), so nothing can change between the check and the load.
pub fn load_trusted(
    engine: &Engine,
    linker: &Linker<HostState>,
    path: &Path,
    cache: Option<&Cache>,
    trust: &Trust,
) -> Result<Module, ModuleError> {
    let bytes = read(path)?;
    trust.check(path, &bytes)?;
    let component = match cache {
        Some(cache) => cache.component(engine, path, &bytes)?.component,
        None => compile(engine, path, &bytes)?,
    };
    prelink(linker, path, component)
}

/// [`load_cached`] for each of `paths`, in order. The files are loaded in
/// parallel, on top of wasmtime compiling each one's functions in parallel,
/// so a config of many small modules uses every core too.
pub fn load_all(
    engine: &Engine,
    linker: &Linker<HostState>,
    paths: &[PathBuf],
    cache: Option<&Cache>,
    trust: &Trust,
) -> Vec<Result<Module, ModuleError>> {
    paths
        .par_iter()
        .map(|path| load_trusted(engine, linker, path, cache, trust))
        .collect()
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
}
