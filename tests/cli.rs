//! End-to-end tests of the `toka` binary: exit codes, messages an operator
//! reads, the demo configs, `inspect`, and `new agent` producing a crate that
//! builds and runs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn modules() -> PathBuf {
    root().join("target/modules")
}

fn toka(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_toka"))
        .args(args)
        .current_dir(root())
        .env("RUST_LOG", "info")
        .env("RUST_BACKTRACE", "0")
        .env("NO_COLOR", "1")
        .output()
        .expect("run toka")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn write_config(dir: &Path, body: &str) -> PathBuf {
    let path = dir.join("toka.toml");
    let body = format!(
        "modules_dir = {:?}\n{body}",
        modules().display().to_string()
    );
    std::fs::write(&path, body).unwrap();
    path
}

#[test]
fn minimal_config_prints_the_loggers_ticks() {
    let out = toka(&["run", "config/minimal.toml", "--for", "600ms"]);
    let log = text(&out);
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert!(
        log.contains("agent started") && log.contains("Logger"),
        "{log}"
    );
    assert!(
        log.contains(r#"kind="toka.tick""#),
        "the logger logs tick events: {log}"
    );
    assert!(log.contains("runtime stopped"), "{log}");
}

#[test]
fn demo_agents_talk() {
    let out = toka(&["run", "config/demo.toml", "--for", "1500ms"]);
    let log = text(&out);
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert!(
        log.contains("Counter reached 10"),
        "milestone reached and logged: {log}"
    );
}

#[test]
fn check_prints_the_plan() {
    let out = toka(&["check", "config/demo.toml"]);
    let plan = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(plan.contains("agents: 3 ready, 0 failed"), "{plan}");
    assert!(plan.contains("subscribe: counter.value"), "{plan}");
    assert!(plan.contains("publish:   counter.milestone"), "{plan}");
    assert!(plan.contains("init keys: every_n"), "{plan}");
}

#[test]
fn portable_shape_loads_and_warns_once_about_unknown_sections() {
    let out = toka(&["check", "config/portable.toml"]);
    let log = text(&out);
    assert_eq!(
        log.matches("ignoring config sections this build does not understand")
            .count(),
        1,
        "{log}"
    );
    // `[vault]` is understood now (the vault capability), and unused: no
    // agent is granted it, so nothing asks for a master key.
    assert!(log.contains("drivers, providers"), "{log}");
    assert!(!log.contains("drivers, providers, vault"), "{log}");
    // Its agents' modules do not exist here: named, and check fails with 2.
    assert!(log.contains("indexer_agent.wasm"), "{log}");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn bad_toml_names_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "[event_bus]\nbuffer_size = = 3\n");
    let out = toka(&["run", cfg.to_str().unwrap()]);
    let log = text(&out);
    assert_eq!(out.status.code(), Some(2), "{log}");
    assert!(
        log.contains(&format!("{}:3:", cfg.display())),
        "file and line: {log}"
    );
}

#[test]
fn wrong_type_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "[event_bus]\nbuffer_size = \"big\"\n");
    let out = toka(&["check", cfg.to_str().unwrap()]);
    let log = text(&out);
    assert_eq!(out.status.code(), Some(2), "{log}");
    assert!(
        log.contains(&format!("{}:3:15: event_bus.buffer_size", cfg.display())),
        "{log}"
    );
}

#[test]
fn unset_variable_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        "[[agents]]\nname = \"Logger\"\ntoken = \"${TOKA_TEST_DEFINITELY_UNSET}\"\n",
    );
    let out = toka(&["check", cfg.to_str().unwrap()]);
    let log = text(&out);
    assert_eq!(out.status.code(), Some(2), "{log}");
    assert!(
        log.contains("TOKA_TEST_DEFINITELY_UNSET") && log.contains("agents[0].token"),
        "{log}"
    );
    assert!(log.contains(&format!("{}:4:", cfg.display())), "{log}");
}

