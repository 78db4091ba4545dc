//! Loading agent modules: read, check, compile and pre-link a component once,
//! so every instance of it (first start and every restart) is a cheap
//! `InstancePre::instantiate`. With a [`Cache`] the compile step is a
//! checked deserialization whenever the file was compiled before.
//!
//! Every failure names the file and says why in operator terms: not a
//! regular file, larger than `max_module_mb`, empty file, not WebAssembly, a
//! core module rather than a component, a corrupt or truncated component, an
//! import this host does not provide (by name), or a component that does not
//! export the agent world. Compiling is bounded by the [`Compiler`] in the
//! [`LoadOptions`] (see [`compile`](super::compile)).
//!
//! Reading a file safely is [`read`] (in `file`, re-exported here).

use std::path::{Path, PathBuf};

use rayon::prelude::*;
use wasmtime::Engine;
use wasmtime::component::{Component, ComponentExportIndex, Linker};

use super::bindings::AgentPre;
use super::cache::Cache;
pub use super::compile::LoadOptions;
pub use super::file::{ModuleError, ReadError, check_header, compile, read, read_file};
use super::state::HostState;
use super::trust::Trust;

/// A compiled, pre-linked agent module.
#[derive(Clone)]
pub struct Module {
    /// Where it was loaded from.
    pub path: PathBuf,
    /// The compiled component.
    pub component: Component,
    /// Pre-linked against the host: instantiation does no import resolution.
    /// `None` for a component that exports only `wasi:http/incoming-handler`
    /// (world `http-agent`, or any `wasi:http/proxy` component): such a
    /// module serves HTTP routes and cannot handle events.
    pub pre: Option<AgentPre<HostState>>,
    /// The same, as a `wasi:http/proxy` component, when it exports
    /// `wasi:http/incoming-handler` (what an `[[http.routes]]` agent runs).
    #[cfg(feature = "http")]
    pub proxy: Option<Proxy>,
    /// The `serve` function of its `toka:runtime/responder` export, when it
    /// is a component of world `service` (see [`responder`]).
    pub responder: Option<ComponentExportIndex>,
}

/// A component pre-linked as `wasi:http/proxy` (sync bindings: the kernel
/// runs with `concurrency_support(false)`).
#[cfg(feature = "http")]
pub type Proxy = toka_http::host::wasmtime_wasi_http::p2::bindings::sync::ProxyPre<HostState>;

/// Name prefix of the responder export: any `0.1.x` is accepted, as the
/// linker accepts any semver-compatible import.
const RESPONDER: &str = "toka:runtime/responder@0.1.";

/// The `serve` function `component` exports in `toka:runtime/responder`, if
/// it exports one.
pub fn responder(component: &Component, engine: &Engine) -> Option<ComponentExportIndex> {
    let name = component
        .component_type()
        .exports(engine)
        .map(|(name, _)| name)
        .find(|name| name.starts_with(RESPONDER))?
        .to_owned();
    let (_, interface) = component.get_export(None, &name)?;
    let (_, serve) = component.get_export(Some(&interface), "serve")?;
    Some(serve)
}

impl std::fmt::Debug for Module {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Module")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

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
    #[cfg(feature = "http")]
    let proxy = Proxy::new(pre.clone()).ok();
    #[cfg(feature = "http")]
    let serves_http = proxy.is_some();
    #[cfg(not(feature = "http"))]
    let serves_http = false;
    let agent = match AgentPre::new(pre) {
        Ok(agent) => Some(agent),
        Err(_) if serves_http => None,
        Err(e) => {
            let http = if cfg!(feature = "http") {
                ", nor `wasi:http/incoming-handler@0.2.x` (world `http-agent`)"
            } else {
                ""
            };
            return Err(fail(format!(
                "does not export the Toka agent world (`toka:runtime/handler@0.1.x` with `init` and `handle`){http}: {e:#}"
            )));
        }
    };
    let responder = responder(&component, linker.engine());
    Ok(Module {
        path: path.to_path_buf(),
        component,
        pre: agent,
        #[cfg(feature = "http")]
        proxy,
        responder,
    })
}

