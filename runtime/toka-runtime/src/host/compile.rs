//! Compiling a module within a budget.
//!
//! A module is untrusted input, and compiling it costs what its author
//! chooses: a few huge functions keep Cranelift busy for tens of seconds and
//! take gigabytes. A [`Compiler`] says where that cost is paid:
//!
//! - [`Compiler::InProcess`]: `Component::new` in this process, bounded only
//!   by wasmparser's per-function size; for library embedders and tests
//!   whose modules are their own.
//! - [`Compiler::Subprocess`]: a child process (the `toka` binary's hidden
//!   `__compile` subcommand, see [`child_main`]) that first limits its own
//!   address space to `compile_memory_mb` (`RLIMIT_AS`), builds an engine
//!   with exactly this engine's code-generation settings, compiles the bytes
//!   it reads on stdin and writes the artifact (`Component::serialize`'s
//!   format) on stdout. The parent kills it at `compile_timeout` and reaps
//!   it, and loads its artifact through the module cache's deserialization
//!   path. A compile that fails, for any reason, yields no artifact: the
//!   cache is written only from a component that loaded.
//!
//! The limit is the child's whole address space, so the child keeps its own
//! footprint small (about 30 MiB: the binary, 2 MiB of stack per compiling
//! thread): its engine is on-demand or compact (a pooled layout generates
//! the same code as on-demand, and its pools would reserve terabytes), it
//! compiles with `Engine::precompile_component` (no executable mapping), it
//! starts rayon's threads before setting the limit, and glibc gets one
//! malloc arena (`MALLOC_ARENA_MAX=1`; each more reserves 64 MiB). It dies
//! with its parent (`PR_SET_PDEATHSIG`).
//!
//! The child's errors reach the operator as one line naming the module:
//! the deadline (`compiling took longer than compile_timeout = 2s; killed`),
//! memory (`compiling needed more memory than compile_memory_mb = 256 MiB`,
//! from a failed allocation's abort or an `ENOMEM` error), or wasmtime's own
//! message for an invalid component (bounded to [`STDERR_LIMIT`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use toka_core::config::ModulesConfig;
use wasmtime::Engine;
use wasmtime::component::Component;

#[cfg(any(feature = "compiler", test))]
use super::engine::Codegen;
use super::engine::{EngineOptions, MemoryLayout};
use super::file::{self as module, ModuleError};

/// The hidden subcommand of the `toka` binary that compiles one module.
pub const CHILD_COMMAND: &str = "__compile";

/// Exit codes of the compiling child (besides 0, success).
pub mod exit {
    /// wasmtime refused the module; its message is on stderr.
    pub const INVALID: i32 = 3;
    /// An allocation or mapping failed with `ENOMEM` under the limit.
    pub const OUT_OF_MEMORY: i32 = 4;
    /// The child could not set itself up (bad arguments, settings that do
    /// not match the parent's, the limit refused).
    pub const SETUP: i32 = 5;
}

/// How much of the child's stderr is kept for the error message.
pub const STDERR_LIMIT: usize = 4096;

/// Where (and within what budget) modules are compiled; see the
/// [module docs](self).
#[derive(Debug, Clone, Default)]
pub enum Compiler {
    /// In this process, with no budget.
    #[default]
    InProcess,
    /// In a child process, bounded in time and address space.
    Subprocess(Subprocess),
}

/// A compiling child process and its budget.
#[derive(Debug, Clone)]
pub struct Subprocess {
    /// The program: a `toka` binary with the `compiler` feature (the
    /// running one: `std::env::current_exe()`), run as
    /// `<program> __compile ...`.
    pub program: PathBuf,
    /// Wall-clock budget (`[modules] compile_timeout`): killed past it.
    pub timeout: Duration,
    /// Address-space limit of the child in MiB (`[modules]
    /// compile_memory_mb`).
    pub memory_mb: u64,
    /// The engine settings the artifact must be compiled for: the parent
    /// engine's.
    pub options: EngineOptions,
    /// The parent engine's memory layout (only its code-generation part
    /// reaches the child: a pooled layout compiles as on-demand).
    pub layout: MemoryLayout,
}

