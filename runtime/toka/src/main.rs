//! The `toka` command: run a configuration, check it, inspect a component,
//! scaffold a new agent.
//!
//! Exit codes: 0 success, 1 runtime failure, 2 bad usage or bad input
//! (configuration, module).

#[cfg(feature = "compiler")]
mod bench;
#[cfg(feature = "compiler")]
mod compile_child;
mod compile_cmd;
mod scaffold;
#[cfg(feature = "secrets")]
mod secrets_cmd;
#[cfg(feature = "auth")]
mod sign_cmd;
#[cfg(feature = "vault")]
mod vault_cmd;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use std::io::Write as _;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use toka_core::RuntimeConfig;
use toka_runtime::{Runtime, RuntimeOptions};

/// `toka --version`: which wasmtime, and whether this build compiles
/// (`runtime-only` when not) and which capabilities it carries.
static VERSION: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "{} (wasmtime {}; {})",
        env!("CARGO_PKG_VERSION"),
        toka_runtime::host::engine::WASMTIME_VERSION,
        env!("TOKA_FEATURES"),
    )
});

#[derive(Parser, Debug)]
#[command(
    name = "toka",
    version = &**VERSION,
    about = "Run untrusted WebAssembly agents on an event bus, each with only the capabilities you grant."
)]
struct Cli {
    /// Log format (the level comes from RUST_LOG, default `info`).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the agents of a configuration until Ctrl-C/SIGTERM (or --for).
    Run {
        /// The configuration file (TOML).
        config: PathBuf,
        /// Stop gracefully after this long, e.g. `3s`, `1m30s`.
        #[arg(long = "for", value_parser = humantime::parse_duration)]
        duration: Option<Duration>,
        /// Refuse to start if any module fails to load.
        #[arg(long)]
        strict: bool,
        #[command(flatten)]
        cache: compile_cmd::CacheArgs,
    },
    /// Validate a configuration and its modules, and print the plan.
    Check {
        /// The configuration file (TOML).
        config: PathBuf,
        #[command(flatten)]
        cache: compile_cmd::CacheArgs,
    },
    /// Precompile modules into the module cache: a directory's `*.wasm`, or
    /// a configuration's modules for the settings `toka run` will use.
    Compile(compile_cmd::CompileArgs),
    /// Show what a component imports and exports, and whether Toka can run it.
    Inspect {
        /// The component file.
        module: PathBuf,
    },
    /// Create something new.
    New {
        #[command(subcommand)]
        what: New,
    },
    /// Manage the encrypted secret store named by a configuration.
    #[cfg(feature = "secrets")]
    Secrets {
        #[command(subcommand)]
        cmd: secrets_cmd::SecretsCmd,
    },
    /// Manage the encrypted blob vault named by a configuration.
    #[cfg(feature = "vault")]
    Vault {
        #[command(subcommand)]
        cmd: vault_cmd::VaultCmd,
    },
    /// Generate a module-signing key pair.
    #[cfg(feature = "auth")]
    Keygen(sign_cmd::KeygenArgs),
    /// Sign modules: write a detached `<file.wasm>.sig` for each.
    #[cfg(feature = "auth")]
    Sign(sign_cmd::SignArgs),
    /// Check modules' signatures against trusted public keys.
    #[cfg(feature = "auth")]
    Verify(sign_cmd::VerifyArgs),
    /// Measure dispatch, latency, restart, cold start and footprint (prints a
    /// table and one `BENCH {json}` line per scenario).
    #[cfg(feature = "compiler")]
    Bench(bench::BenchArgs),
    /// A `toka bench` scenario run in a child process.
    #[cfg(feature = "compiler")]
    #[command(name = "__bench-child", hide = true)]
    BenchChild(bench::ChildArgs),
    /// Compile one module for a parent `toka`, within its budget.
    #[cfg(feature = "compiler")]
    #[command(name = "__compile", hide = true)]
    CompileChild(compile_child::ChildArgs),
}