#[test]
fn broken_module_is_named_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("broken.wasm");
    std::fs::write(&bad, b"\0asm\x01\0\0\0").unwrap();
    let body = format!(
        "[[agents]]\nname = \"broken\"\nmodule = {:?}\n[[agents]]\nname = \"Logger\"\nsubscribe = [\"toka.tick\"]\n",
        bad.display().to_string()
    );
    let cfg = write_config(dir.path(), &body);
    let out = toka(&["run", cfg.to_str().unwrap(), "--for", "300ms"]);
    let log = text(&out);
    assert_eq!(out.status.code(), Some(0), "the other agents run: {log}");
    assert!(
        log.contains("broken.wasm") && log.contains("core WebAssembly module"),
        "{log}"
    );
    assert!(
        log.contains(r#"kind="toka.tick""#),
        "Logger still ran: {log}"
    );

    let strict = toka(&["run", cfg.to_str().unwrap(), "--for", "300ms", "--strict"]);
    let log = text(&strict);
    assert_eq!(strict.status.code(), Some(2), "{log}");
    assert!(log.contains("broken.wasm"), "{log}");
    assert!(
        !log.contains("runtime started"),
        "strict refuses to start: {log}"
    );
}

#[test]
fn inspect_shows_imports_exports_and_capabilities() {
    let counter = modules().join("counter.wasm");
    let out = toka(&["inspect", counter.to_str().unwrap()]);
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(report.contains("runnable as a Toka agent: yes"), "{report}");
    assert!(report.contains("toka:runtime/bus@0.1.1"), "{report}");
    assert!(
        report.contains("toka:runtime/handler@0.1.1 [event, init, handle]"),
        "{report}"
    );
    assert!(report.contains("wasi:cli/environment"), "{report}");

    let out = toka(&["inspect", "Cargo.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("not a WebAssembly file"));
}

#[test]
fn new_agent_builds_and_runs() {
    let dir = tempfile::tempdir().unwrap();
    let out = toka(&[
        "new",
        "agent",
        "hello-agent",
        "--dir",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let krate = dir.path().join("hello-agent");
    // Reuse the guests' build directory so wit-bindgen is not compiled again.
    let target = root().join("target/guest-build");
    let build = Command::new(env!("CARGO"))
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .current_dir(&krate)
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .output()
        .unwrap();
    assert!(build.status.success(), "{}", text(&build));
    let wasm = target.join("wasm32-wasip2/release/hello_agent.wasm");
    assert!(wasm.exists());
    let cfg = krate.join("toka.toml");
    let config = std::fs::read_to_string(&cfg).unwrap();
    // The scaffold's config points at the crate's own target dir; point it at ours.
    let config = config.replace(
        "target/wasm32-wasip2/release",
        &target.join("wasm32-wasip2/release").display().to_string(),
    );
    std::fs::write(&cfg, config).unwrap();
    let run = toka(&["run", cfg.to_str().unwrap(), "--for", "1200ms"]);
    let log = text(&run);
    assert_eq!(run.status.code(), Some(0), "{log}");
    assert!(log.contains("hello-agent"), "{log}");
    assert!(
        log.contains(r#"kind="toka.tick""#),
        "the new agent handled ticks: {log}"
    );
    assert!(log.contains("faults=0"), "{log}");
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(toka(&["run"]).status.code(), Some(2));
    assert_eq!(toka(&["frobnicate"]).status.code(), Some(2));
    assert_eq!(
        toka(&["run", "config/minimal.toml", "--for", "soon"])
            .status
            .code(),
        Some(2)
    );
}

#[test]
fn json_logs() {
    let out = toka(&[
        "--log-format",
        "json",
        "run",
        "config/minimal.toml",
        "--for",
        "300ms",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0));
    let first = stderr.lines().next().unwrap();
    assert!(
        first.starts_with('{') && first.contains("\"level\""),
        "{first}"
    );
}

/// Host overhead documented in README "Security model": what the `toka`
/// process may use beyond the agents' `memory_mb` limits.
const HOST_OVERHEAD_MIB: u64 = 64;

#[test]
fn hostile_agents_are_contained_for_the_whole_run() {
    let started = std::time::Instant::now();
    let out = toka(&["run", "config/hostile.toml", "--for", "3s"]);
    let log = text(&out);
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(3),
        "ran for the full duration"
    );
    for agent in ["looper", "bomb"] {
        assert!(
            log.lines()
                .any(|l| l.contains("agent quarantined")
                    && l.contains(&format!("agent=\"{agent}\""))),
            "{agent} was stopped and quarantined: {log}"
        );
    }
    assert!(log.contains("reason=\"deadline"), "{log}");
    assert!(log.contains("reason=\"memory-limit"), "{log}");
    // The healthy pipeline's output is complete: the Logger logged every
    // value the Counter produced, in order, with no gap.
    let values: Vec<u64> = log
        .lines()
        .filter(|l| l.contains("kind=\"counter.value\""))
        .map(|l| {
            let at = l.find("payload=").expect("payload field") + "payload=".len();
            l[at..]
                .trim_matches('"')
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    let counted = summary_field(&log, "Counter", "handled");
    assert!(counted >= 40, "ticks kept flowing: {counted}");
    assert_eq!(values, (1..=counted).collect::<Vec<_>>(), "{log}");
    assert!(summary_field(&log, "flooder", "output_discarded") > 0);
    assert_eq!(summary_field(&log, "flooder", "faults"), 0);
    let limits_mib = 5 * 32;
    let peak_kib = log
        .lines()
        .find_map(|l| l.split("peak_rss_kib=").nth(1))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .expect("peak RSS reported");
    assert!(
        peak_kib <= (limits_mib + HOST_OVERHEAD_MIB) * 1024,
        "peak RSS {peak_kib} KiB exceeds limits {limits_mib} MiB + host {HOST_OVERHEAD_MIB} MiB"
    );
}

/// A numeric field of an agent's `agent summary` line.
fn summary_field(log: &str, agent: &str, field: &str) -> u64 {
    let line = log
        .lines()
        .find(|l| l.contains("agent summary") && l.contains(&format!("agent={agent} ")))
        .unwrap_or_else(|| panic!("no summary for {agent}: {log}"));
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{field}=")))
        .unwrap_or_else(|| panic!("no {field} in {line}"))
        .parse()
        .unwrap()
}

#[test]
fn compile_fills_the_cache_and_run_uses_it() {
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().join("modules");
    let cache_dir = cache_dir.to_str().unwrap();
    let wasm = std::fs::read_dir(modules())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "wasm")
        })
        .count();
    // `name  hash  status  time`: how many modules got `status`.
    let count = |out: &Output, status: &str| {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.split_whitespace().nth(2) == Some(status))
            .count()
    };
    let first = toka(&["compile", "target/modules", "--cache-dir", cache_dir]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));
    assert_eq!(count(&first, "compiled"), wasm, "{}", text(&first));
    let second = toka(&["compile", "target/modules", "--cache-dir", cache_dir]);
    assert_eq!(second.status.code(), Some(0), "{}", text(&second));
    assert_eq!(
        count(&second, "cached"),
        wasm,
        "all cached: {}",
        text(&second)
    );

    // `run` finds every demo module in the cache.
    let run = toka(&[
        "run",
        "config/demo.toml",
        "--for",
        "100ms",
        "--cache-dir",
        cache_dir,
    ]);
    let log = text(&run);
    assert_eq!(run.status.code(), Some(0), "{log}");
    assert!(
        log.lines()
            .any(|l| l.contains("modules loaded") && l.contains("hits=3 misses=0 rebuilt=0")),
        "{log}"
    );

    // A module that does not compile is named, and the command fails.
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        modules().join("logger.wasm"),
        dir.path().join("logger.wasm"),
    )
    .unwrap();
    std::fs::write(dir.path().join("bad.wasm"), b"not wasm").unwrap();
    let out = toka(&[
        "compile",
        dir.path().to_str().unwrap(),
        "--cache-dir",
        cache_dir,
    ]);
    let log = text(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(
        log.contains("bad.wasm") && log.contains("not a WebAssembly file"),
        "{log}"
    );
    assert_eq!(
        count(&out, "cached"),
        1,
        "the good module still compiled: {log}"
    );
}

#[test]
fn compile_for_a_config_uses_the_settings_run_will_pick() {
    let tmp = tempfile::tempdir().unwrap();
    let cache_dir = tmp.path().join("modules");
    let cache_dir = cache_dir.to_str().unwrap();
    // A fuel limit changes the generated code.
    let config = write_config(
        tmp.path(),
        "[[agents]]\nname = \"Logger\"\nsubscribe = [\"toka.tick\"]\nfuel = 1000000\n\n\
         [[agents]]\nname = \"Counter\"\nsubscribe = [\"toka.tick\"]\npublish = [\"counter.value\"]\n",
    );
    let config = config.to_str().unwrap();
    let loaded = |out: &Output| {
        let log = text(out);
        assert_eq!(out.status.code(), Some(0), "{log}");
        log.lines()
            .find(|l| l.contains("modules loaded"))
            .map(|l| {
                ["hits", "misses"].map(|k| {
                    l.split_whitespace()
                        .find_map(|w| w.strip_prefix(&format!("{k}=")))
                        .unwrap()
                        .to_string()
                })
            })
            .unwrap_or_else(|| panic!("{log}"))
    };

    // A plain directory compile is for fuel-less configs: run misses.
    let out = toka(&["compile", "target/modules", "--cache-dir", cache_dir]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("fuel off"), "{}", text(&out));
    let run = toka(&["run", config, "--for", "50ms", "--cache-dir", cache_dir]);
    assert_eq!(loaded(&run), ["0", "2"]);

    // Compiled for the config (its two modules only, with fuel): run hits.
    let cache2 = tmp.path().join("modules2");
    let cache2 = cache2.to_str().unwrap();
    let out = toka(&["compile", "--config", config, "--cache-dir", cache2]);
    let log = text(&out);
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert!(log.contains("fuel on"), "{log}");
    assert_eq!(log.matches("  compiled  ").count(), 2, "{log}");
    let run = toka(&["run", config, "--for", "50ms", "--cache-dir", cache2]);
    assert_eq!(loaded(&run), ["2", "0"]);

    // Neither a directory nor a config: a usage error.
    let out = toka(&["compile", "--cache-dir", cache2]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--config"), "{}", text(&out));
}

#[test]
fn version_names_wasmtime_and_the_features() {
    let out = toka(&["--version"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let version = String::from_utf8_lossy(&out.stdout);
    assert!(version.contains("wasmtime 48."), "{version}");
    assert!(
        version.contains("features: compiler, secrets, vault, auth"),
        "{version}"
    );
    assert!(!version.contains("runtime-only"), "{version}");
}

/// `toka run ... 2>&1 | head`: once the reader is gone, log lines are
/// dropped and the run still ends cleanly (not a panic's exit 101).
#[test]
fn a_closed_log_pipe_does_not_stop_the_run() {
    use std::io::Read as _;
    let mut child = Command::new(env!("CARGO_BIN_EXE_toka"))
        .args(["run", "config/minimal.toml", "--for", "500ms"])
        .current_dir(root())
        .env("RUST_LOG", "info")
        .env("RUST_BACKTRACE", "0")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run toka");
    let mut stderr = child.stderr.take().unwrap();
    let mut first = [0; 64];
    stderr.read_exact(&mut first).unwrap();
    drop(stderr);
    assert_eq!(child.wait().unwrap().code(), Some(0));
}