impl Compiler {
    /// A [`Compiler::Subprocess`] running `program` with `modules`' budget,
    /// for an engine built by `new_engine_with(options, layout)`.
    pub fn subprocess(
        program: impl Into<PathBuf>,
        modules: &ModulesConfig,
        options: &EngineOptions,
        layout: MemoryLayout,
    ) -> Self {
        Compiler::Subprocess(Subprocess {
            program: program.into(),
            timeout: modules.compile_timeout,
            memory_mb: modules.compile_memory_mb,
            options: options.clone(),
            layout,
        })
    }

    /// Compile `wasm` (read from `path`, which names it in errors) for
    /// `engine`. Without the `compiler` feature this only checks the header
    /// and explains that modules must come precompiled.
    pub fn compile(
        &self,
        engine: &Engine,
        path: &Path,
        wasm: &[u8],
    ) -> Result<Component, ModuleError> {
        match self {
            Compiler::InProcess => module::compile(engine, path, wasm),
            Compiler::Subprocess(child) => {
                let fail = |reason: String| ModuleError {
                    path: path.to_path_buf(),
                    reason,
                };
                module::check_header(wasm).map_err(fail)?;
                #[cfg(feature = "compiler")]
                return child.compile(engine, wasm).map_err(fail);
                #[cfg(not(feature = "compiler"))]
                {
                    let _ = (engine, child);
                    Err(fail(module::NO_COMPILER.into()))
                }
            }
        }
    }
}

/// The code-generation part of `layout`, as the child's `--layout` argument:
/// `on-demand` (also for a pooled layout: same code, and no pools to
/// reserve in the child) or `compact:<growth bytes>`.
pub fn layout_arg(layout: MemoryLayout) -> String {
    match layout {
        MemoryLayout::OnDemand | MemoryLayout::Pooled { .. } => "on-demand".into(),
        MemoryLayout::Compact { growth } => format!("compact:{growth}"),
    }
}

/// Parse a [`layout_arg`].
pub fn parse_layout_arg(arg: &str) -> Result<MemoryLayout, String> {
    if arg == "on-demand" {
        return Ok(MemoryLayout::OnDemand);
    }
    arg.strip_prefix("compact:")
        .and_then(|growth| growth.parse().ok())
        .map(|growth| MemoryLayout::Compact { growth })
        .ok_or_else(|| format!("unknown layout `{arg}` (on-demand or compact:<bytes>)"))
}

/// What the parent asks of a compiling child (its command line).
#[derive(Debug, Clone)]
pub struct ChildRequest {
    /// `--memory-mb`: the address-space limit to set first.
    pub memory_mb: u64,
    /// `--fuel`: fuel metering.
    pub options: EngineOptions,
    /// `--layout`: see [`layout_arg`].
    pub layout: MemoryLayout,
    /// `--codegen`: the parent's [`Codegen`](super::engine::Codegen); the
    /// child refuses to compile if its own differs (another `toka` build
    /// behind the same path).
    pub codegen: String,
}

impl Subprocess {
    #[cfg(any(feature = "compiler", test))]
    fn args(&self) -> Vec<String> {
        let mut args = vec![
            CHILD_COMMAND.to_string(),
            "--memory-mb".into(),
            self.memory_mb.to_string(),
            "--layout".into(),
            layout_arg(self.layout),
            "--codegen".into(),
            Codegen::new(&self.options, self.layout)
                .as_str()
                .to_string(),
        ];
        if self.options.fuel {
            args.push("--fuel".into());
        }
        args
    }