/// Read, compile and pre-link the module at `path`, with the default
/// [`LoadOptions`] (64 MiB, compiled in this process).
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
    load_trusted(
        engine,
        linker,
        path,
        cache,
        &Trust::default(),
        &LoadOptions::default(),
    )
}

/// [`load_cached`] under the operator's signature policy and `load`
/// options (file size limit, compiler and its budget): the signature is
/// checked on the very bytes that are then compiled (or looked up in the
/// cache), so nothing can change between the check and the load.
pub fn load_trusted(
    engine: &Engine,
    linker: &Linker<HostState>,
    path: &Path,
    cache: Option<&Cache>,
    trust: &Trust,
    load: &LoadOptions,
) -> Result<Module, ModuleError> {
    match prepare(engine, linker, path, cache, trust, load)? {
        Prepared::Ready(module) => Ok(module),
        Prepared::Compile { bytes, miss } => {
            finish(engine, linker, path, cache, load, &bytes, miss)
        }
    }
}

/// What [`prepare`] leaves to do for one module file.
#[derive(Debug)]
pub enum Prepared {
    /// Found in the cache and pre-linked: ready to run.
    Ready(Module),
    /// Read, trusted and well-formed, but not compiled yet: hand it to
    /// [`finish`], off the start-up path (compiling is what can be slow).
    Compile {
        /// The module's bytes, as checked.
        bytes: Vec<u8>,
        /// Where its artifact goes, when there is a cache.
        miss: Option<super::cache::Miss>,
    },
}

/// The fast half of [`load_trusted`]: read the file (bounded), check its
/// signature and header, and take it from the cache when it is there. Every
/// failure this finds is found within moments, whatever the file is.
pub fn prepare(
    engine: &Engine,
    linker: &Linker<HostState>,
    path: &Path,
    cache: Option<&Cache>,
    trust: &Trust,
    load: &LoadOptions,
) -> Result<Prepared, ModuleError> {
    let bytes = read(path, load.max_bytes)?;
    trust.check(path, &bytes)?;
    check_header(&bytes).map_err(|reason| ModuleError {
        path: path.to_path_buf(),
        reason,
    })?;
    let miss = match cache {
        Some(cache) => match cache.lookup(engine, path, &bytes)? {
            super::cache::Lookup::Hit(cached) => {
                return prelink(linker, path, cached.component).map(Prepared::Ready);
            }
            super::cache::Lookup::Miss(miss) => Some(miss),
        },
        None => None,
    };
    Ok(Prepared::Compile { bytes, miss })
}

/// The slow half of [`load_trusted`]: compile what [`prepare`] left (within
/// `load`'s compiler budget), store it in `cache`, and pre-link it.
pub fn finish(
    engine: &Engine,
    linker: &Linker<HostState>,
    path: &Path,
    cache: Option<&Cache>,
    load: &LoadOptions,
    bytes: &[u8],
    miss: Option<super::cache::Miss>,
) -> Result<Module, ModuleError> {
    let component = match (cache, miss) {
        (Some(cache), Some(miss)) => {
            cache
                .fill(engine, &load.compiler, path, bytes, miss)?
                .component
        }
        _ => load.compiler.compile(engine, path, bytes)?,
    };
    prelink(linker, path, component)
}

/// [`load_trusted`] for each of `paths`, in order. The files are loaded in
/// parallel, on top of wasmtime compiling each one's functions in parallel,
/// so a config of many small modules uses every core too.
pub fn load_all(
    engine: &Engine,
    linker: &Linker<HostState>,
    paths: &[PathBuf],
    cache: Option<&Cache>,
    trust: &Trust,
    load: &LoadOptions,
) -> Vec<Result<Module, ModuleError>> {
    paths
        .par_iter()
        .map(|path| load_trusted(engine, linker, path, cache, trust, load))
        .collect()
}
