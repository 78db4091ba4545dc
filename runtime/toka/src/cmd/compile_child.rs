//! `toka __compile` (hidden): the child process a parent `toka` compiles
//! one untrusted module in, within its `[modules]` budget. It reads the
//! module on stdin and writes the compiled artifact on stdout; the protocol
//! (arguments, exit codes) is `toka_runtime::host::compile`'s.

use toka_runtime::host::compile::{self, ChildRequest};
use toka_runtime::host::engine::{EngineOptions, MemoryLayout};

/// What the parent asks for (see `host::compile::Subprocess`).
#[derive(clap::Args, Debug)]
pub struct ChildArgs {
    /// Address-space limit to set before anything else, in MiB.
    #[arg(long, value_name = "MIB")]
    memory_mb: u64,
    /// Compile with fuel metering.
    #[arg(long)]
    fuel: bool,
    /// The memory layout's code-generation part: `on-demand` or
    /// `compact:<bytes>`.
    #[arg(long, value_parser = compile::parse_layout_arg)]
    layout: MemoryLayout,
    /// The parent's engine settings summary; compiling stops if this
    /// binary's differs.
    #[arg(long)]
    codegen: String,
}

/// Compile, then exit with the child's status (never returns).
pub fn run(args: ChildArgs) -> ! {
    let request = ChildRequest {
        memory_mb: args.memory_mb,
        options: EngineOptions { fuel: args.fuel },
        layout: args.layout,
        codegen: args.codegen,
    };
    std::process::exit(compile::child_main(&request))
}