    /// Run the child on `wasm`; the component, or the reason it failed.
    #[cfg(feature = "compiler")]
    fn compile(&self, engine: &Engine, wasm: &[u8]) -> Result<Component, String> {
        use std::io::{Read as _, Write as _};
        use std::process::{Command, Stdio};

        let mut child = Command::new(&self.program)
            .args(self.args())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // The child logs nothing of its own; keep wasmtime's quiet too.
            .env("RUST_LOG", "off")
            .env("RUST_BACKTRACE", "0")
            // glibc reserves 64 MiB of address space per thread arena: one
            // arena keeps the child's own footprint near 30 MiB, so the
            // limit is the compile's.
            .env("MALLOC_ARENA_MAX", "1")
            .spawn()
            .map_err(|e| {
                format!(
                    "cannot start the compiler process {}: {e}",
                    self.program.display()
                )
            })?;
        let (Some(mut stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            let _ = child.kill();
            let _ = child.wait();
            return Err("the compiler process has no pipes".into());
        };
        // The artifact cannot outgrow the child's address space.
        let output_limit = self.memory_mb.saturating_mul(1 << 20);
        let (finished, stderr) = std::thread::scope(|scope| {
            scope.spawn(move || {
                // An error here (the child died early) shows in its status.
                let _ = stdin.write_all(wasm);
            });
            let errors = scope.spawn(move || bounded_text(stderr));
            let (tx, rx) = std::sync::mpsc::channel();
            scope.spawn(move || {
                let mut artifact = Vec::new();
                let read = stdout
                    .take(output_limit + 1)
                    .read_to_end(&mut artifact)
                    .map(|_| artifact);
                let _ = tx.send(read);
            });
            // The pipe closes when the child exits (or is killed): the
            // deadline is the only wait that can be long.
            let finished = match rx.recv_timeout(self.timeout) {
                Ok(Ok(artifact)) if artifact.len() as u64 <= output_limit => Ok(artifact),
                Ok(Ok(_)) => Err(Failure::Other(format!(
                    "the compiler process wrote more than compile_memory_mb = {} MiB",
                    self.memory_mb
                ))),
                Ok(Err(e)) => Err(Failure::Other(format!(
                    "reading from the compiler process: {e}"
                ))),
                Err(_) => Err(Failure::Deadline),
            };
            if finished.is_err() {
                let _ = child.kill();
            }
            let status = child.wait();
            let stderr = errors.join().unwrap_or_default();
            ((finished, status), stderr)
        });
        let (finished, status) = finished;
        let status = status.map_err(|e| format!("waiting for the compiler process: {e}"))?;
        match finished {
            Err(Failure::Deadline) => {
                return Err(format!(
                    "compiling took longer than compile_timeout = {}; killed",
                    humantime::format_duration(self.timeout)
                ));
            }
            Err(Failure::Other(reason)) => return Err(reason),
            Ok(artifact) if status.success() => {
                return super::cache::deserialize(engine, &artifact).map_err(|e| {
                    format!("the compiler process's artifact was refused by this engine: {e:#}")
                });
            }
            Ok(_) => {}
        }
        Err(self.explain(status, &stderr))
    }

    /// Why a child that finished on its own failed.
    #[cfg(feature = "compiler")]
    fn explain(&self, status: std::process::ExitStatus, stderr: &str) -> String {
        let memory = format!(
            "compiling needed more memory than compile_memory_mb = {} MiB",
            self.memory_mb
        );
        let said = if stderr.is_empty() {
            String::new()
        } else {
            format!(": {stderr}")
        };
        let mentions_memory = stderr.contains("memory allocation of")
            || stderr.contains("Cannot allocate memory")
            || stderr.contains("out of memory");
        match status.code() {
            Some(exit::INVALID) => format!("invalid component: {stderr}"),
            Some(exit::OUT_OF_MEMORY) => format!("{memory}{said}"),
            Some(_) if mentions_memory => format!("{memory}{said}"),
            Some(exit::SETUP) => format!("the compiler process could not start{said}"),
            Some(code) => format!("the compiler process failed (exit code {code}){said}"),
            None => {
                #[cfg(unix)]
                {
                    use rustix::process::Signal;
                    use std::os::unix::process::ExitStatusExt as _;
                    let signal = status.signal().unwrap_or(0);
                    let name = match signal {
                        s if s == Signal::ABORT.as_raw() => "SIGABRT",
                        s if s == Signal::SEGV.as_raw() => "SIGSEGV",
                        s if s == Signal::BUS.as_raw() => "SIGBUS",
                        s if s == Signal::KILL.as_raw() => "SIGKILL",
                        _ => "",
                    };
                    if mentions_memory {
                        format!("{memory}{said}")
                    } else if name.is_empty() {
                        format!("the compiler process was killed by signal {signal}{said}")
                    } else {
                        format!(
                            "the compiler process was killed by {name}: probably exceeded \
                             compile_memory_mb = {} MiB{said}",
                            self.memory_mb
                        )
                    }
                }
                #[cfg(not(unix))]
                format!("the compiler process failed ({status}){said}")
            }
        }
    }
}

#[cfg(feature = "compiler")]
enum Failure {
    Deadline,
    Other(String),
}

/// The first [`STDERR_LIMIT`] bytes of `pipe` as trimmed text, reading (and
/// discarding) the rest so the child never blocks on a full pipe.
#[cfg(feature = "compiler")]
fn bounded_text(mut pipe: impl std::io::Read) -> String {
    use std::io::Read as _;
    let mut kept = Vec::new();
    let _ = (&mut pipe).take(STDERR_LIMIT as u64).read_to_end(&mut kept);
    let more = std::io::copy(&mut pipe, &mut std::io::sink()).unwrap_or(0) > 0;
    let kept = String::from_utf8_lossy(&kept);
    let mut text = kept
        .lines()
        .map(str::trim)
        // What Rust's panic and allocation-failure reports add for developers.
        .filter(|l| !l.is_empty() && !l.starts_with("note: ") && *l != "stack backtrace:")
        .collect::<Vec<_>>()
        .join("; ");
    // The text a Rust error exit adds before the message.
    if let Some(rest) = text.strip_prefix("error: ") {
        text = rest.to_string();
    }
    if more {
        text.push_str(" [...]");
    }
    text
}

/// The compiling child: limit this process's address space to
/// `request.memory_mb`, build an engine with the parent's code-generation
/// settings, compile the component read from stdin and write its artifact
/// to stdout. Returns the process exit code (see [`exit`]); every failure
/// is explained on stderr.
#[cfg(feature = "compiler")]
pub fn child_main(request: &ChildRequest) -> i32 {
    use std::io::{Read as _, Write as _};

    use super::engine::new_engine_with;

    let fail = |code: i32, message: String| {
        let _ = writeln!(std::io::stderr(), "{message}");
        code
    };
    let codegen = Codegen::new(&request.options, request.layout);
    if codegen.as_str() != request.codegen {
        return fail(
            exit::SETUP,
            format!(
                "this toka generates `{codegen}`, the parent asked for `{}`",
                request.codegen
            ),
        );
    }
    #[cfg(target_os = "linux")]
    {
        // A parent that dies (or is killed) takes its compile with it.
        let _ =
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL));
    }
    // Cranelift compiles functions in parallel on rayon's pool: start it
    // before the limit, so a tight limit fails an allocation (reported)
    // rather than a thread start.
    let _ = rayon::ThreadPoolBuilder::new().build_global();
    #[cfg(unix)]
    {
        use rustix::process::{Resource, Rlimit, setrlimit};
        let bytes = request.memory_mb.saturating_mul(1 << 20);
        let limit = Rlimit {
            current: Some(bytes),
            maximum: Some(bytes),
        };
        if let Err(e) = setrlimit(Resource::As, limit) {
            return fail(
                exit::SETUP,
                format!("cannot limit the address space to {bytes} bytes: {e}"),
            );
        }
    }
    let mut wasm = Vec::new();
    if let Err(e) = std::io::stdin().lock().read_to_end(&mut wasm) {
        let code = if e.kind() == std::io::ErrorKind::OutOfMemory {
            exit::OUT_OF_MEMORY
        } else {
            exit::SETUP
        };
        return fail(code, format!("reading the module from stdin: {e}"));
    }
    // On demand or compact: neither reserves memory up front (no pools).
    let engine = match new_engine_with(&request.options, request.layout) {
        Ok(engine) => engine,
        Err(e) if is_out_of_memory(&e) => return fail(exit::OUT_OF_MEMORY, format!("{e:#}")),
        Err(e) => return fail(exit::SETUP, format!("building the engine: {e:#}")),
    };
    let artifact = match engine.precompile_component(&wasm) {
        Ok(artifact) => artifact,
        Err(e) if is_out_of_memory(&e) => return fail(exit::OUT_OF_MEMORY, format!("{e:#}")),
        Err(e) => return fail(exit::INVALID, format!("{e:#}")),
    };
    drop(wasm);
    let mut out = std::io::stdout().lock();
    match out.write_all(&artifact).and_then(|()| out.flush()) {
        Ok(()) => 0,
        Err(e) => fail(exit::SETUP, format!("writing the artifact: {e}")),
    }
}

