//! The `toka` command line: the clap definitions of every command and the
//! global flags. Each command's own arguments live with its code in
//! [`crate::cmd`]; `main` dispatches.

use std::sync::LazyLock;

use clap::{Parser, Subcommand, ValueEnum};

use crate::cmd;

/// `toka --version`: which wasmtime, and whether this build compiles
/// (`runtime-only` when not) and which capabilities it carries (the
/// runtime's list of those built in).
static VERSION: LazyLock<String> = LazyLock::new(|| {
    let compiler = cfg!(feature = "compiler");
    let features: Vec<&str> = compiler
        .then_some("compiler")
        .into_iter()
        .chain(toka_runtime::host::caps::BUILT.iter().copied())
        .collect();
    let features = if features.is_empty() {
        "none".to_owned()
    } else {
        features.join(", ")
    };
    let flavour = if compiler { "" } else { "runtime-only; " };
    format!(
        "{} (wasmtime {}; {flavour}features: {features})",
        env!("CARGO_PKG_VERSION"),
        toka_runtime::host::engine::WASMTIME_VERSION,
    )
});

#[derive(Parser, Debug)]
#[command(
    name = "toka",
    version = &**VERSION,
    about = "Run untrusted WebAssembly agents on an event bus, each with only the capabilities you grant."
)]
pub(crate) struct Cli {
    /// Log format (the level comes from RUST_LOG, default `info`).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub(crate) log_format: LogFormat,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Run the agents of a configuration until Ctrl-C/SIGTERM (or --for).
    Run(cmd::run::RunArgs),
    /// Validate a configuration and its modules, and print the plan.
    Check(cmd::check::CheckArgs),
    /// Precompile modules into the module cache: a directory's `*.wasm`, or
    /// a configuration's modules for the settings `toka run` will use.
    Compile(cmd::compile::CompileArgs),
    /// Show what a component imports and exports, and whether Toka can run it.
    Inspect(cmd::inspect::InspectArgs),
    /// Create something new.
    New {
        #[command(subcommand)]
        what: cmd::new::NewCmd,
    },
    /// Manage the encrypted secret store named by a configuration.
    #[cfg(feature = "secrets")]
    Secrets {
        #[command(subcommand)]
        cmd: cmd::secrets::SecretsCmd,
    },
    /// Manage the encrypted blob vault named by a configuration.
    #[cfg(feature = "vault")]
    Vault {
        #[command(subcommand)]
        cmd: cmd::vault::VaultCmd,
    },
    /// Manage the durable key-value store named by a configuration.
    #[cfg(feature = "kv")]
    Kv {
        #[command(subcommand)]
        cmd: cmd::kv::KvCmd,
    },
    /// Read and write the ledger named by a configuration (as the operator).
    #[cfg(feature = "ledger")]
    Ledger {
        #[command(subcommand)]
        cmd: cmd::ledger::LedgerCmd,
    },
    /// Generate a module-signing key pair.
    #[cfg(feature = "auth")]
    Keygen(cmd::sign::KeygenArgs),
    /// Sign modules: write a detached `<file.wasm>.sig` for each.
    #[cfg(feature = "auth")]
    Sign(cmd::sign::SignArgs),
    /// Check modules' signatures against trusted public keys.
    #[cfg(feature = "auth")]
    Verify(cmd::sign::VerifyArgs),
    /// Measure dispatch, latency, restart, cold start and footprint (prints a
    /// table and one `BENCH {json}` line per scenario).
    #[cfg(feature = "compiler")]
    Bench(cmd::bench::BenchArgs),
    /// A `toka bench` scenario run in a child process.
    #[cfg(feature = "compiler")]
    #[command(name = "__bench-child", hide = true)]
    BenchChild(cmd::bench::ChildArgs),
    /// Compile one module for a parent `toka`, within its budget.
    #[cfg(feature = "compiler")]
    #[command(name = "__compile", hide = true)]
    CompileChild(cmd::compile_child::ChildArgs),
}

impl Command {
    /// Whether the command logs only warnings by default: the bench's
    /// runtimes would log every agent start, and it reports in its table.
    pub(crate) fn quiet(&self) -> bool {
        #[cfg(feature = "compiler")]
        if matches!(self, Command::Bench(_) | Command::BenchChild(_)) {
            return true;
        }
        false
    }
}
