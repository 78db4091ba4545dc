//! `toka compile [<dir>] [--config C]`: precompile modules into the module
//! cache, in parallel; and what the commands that load modules share: the
//! `--cache-dir`/`--no-cache` flags of `run` and `check`, the program
//! modules are compiled in (`toka __compile`), the loading bounds.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context as _;
use toka_core::config::ModulesConfig;
use toka_runtime::host::cache::{self, Cache};
use toka_runtime::host::engine::{Codegen, EngineOptions, MemoryLayout, new_engine_with};
use toka_runtime::host::module::LoadOptions;

use crate::exit::bad;

/// The program `run`, `check`, `compile` and `inspect` compile modules in
/// (this very binary, as `toka __compile`, so every compile is bounded by
/// `[modules] compile_timeout` and `compile_memory_mb`); `None` in a
/// runtime-only build, which never compiles.
pub fn compiler_program() -> Option<PathBuf> {
    if !cfg!(feature = "compiler") {
        return None;
    }
    match std::env::current_exe() {
        Ok(exe) => Some(exe),
        Err(error) => {
            tracing::warn!(%error, "cannot find this program to compile modules in a child process; compiling in this process, with no budget");
            None
        }
    }
}

/// How modules are read and compiled for an engine of `options` and
/// `layout`, within `modules`' bounds.
pub fn load_options(
    modules: &ModulesConfig,
    options: &EngineOptions,
    layout: MemoryLayout,
) -> LoadOptions {
    LoadOptions::for_engine(modules, compiler_program().as_deref(), options, layout)
}

/// [`load_options`] with the default bounds, settings and layout (what
/// `inspect` uses).
pub fn default_load_options() -> LoadOptions {
    load_options(
        &ModulesConfig::default(),
        &EngineOptions::default(),
        MemoryLayout::default(),
    )
}

/// Where `run` and `check` keep compiled modules.
#[derive(clap::Args, Debug)]
pub struct CacheArgs {
    /// Module cache directory, private to you [default: $TOKA_CACHE_DIR, else
    /// $XDG_CACHE_HOME/toka/modules, else ~/.cache/toka/modules].
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Compile every module in memory; neither read nor write the cache.
    #[arg(long, conflicts_with = "cache_dir")]
    no_cache: bool,
}

impl CacheArgs {
    /// The directory to use, if any.
    pub fn dir(&self) -> Option<PathBuf> {
        if self.no_cache {
            return None;
        }
        self.cache_dir.clone().or_else(cache::default_dir)
    }
}

/// What `toka compile` compiles, and for which engine settings.
#[derive(clap::Args, Debug)]
pub struct CompileArgs {
    /// A directory whose `*.wasm` files to compile [default with --config:
    /// only the modules the configuration's agents use].
    dir: Option<PathBuf>,
    /// Compile for this configuration: its agents' modules (unless DIR is
    /// given), with the engine settings `toka run` will pick for it (fuel
    /// metering, the memory layout for its agent count).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Without --config: compile for configurations that set a `fuel`
    /// limit (it changes the code).
    #[arg(long, conflicts_with = "config")]
    fuel: bool,
    /// Module cache directory (default as for `run`).
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
}

/// Compile the modules `args` names into the cache in parallel, one line per
/// module; fails (after trying them all) if any module does not compile.
pub fn run(args: CompileArgs) -> anyhow::Result<()> {
    if !cfg!(feature = "compiler") {
        return Err(bad(anyhow::anyhow!(
            "this toka is a runtime-only build (no `compiler` feature): it cannot compile \
             modules; run `toka compile` from a full build, with the same --cache-dir"
        )));
    }
    let cache_dir = args.cache_dir.or_else(cache::default_dir).ok_or_else(|| {
        bad(anyhow::anyhow!(
            "no cache directory: pass --cache-dir, or set TOKA_CACHE_DIR or HOME"
        ))
    })?;
    let (mut paths, options, layout, modules) = match &args.config {
        Some(config) => {
            let cfg = super::load_config(config)?;
            // Exactly what `Runtime::with_options` derives from the config.
            let options = EngineOptions::for_config(&cfg);
            let layout = MemoryLayout::for_agents(cfg.agents.len());
            let paths = match &args.dir {
                Some(dir) => wasm_files(dir)?,
                None => cfg.agents.iter().map(|a| a.module.clone()).collect(),
            };
            (paths, options, layout, cfg.modules)
        }
        None => {
            let Some(dir) = &args.dir else {
                return Err(bad(anyhow::anyhow!(
                    "name a directory of modules, or a configuration with --config"
                )));
            };
            let options = EngineOptions { fuel: args.fuel };
            let modules = ModulesConfig::default();
            (wasm_files(dir)?, options, MemoryLayout::default(), modules)
        }
    };
    if paths.is_empty() {
        return Err(bad(anyhow::anyhow!("no modules to compile")));
    }
    paths.sort();
    paths.dedup();
    let codegen = Codegen::new(&options, layout);
    let cache = Cache::open(&cache_dir, codegen.clone())
        .with_context(|| format!("module cache {}", cache_dir.display()))?;
    // The layout's code, without its pools: a pooled layout generates the
    // same code as on-demand, and the pools would only reserve memory here.
    let engine_layout = match layout {
        MemoryLayout::Pooled { .. } => MemoryLayout::OnDemand,
        other => other,
    };
    let engine = new_engine_with(&options, engine_layout).map_err(|e| anyhow::anyhow!("{e:#}"))?;
    // Each module is compiled in a child process, within `[modules]`' budget.
    let load = load_options(&modules, &options, layout);
    println!("compiling for {codegen}");

    let start = Instant::now();
    let results = cache.precompile_all(&engine, &load, &paths);
    let width = paths
        .iter()
        .map(|p| p.file_name().map_or(0, |n| n.len()))
        .max()
        .unwrap_or(0);
    let mut failed = 0;
    for result in &results {
        match result {
            Ok(m) => {
                let name = m.path.file_name().unwrap_or_default().to_string_lossy();
                println!(
                    "{name:<width$}  {}  {:<8}  {:>8.1?}",
                    &m.key.module_hex()[..12],
                    m.outcome.to_string(),
                    m.elapsed
                );
            }
            Err(e) => {
                failed += 1;
                eprintln!("error: {e}");
            }
        }
    }
    println!(
        "{} module(s) into {} in {:.1?}",
        results.len() - failed,
        cache_dir.display(),
        start.elapsed()
    );
    if failed > 0 {
        anyhow::bail!("{failed} of {} module(s) failed to compile", results.len());
    }
    Ok(())
}

/// Every `*.wasm` file directly in `dir`.
fn wasm_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut paths = Vec::new();
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))
        .map_err(bad)?;
    for entry in entries {
        let path = entry
            .with_context(|| format!("reading {}", dir.display()))?
            .path();
        if path.extension().is_some_and(|e| e == "wasm") && path.is_file() {
            paths.push(path);
        }
    }
    if paths.is_empty() {
        return Err(bad(anyhow::anyhow!("no *.wasm files in {}", dir.display())));
    }
    Ok(paths)
}
