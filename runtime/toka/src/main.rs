//! The `toka` command: run a configuration, check it, inspect a component,
//! scaffold a new agent, manage the stores and signatures its capabilities
//! use.
//!
//! - `cli`: the command line (clap);
//! - `cmd`: one module per command;
//! - `stores`: the stores a configuration names, for the keyring's key
//!   rotation (feature `secrets`);
//! - `exit`: the one mapping from an error to the exit code (0 success,
//!   1 runtime failure, 2 the operator's input is wrong);
//! - `scaffold`, `bench`: what `toka new agent` writes, `toka bench`'s
//!   scenarios.
//!
//! This file sets up logging and dispatches.

#[cfg(feature = "compiler")]
mod bench;
mod cli;
mod cmd;
mod exit;
mod scaffold;
#[cfg(feature = "secrets")]
mod stores;

use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser as _;

use cli::{Cli, Command, LogFormat};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = if cli.command.quiet() { "warn" } else { "info" };
    init_logging(cli.log_format, level);
    let result = match cli.command {
        Command::Run(args) => cmd::run::run(args),
        Command::Check(args) => cmd::check::run(args),
        Command::Compile(args) => cmd::compile::run(args),
        Command::Inspect(args) => cmd::inspect::run(args),
        Command::New { what } => cmd::new::run(what),
        #[cfg(feature = "secrets")]
        Command::Secrets { cmd } => cmd::secrets::run(cmd),
        #[cfg(feature = "vault")]
        Command::Vault { cmd } => cmd::vault::run(cmd),
        #[cfg(feature = "kv")]
        Command::Kv { cmd } => cmd::kv::run(cmd),
        #[cfg(feature = "ledger")]
        Command::Ledger { cmd } => cmd::ledger::run(cmd),
        #[cfg(feature = "auth")]
        Command::Keygen(args) => cmd::sign::keygen(args),
        #[cfg(feature = "auth")]
        Command::Sign(args) => cmd::sign::sign(args),
        #[cfg(feature = "auth")]
        Command::Verify(args) => cmd::sign::verify(args),
        #[cfg(feature = "compiler")]
        Command::Bench(args) => cmd::bench::run(args),
        #[cfg(feature = "compiler")]
        Command::BenchChild(args) => cmd::bench::run_child(args),
        #[cfg(feature = "compiler")]
        Command::CompileChild(args) => cmd::compile_child::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Not `eprintln!`: it panics (exit 101) when stderr is closed.
            let _ = writeln!(std::io::stderr(), "error: {e:#}");
            exit::Kind::of(&e).exit_code()
        }
    }
}

fn init_logging(format: LogFormat, default_level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal: escape codes in a pipe
        // or a file are noise (`toka run ... 2>&1 | tail`), and NO_COLOR
        // (no-color.org: set and not empty) turns them off everywhere.
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        )
        // Its report of a failed write is an `eprintln!`, which panics when
        // stderr is a closed pipe (`toka run ... 2>&1 | head`): a log line
        // that cannot be written is dropped instead, and the agents go on.
        .log_internal_errors(false);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
