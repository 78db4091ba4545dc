//! One module per `toka` command, each with its arguments (clap) and its
//! code: `run`, `check`, `compile` (and the hidden `__compile` child it
//! starts, in `compile_child`), `inspect`, `new`, `secrets`, `vault`, `kv`,
//! `sign` (`keygen`, `sign`, `verify`) and `bench`. `main` parses and
//! dispatches; the exit code comes from [`crate::exit`].
//!
//! Shared by several commands, here: [`ConfigArg`] and the configuration
//! loaders. Besides these, a command module uses [`crate::exit`],
//! [`crate::stores`] and its own helpers (`scaffold`, `bench`); the only
//! link between two commands is `compile`'s module-loading settings, which
//! `run`, `check` and `inspect` share.

use std::path::{Path, PathBuf};

use toka_core::RuntimeConfig;

#[cfg(feature = "compiler")]
pub(crate) mod bench;
pub(crate) mod check;
pub(crate) mod compile;
#[cfg(feature = "compiler")]
pub(crate) mod compile_child;
pub(crate) mod inspect;
#[cfg(feature = "kv")]
pub(crate) mod kv;
#[cfg(feature = "ledger")]
pub(crate) mod ledger;
pub(crate) mod new;
pub(crate) mod run;
#[cfg(feature = "secrets")]
pub(crate) mod secrets;
#[cfg(feature = "auth")]
pub(crate) mod sign;
#[cfg(feature = "vault")]
pub(crate) mod vault;

/// `--config FILE`, the configuration `toka run` takes, for the commands
/// that need a store from it.
#[derive(clap::Args, Debug)]
pub(crate) struct ConfigArg {
    /// The configuration file (TOML) that names the store and key file.
    #[arg(long, value_name = "FILE")]
    pub(crate) config: PathBuf,
}

/// The configuration at `path` (a mistake in it exits 2), with every
/// registered capability's keys (see `toka_runtime::host::caps::declared`).
pub(crate) fn load_config(path: &Path) -> anyhow::Result<RuntimeConfig> {
    Ok(toka_runtime::host::caps::load(path)?)
}

/// The configuration for `toka run` and `toka check`, readied as the
/// secrets commands see it (the default key file, an interrupted key
/// rotation settled: see [`crate::stores::prepare_runtime`]).
pub(crate) fn load_for_runtime(path: &Path) -> anyhow::Result<RuntimeConfig> {
    #[cfg_attr(
        not(feature = "secrets"),
        expect(unused_mut, reason = "only the secrets feature changes it")
    )]
    let mut cfg = load_config(path)?;
    #[cfg(feature = "secrets")]
    crate::stores::prepare_runtime(&mut cfg)?;
    Ok(cfg)
}