#[derive(Subcommand, Debug)]
enum New {
    /// A ready-to-build Rust agent crate.
    Agent {
        /// Crate (and agent) name.
        name: String,
        /// Where to create it (default: the current directory).
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
}

/// Failures that are the operator's input, not the runtime's fault.
#[derive(Debug)]
struct BadInput(anyhow::Error);

impl std::fmt::Display for BadInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

impl std::error::Error for BadInput {}

fn bad(e: impl Into<anyhow::Error>) -> anyhow::Error {
    anyhow::Error::new(BadInput(e.into()))
}

fn init_logging(format: LogFormat, default_level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Its report of a failed write is an `eprintln!`, which panics when
        // stderr is a closed pipe (`toka run ... 2>&1 | head`): a log line
        // that cannot be written is dropped instead, and the agents go on.
        .log_internal_errors(false);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn load(config: &PathBuf) -> anyhow::Result<RuntimeConfig> {
    RuntimeConfig::load(config).map_err(bad)
}

/// [`load`], then what the secrets commands do before opening the stores
/// (the default key file, settling an interrupted `rotate-key`).
fn load_for_runtime(config: &PathBuf) -> anyhow::Result<RuntimeConfig> {
    #[allow(unused_mut, reason = "only the secrets feature changes it")]
    let mut cfg = load(config)?;
    #[cfg(feature = "secrets")]
    secrets_cmd::prepare_runtime(&mut cfg)?;
    Ok(cfg)
}

fn run(
    config: PathBuf,
    duration: Option<Duration>,
    strict: bool,
    cache_dir: Option<PathBuf>,
) -> anyhow::Result<()> {
    let cfg = load_for_runtime(&config)?;
    let options = RuntimeOptions {
        strict,
        cache_dir,
        compiler_program: compile_cmd::compiler_program(),
        // A slow compile delays only its own agents.
        background_compile: true,
        ..Default::default()
    };
    let runtime = Runtime::with_options(cfg, options).map_err(|e| match e {
        toka_runtime::Error::Module { .. } | toka_runtime::Error::Config(_) => bad(e),
        other => anyhow::Error::new(other),
    })?;
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let report = tokio.block_on(async move {
        let draining = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        tokio::spawn(exit_on_second_signal(draining.clone()));
        runtime
            .run_until(async move {
                let timer = async {
                    match duration {
                        Some(d) => tokio::time::sleep(d).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    () = timer => {
                        // A signal from now on is the operator's second word.
                        draining.store(true, std::sync::atomic::Ordering::Release);
                    }
                    () = toka_runtime::runtime::shutdown_signal() => {}
                }
            })
            .await
    })?;
    for a in &report.agents {
        tracing::info!(
            agent = %a.name,
            handled = a.handled,
            errors = a.errors,
            faults = a.faults,
            dropped = a.dropped,
            refused = a.refused,
            output_discarded = a.output_discarded,
            log_records_dropped = a.log_records_dropped,
            log_bytes_dropped = a.log_bytes_dropped,
            quarantined = a.quarantined,
            "agent summary"
        );
    }
    if let Some(peak) = peak_rss_kib() {
        tracing::info!(peak_rss_kib = peak, "process peak resident memory");
    }
    Ok(())
}

/// SIGINT or SIGTERM while the runtime is already shutting down (a second
/// Ctrl-C, or one during the drain after `--for`): the operator wants out
/// now, so exit at once rather than wait for the drain to finish.
async fn exit_on_second_signal(draining: std::sync::Arc<std::sync::atomic::AtomicBool>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return;
    };
    let mut seen = 0u32;
    loop {
        let name = tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        };
        seen += 1;
        // The first signal of a run still running starts the drain (the
        // runtime hears it too); any later one, or one after `--for`, exits.
        if seen >= 2 || draining.load(std::sync::atomic::Ordering::Acquire) {
            tracing::warn!(
                signal = name,
                "signal received while shutting down: exiting now without finishing the drain"
            );
            std::process::exit(130);
        }
    }
}

fn check(config: PathBuf, cache_dir: Option<PathBuf>) -> anyhow::Result<()> {
    let cfg = load_for_runtime(&config)?;
    let unknown = cfg.unknown_keys.clone();
    let options = RuntimeOptions {
        cache_dir,
        compiler_program: compile_cmd::compiler_program(),
        ..Default::default()
    };
    let runtime = Runtime::with_options(cfg, options).map_err(bad)?;
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

fn inspect(module: PathBuf) -> anyhow::Result<()> {
    let engine = toka_runtime::host::engine::new_engine(&Default::default())
        .map_err(|e| anyhow::anyhow!("{e:#}"))?;
    let linker = toka_runtime::host::new_linker(&engine).map_err(|e| anyhow::anyhow!("{e:#}"))?;
    // The engine above: default settings and layout.
    let load = compile_cmd::default_load_options();
    let report =
        toka_runtime::host::inspect::inspect(&engine, &linker, &module, &load).map_err(bad)?;
    print!("{report}");
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The bench's runtimes would log every agent start; it reports in its table.
    #[cfg(feature = "compiler")]
    let quiet = matches!(cli.command, Command::Bench(_) | Command::BenchChild(_));
    #[cfg(not(feature = "compiler"))]
    let quiet = false;
    init_logging(cli.log_format, if quiet { "warn" } else { "info" });
    let result = match cli.command {
        Command::Run {
            config,
            duration,
            strict,
            cache,
        } => run(config, duration, strict, cache.dir()),
        Command::Check { config, cache } => check(config, cache.dir()),
        Command::Compile(args) => compile_cmd::compile(args),
        Command::Inspect { module } => inspect(module),
        Command::New {
            what: New::Agent { name, dir },
        } => scaffold::new_agent(&dir, &name).map(|path| {
            println!("created agent crate {}", path.display());
            println!(
                "build it:  cd {} && cargo build --release --target wasm32-wasip2",
                path.display()
            );
            println!("run it:    toka run {}/toka.toml --for 5s", path.display());
        }),
        #[cfg(feature = "secrets")]
        Command::Secrets { cmd } => secrets_cmd::run(cmd),
        #[cfg(feature = "vault")]
        Command::Vault { cmd } => vault_cmd::run(cmd),
        #[cfg(feature = "auth")]
        Command::Keygen(args) => sign_cmd::keygen(args),
        #[cfg(feature = "auth")]
        Command::Sign(args) => sign_cmd::sign(args),
        #[cfg(feature = "auth")]
        Command::Verify(args) => sign_cmd::verify(args),
        #[cfg(feature = "compiler")]
        Command::Bench(args) => bench::run(args),
        #[cfg(feature = "compiler")]
        Command::BenchChild(args) => bench::run_child(args),
        #[cfg(feature = "compiler")]
        Command::CompileChild(args) => compile_child::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Not `eprintln!`: it panics (exit 101) when stderr is closed.
            let _ = writeln!(std::io::stderr(), "error: {e:#}");
            if e.downcast_ref::<BadInput>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

/// The process's peak resident set (`VmHWM`), where `/proc` has it.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
