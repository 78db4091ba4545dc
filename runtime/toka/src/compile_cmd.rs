//! `toka compile <dir>`: precompile a folder of modules into the module
//! cache, and the `--cache-dir`/`--no-cache` flags `run` and `check` share.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context as _;
use toka_runtime::host::cache::{self, Cache};
use toka_runtime::host::engine::{EngineOptions, new_engine};

use crate::bad;

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

/// Compile every `*.wasm` in `dir` into the cache in parallel, one line per
/// module; fails (after trying them all) if any module does not compile.
pub fn compile(dir: &Path, cache_dir: Option<PathBuf>, fuel: bool) -> anyhow::Result<()> {
    let cache_dir = cache_dir.or_else(cache::default_dir).ok_or_else(|| {
        bad(anyhow::anyhow!(
            "no cache directory: pass --cache-dir, or set TOKA_CACHE_DIR or HOME"
        ))
    })?;
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
    paths.sort();
    let cache =
        Cache::open(&cache_dir).with_context(|| format!("module cache {}", cache_dir.display()))?;
    // The settings `toka run` uses for a config with (or without) a fuel limit.
    let engine = new_engine(&EngineOptions { fuel }).map_err(|e| anyhow::anyhow!("{e:#}"))?;

    let start = Instant::now();
    let results = cache.precompile_all(&engine, &paths);
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
