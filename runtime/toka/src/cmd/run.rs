//! `toka run <config>`: run the agents of a configuration until Ctrl-C or
//! SIGTERM (or `--for`), then drain gracefully. A second signal while
//! shutting down exits at once (130).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use toka_runtime::{Runtime, RuntimeOptions};

use super::compile::{CacheArgs, compiler_program};

/// `toka run` arguments.
#[derive(clap::Args, Debug)]
pub(crate) struct RunArgs {
    /// The configuration file (TOML).
    config: PathBuf,
    /// Stop gracefully after this long, e.g. `3s`, `1m30s`.
    #[arg(long = "for", value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Refuse to start if any module fails to load.
    #[arg(long)]
    strict: bool,
    #[command(flatten)]
    cache: CacheArgs,
}

pub(crate) fn run(args: RunArgs) -> anyhow::Result<()> {
    let cfg = super::load_for_runtime(&args.config)?;
    let options = RuntimeOptions {
        strict: args.strict,
        cache_dir: args.cache.dir(),
        compiler_program: compiler_program(),
        // A slow compile delays only its own agents.
        background_compile: true,
        ..Default::default()
    };
    let runtime = Runtime::with_options(cfg, options)?;
    let duration = args.duration;
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let report = tokio.block_on(async move {
        let draining = Arc::new(AtomicBool::new(false));
        // Listening before the runtime starts (see the function).
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
                        draining.store(true, Ordering::Release);
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
///
/// The handlers are registered when this is called, before the runtime
/// starts, so that the first signal of the run is counted however early it
/// comes; the returned future (spawned) does the counting.
fn exit_on_second_signal(draining: Arc<AtomicBool>) -> impl Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let signals = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    );
    async move {
        let (Ok(mut int), Ok(mut term)) = signals else {
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
            if seen >= 2 || draining.load(Ordering::Acquire) {
                tracing::warn!(
                    signal = name,
                    "signal received while shutting down: exiting now without finishing the drain"
                );
                std::process::exit(130);
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
