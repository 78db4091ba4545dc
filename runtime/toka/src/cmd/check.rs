//! `toka check <config>`: validate a configuration and every module, and
//! print the plan (agents, modules, grants, subscriptions, limits). A
//! module that fails to load is an error here (exit 2), as it is for
//! `toka run --strict`.

use std::path::PathBuf;

use toka_runtime::{Runtime, RuntimeOptions};

use super::compile::{CacheArgs, compiler_program};
use crate::exit::bad;

/// `toka check` arguments.
#[derive(clap::Args, Debug)]
pub(crate) struct CheckArgs {
    /// The configuration file (TOML).
    config: PathBuf,
    #[command(flatten)]
    cache: CacheArgs,
}

pub(crate) fn run(args: CheckArgs) -> anyhow::Result<()> {
    let cfg = super::load_for_runtime(&args.config)?;
    let unknown = cfg.unknown_keys.clone();
    let options = RuntimeOptions {
        cache_dir: args.cache.dir(),
        compiler_program: compiler_program(),
        // A check must not take the port from the runtime it checks.
        no_listen: true,
        ..Default::default()
    };
    let runtime = Runtime::with_options(cfg, options)?;
    let plan = runtime.plan();
    print!("{plan}");
    for key in unknown {
        println!("unknown key (ignored): {key}");
    }
    if !plan.failed.is_empty() {
        return Err(bad(anyhow::anyhow!(
            "{} agent module(s) failed to load",
            plan.failed.len()
        )));
    }
    Ok(())
}