/// Whether `error` is (or was caused by) an allocation or mapping refused
/// for lack of memory.
#[cfg(feature = "compiler")]
fn is_out_of_memory(error: &wasmtime::Error) -> bool {
    error.chain().any(|cause| {
        cause.downcast_ref::<std::io::Error>().is_some_and(|e| {
            e.kind() == std::io::ErrorKind::OutOfMemory || e.raw_os_error() == Some(12)
        }) || cause.to_string().contains("Cannot allocate memory")
    })
}

/// How module files are read and compiled: the largest file read and the
/// [`Compiler`].
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// The largest module file read, in bytes (`[modules] max_module_mb`).
    pub max_bytes: u64,
    /// Where modules are compiled, within what budget.
    pub compiler: Compiler,
}

impl Default for LoadOptions {
    /// The default `max_module_mb` (64 MiB), compiling in this process.
    fn default() -> Self {
        LoadOptions::new(&ModulesConfig::default(), Compiler::InProcess)
    }
}

impl LoadOptions {
    /// `modules`' file size limit, compiling with `compiler`.
    pub fn new(modules: &ModulesConfig, compiler: Compiler) -> Self {
        LoadOptions {
            max_bytes: modules.max_module_mb.saturating_mul(1 << 20),
            compiler,
        }
    }

