//! `toka inspect <file.wasm>`: what a component imports and exports, which
//! Toka and WASI capabilities it asks for, and whether this host can run
//! it.

use std::path::PathBuf;

use super::compile::default_load_options;
use crate::exit::bad;

/// `toka inspect` arguments.
#[derive(clap::Args, Debug)]
pub(crate) struct InspectArgs {
    /// The component file.
    module: PathBuf,
}

pub(crate) fn run(args: InspectArgs) -> anyhow::Result<()> {
    let engine = toka_runtime::host::engine::new_engine(&Default::default())
        .map_err(|e| anyhow::anyhow!("{e:#}"))?;
    let linker = toka_runtime::host::new_linker(&engine).map_err(|e| anyhow::anyhow!("{e:#}"))?;
    // The engine above: default settings and layout.
    let load = default_load_options();
    let report =
        toka_runtime::host::inspect::inspect(&engine, &linker, &args.module, &load).map_err(bad)?;
    print!("{report}");
    Ok(())
}