    /// What a runtime uses: `modules`' bounds, compiling in child processes
    /// running `program` (within `compile_timeout` and `compile_memory_mb`)
    /// when given, else in this process; for an engine built by
    /// `new_engine_with(options, layout)`.
    pub fn for_engine(
        modules: &ModulesConfig,
        program: Option<&Path>,
        options: &EngineOptions,
        layout: MemoryLayout,
    ) -> Self {
        let compiler = match program {
            Some(program) => Compiler::subprocess(program, modules, options, layout),
            None => Compiler::InProcess,
        };
        LoadOptions::new(modules, compiler)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_args_round_trip_the_code_generation_part() {
        for layout in [
            MemoryLayout::OnDemand,
            MemoryLayout::Compact { growth: 0 },
            MemoryLayout::Compact { growth: 1 << 20 },
        ] {
            assert_eq!(parse_layout_arg(&layout_arg(layout)).unwrap(), layout);
        }
        let pooled = MemoryLayout::Pooled { agents: 10 };
        let child = parse_layout_arg(&layout_arg(pooled)).unwrap();
        let options = EngineOptions::default();
        assert_eq!(
            Codegen::new(&options, child),
            Codegen::new(&options, pooled)
        );
        assert!(parse_layout_arg("pooled").is_err());
        assert!(parse_layout_arg("compact:x").is_err());
    }

    #[test]
    fn the_child_is_asked_for_the_parents_settings() {
        let child = Subprocess {
            program: "toka".into(),
            timeout: Duration::from_secs(1),
            memory_mb: 256,
            options: EngineOptions { fuel: true },
            layout: MemoryLayout::Compact { growth: 0 },
        };
        let args = child.args();
        assert_eq!(args[0], CHILD_COMMAND);
        assert!(args.contains(&"--fuel".to_string()));
        let codegen = Codegen::new(&child.options, child.layout);
        assert!(args.contains(&codegen.as_str().to_string()), "{args:?}");
    }
}
