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
fn check_prints_routes_without_taking_the_port() {
    let dir = tempfile::tempdir().unwrap();
    // The port is held, as by the running runtime the check is about.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let config = write_config(
        dir.path(),
        &format!(
            r#"
[http]
listen = "127.0.0.1:{port}"
[[http.routes]]
path = "/hello/..."
agent = "Hello"
max_concurrent = 7
[[agents]]
name = "Hello"
module = "http_hello.wasm"
"#
        ),
    );
    let out = toka(&["check", config.to_str().unwrap()]);
    let plan = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(plan.contains("agents: 1 ready, 0 failed"), "{plan}");
    assert!(
        plan.contains(&format!(
            "http route: /hello/... on 127.0.0.1:{port} (7 at once)"
        )),
        "{plan}"
    );
    // `run` does need the port, and says so.
    let out = toka(&["run", config.to_str().unwrap(), "--for", "100ms"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(text(&out).contains("cannot listen"), "{}", text(&out));
}

#[test]
fn portable_shape_loads_with_its_drivers_and_providers() {
    let out = toka(&["check", "config/portable.toml"]);
    let log = text(&out);
    // `[drivers.s3]` and `[providers.stripe]` are understood (they run as
    // service agents), and `[vault]` too (unused: no master key asked).
    assert!(
        !log.contains("ignoring config sections this build does not understand"),
        "{log}"
    );
    assert_eq!(out.status.code(), Some(0), "{log}");
    for agent in [
        "IndexerAgent (wasm:",
        "SchedulerAgent (wasm:",
        "Logger (wasm:",
        "s3 (wasm:",
        "stripe (wasm:",
        "stripe-webhook (wasm:",
    ] {
        assert!(log.contains(agent), "{agent}: {log}");
    }
    assert!(log.contains("http route: /stripe/webhook"), "{log}");
    assert!(
        log.contains("dir: /Users/me/Content = config/content (read-only)"),
        "{log}"
    );
}

/// Escape codes only for a terminal: a pipe (as here) gets plain text even
/// without NO_COLOR.
#[test]
fn logs_to_a_pipe_have_no_colour_codes() {
    let out = Command::new(env!("CARGO_BIN_EXE_toka"))
        .args(["run", "config/minimal.toml", "--for", "300ms"])
        .current_dir(root())
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR")
        .output()
        .expect("run toka");
    let log = text(&out);
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert!(log.contains("runtime stopped"), "{log}");
    assert!(!log.contains('\x1b'), "escape codes in a pipe: {log:?}");
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
    assert!(report.contains("toka:runtime/bus@0.1.4"), "{report}");
    assert!(
        report.contains("toka:runtime/handler@0.1.4 [event, init, handle]"),
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

// ---------------------------------------------------------------------------
// Hostile modules, second pass (through the real binary): compiling is
// bounded by `[modules] compile_timeout` and `compile_memory_mb` (each module
// compiles in a `toka __compile` child), and every command that reads a
// module refuses special files and oversized ones at once.
// ---------------------------------------------------------------------------

/// How long a refusal, or the rest of a run past its `--for`, may take:
/// slack for a loaded machine, far below what the bombs cost unbounded.
const MARGIN: std::time::Duration = std::time::Duration::from_secs(5);

/// A component holding one core function of `adds` chained `i32.add`s:
/// cheap to make, costly to compile (on a CI machine 1,000,000 take
/// Cranelift about 7 s and 700 MiB, 300,000 about 2 s and 210 MiB).
fn compile_bomb(adds: usize) -> Vec<u8> {
    fn leb(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    fn section(id: u8, payload: &[u8], out: &mut Vec<u8>) {
        out.push(id);
        leb(payload.len(), out);
        out.extend_from_slice(payload);
    }
    // () -> i32 { i32.const 0 (i32.const 1 i32.add)* }
    let mut body = vec![0x00, 0x41, 0x00];
    for _ in 0..adds {
        body.extend_from_slice(&[0x41, 0x01, 0x6a]);
    }
    body.push(0x0b);
    let mut code = vec![0x01];
    leb(body.len(), &mut code);
    code.extend_from_slice(&body);
    let mut module = b"\0asm\x01\0\0\0".to_vec();
    section(1, &[0x01, 0x60, 0x00, 0x01, 0x7f], &mut module);
    section(3, &[0x01, 0x00], &mut module);
    section(10, &code, &mut module);
    let mut component = b"\0asm\x0d\0\x01\0".to_vec();
    section(1, &module, &mut component);
    component
}

/// The files in a module cache directory (artifacts and any temporary).
fn cache_files(dir: &Path) -> Vec<String> {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// The `peak_rss_kib` the run summary reports.
fn peak_rss(log: &str) -> u64 {
    log.lines()
        .find_map(|l| l.split("peak_rss_kib=").nth(1))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("peak RSS reported: {log}"))
}

/// A config (in `dir`) running `bomb` beside the Logger, with `modules`
/// lines in `[modules]`.
fn bomb_config(dir: &Path, bomb: &Path, modules: &str) -> PathBuf {
    write_config(
        dir,
        &format!(
            "[event_bus]\nscheduler_tick_ms = 50\n[modules]\n{modules}\n\
             [[agents]]\nname = \"bomb\"\nmodule = {:?}\n\
             [[agents]]\nname = \"Logger\"\nsubscribe = [\"toka.tick\"]\n",
            bomb.display().to_string()
        ),
    )
}

#[test]
fn a_compile_bomb_is_killed_at_compile_timeout_and_the_rest_runs() {
    let dir = tempfile::tempdir().unwrap();
    let bomb = dir.path().join("bomb.wasm");
    std::fs::write(&bomb, compile_bomb(1_000_000)).unwrap();
    let cfg = bomb_config(dir.path(), &bomb, "compile_timeout = \"1s\"");
    let cache = dir.path().join("cache");
    let started = std::time::Instant::now();
    let out = toka(&[
        "run",
        cfg.to_str().unwrap(),
        "--for",
        "3s",
        "--cache-dir",
        cache.to_str().unwrap(),
    ]);
    let elapsed = started.elapsed();
    let log = text(&out);
    assert_eq!(out.status.code(), Some(0), "the other agents run: {log}");
    assert!(
        log.contains(&format!(
            "{}: compiling took longer than compile_timeout = 1s; killed",
            bomb.display()
        )),
        "{log}"
    );
    assert!(
        summary_field(&log, "Logger", "handled") >= 10,
        "the Logger handled its ticks: {log}"
    );
    // --for 3s, plus the one second the bomb was given.
    assert!(
        elapsed < std::time::Duration::from_secs(4) + MARGIN,
        "the run took {elapsed:?}"
    );
    // Only the Logger's artifact: nothing of the bomb, not even a temporary.
    let files = cache_files(&cache);
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].ends_with(".cwasm"), "{files:?}");
    // Compiled in this process, the bomb alone would take about 700 MiB.
    let peak = peak_rss(&log);
    assert!(peak < 128 << 10, "peak RSS {peak} KiB");
}

#[test]
fn a_slow_compile_delays_only_its_own_agent() {
    // Within its budget but slow: the Logger starts at once and runs while
    // the bomb compiles in the background (before, start-up waited for it).
    let dir = tempfile::tempdir().unwrap();
    let bomb = dir.path().join("bomb.wasm");
    std::fs::write(&bomb, compile_bomb(1_000_000)).unwrap();
    let cfg = bomb_config(dir.path(), &bomb, "compile_timeout = \"60s\"");
    let started = std::time::Instant::now();
    let out = toka(&["run", cfg.to_str().unwrap(), "--for", "2s"]);
    let elapsed = started.elapsed();
    let log = text(&out);
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert!(
        summary_field(&log, "Logger", "handled") >= 10,
        "the Logger ran while the bomb compiled: {log}"
    );
    assert!(
        elapsed < std::time::Duration::from_secs(2) + MARGIN,
        "the run did not wait for the compile: {elapsed:?}"
    );
    assert!(
        !log.contains("module compiled in the background") && log.contains("compiling=1"),
        "the bomb was still compiling when the run ended: {log}"
    );
}

#[test]
fn a_compile_bomb_over_compile_memory_mb_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let bomb = dir.path().join("bomb.wasm");
    std::fs::write(&bomb, compile_bomb(300_000)).unwrap();
    let cfg = bomb_config(
        dir.path(),
        &bomb,
        "compile_timeout = \"60s\"\ncompile_memory_mb = 64",
    );
    let cache = dir.path().join("cache");
    let started = std::time::Instant::now();
    let out = toka(&[
        "run",
        cfg.to_str().unwrap(),
        "--for",
        "1s",
        "--cache-dir",
        cache.to_str().unwrap(),
    ]);
    let elapsed = started.elapsed();
    let log = text(&out);
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert!(
        log.contains(&format!(
            "{}: compiling needed more memory than compile_memory_mb = 64 MiB",
            bomb.display()
        )),
        "{log}"
    );
    assert!(summary_field(&log, "Logger", "handled") >= 5, "{log}");
    assert!(
        elapsed < std::time::Duration::from_secs(1) + MARGIN,
        "the run took {elapsed:?}"
    );
    assert_eq!(cache_files(&cache).len(), 1, "{:?}", cache_files(&cache));
}

#[test]
fn toka_compile_and_check_are_bounded_too() {
    let dir = tempfile::tempdir().unwrap();
    let modules_dir = dir.path().join("mods");
    std::fs::create_dir(&modules_dir).unwrap();
    let bomb = modules_dir.join("bomb.wasm");
    std::fs::write(&bomb, compile_bomb(1_000_000)).unwrap();
    std::fs::copy(
        modules().join("logger.wasm"),
        modules_dir.join("logger.wasm"),
    )
    .unwrap();
    let cfg = bomb_config(dir.path(), &bomb, "compile_timeout = \"1s\"");
    let cache = dir.path().join("cache");

    // `compile DIR --config`: the config's budget for every module of DIR.
    let started = std::time::Instant::now();
    let out = toka(&[
        "compile",
        modules_dir.to_str().unwrap(),
        "--config",
        cfg.to_str().unwrap(),
        "--cache-dir",
        cache.to_str().unwrap(),
    ]);
    let log = text(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(
        log.contains("bomb.wasm: compiling took longer than compile_timeout = 1s; killed"),
        "{log}"
    );
    assert_eq!(log.matches("  compiled  ").count(), 1, "the Logger: {log}");
    assert!(started.elapsed() < std::time::Duration::from_secs(1) + MARGIN);
    assert_eq!(cache_files(&cache).len(), 1, "{:?}", cache_files(&cache));

    // `check` compiles too (the Logger is cached now; the bomb is not).
    let started = std::time::Instant::now();
    let out = toka(&[
        "check",
        cfg.to_str().unwrap(),
        "--cache-dir",
        cache.to_str().unwrap(),
    ]);
    let log = text(&out);
    assert_eq!(out.status.code(), Some(2), "{log}");
    assert!(
        log.contains("compiling took longer than compile_timeout = 1s"),
        "{log}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(1) + MARGIN);
    assert_eq!(cache_files(&cache).len(), 1, "{:?}", cache_files(&cache));
}

#[test]
fn an_invalid_component_is_reported_with_the_compilers_message() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("truncated.wasm");
    let probe = std::fs::read(modules().join("probe.wasm")).unwrap();
    std::fs::write(&bad, &probe[..probe.len() / 2]).unwrap();
    let cfg = bomb_config(dir.path(), &bad, "");
    let cache = dir.path().join("cache");
    let out = toka(&[
        "check",
        cfg.to_str().unwrap(),
        "--cache-dir",
        cache.to_str().unwrap(),
    ]);
    let log = text(&out);
    assert_eq!(out.status.code(), Some(2), "{log}");
    // wasmtime's own words, from the child's stderr, on the module's line.
    let line = log
        .lines()
        .find(|l| l.contains("truncated.wasm: invalid component: "))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(
        line.contains("failed to parse WebAssembly module"),
        "{line}"
    );
    assert!(!line.contains("RUST_BACKTRACE"), "{line}");
    assert_eq!(cache_files(&cache).len(), 1, "{:?}", cache_files(&cache));
}

#[test]
fn commands_that_read_modules_refuse_special_and_oversized_files_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = |name: &str| dir.path().join(name);
    let fifo = d("fifo.wasm");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let zero = d("zero.wasm");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    let folder = d("folder.wasm");
    std::fs::create_dir(&folder).unwrap();
    let big = d("big.wasm");
    std::fs::File::create(&big)
        .unwrap()
        .set_len((64 << 20) + 1)
        .unwrap();
    let keys = d("k");
    let out = toka(&["keygen", "--out", keys.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let (key, public) = (d("k.key"), d("k.pub"));
    let cases = [
        (&fifo, "not a regular file (a FIFO)"),
        (&zero, "not a regular file (a character device)"),
        (&folder, "not a regular file (a directory)"),
        (&big, "larger than max_module_mb = 64 MiB: 67108865 bytes"),
    ];
    for (path, reason) in cases {
        let p = path.to_str().unwrap();
        let cfg = bomb_config(dir.path(), path, "");
        let cache = d("cache");
        let commands: [(&[&str], i32); 5] = [
            (&["inspect", p], 2),
            (&["sign", "--key", key.to_str().unwrap(), p], 2),
            (&["verify", "--key", public.to_str().unwrap(), p], 1),
            (
                &[
                    "compile",
                    "--config",
                    cfg.to_str().unwrap(),
                    "--cache-dir",
                    cache.to_str().unwrap(),
                ],
                1,
            ),
            (&["check", cfg.to_str().unwrap(), "--no-cache"], 2),
        ];
        for (args, code) in commands {
            let started = std::time::Instant::now();
            let out = toka(args);
            let log = text(&out);
            assert_eq!(out.status.code(), Some(code), "{args:?}: {log}");
            assert!(
                log.contains(&format!("{p}: {reason}")),
                "{args:?} names the file and the reason: {log}"
            );
            assert!(
                started.elapsed() < MARGIN,
                "{args:?} took {:?}",
                started.elapsed()
            );
        }
        assert!(!d("fifo.wasm.sig").exists() && !d("zero.wasm.sig").exists());
    }
}

/// One mistake, one exit code: whichever stage finds a configuration the
/// operator got wrong (a store a grant needs that is not configured, a
/// `[trust]` this build cannot honour, a module that does not load), `toka
/// run` and `toka check` both exit 2 and name it.
#[test]
fn run_and_check_exit_2_for_the_same_config_mistake() {
    let dir = tempfile::tempdir().unwrap();
    // A key from the environment, so the grants get as far as their stores;
    // HOME in the temporary directory, so no real key file is read.
    let toka_env = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_toka"))
            .args(args)
            .current_dir(root())
            .env("RUST_LOG", "info")
            .env("RUST_BACKTRACE", "0")
            .env("NO_COLOR", "1")
            .env("HOME", dir.path())
            .env_remove("XDG_CONFIG_HOME")
            .env(
                "TOKA_MASTER_KEY",
                "T3RoZXIta2V5LW9mLWV4YWN0bHktMzItYnl0ZXMhISE=",
            )
            .output()
            .expect("run toka")
    };
    let broken = dir.path().join("broken.wasm");
    std::fs::write(&broken, b"\0asm\x01\0\0\0").unwrap();
    let cases = [
        (
            "[[agents]]\nname = \"Logger\"\nsubscribe = [\"toka.tick\"]\nsecrets = [\"api/*\"]\n"
                .to_owned(),
            "no secret store is configured",
        ),
        (
            "[[agents]]\nname = \"Logger\"\nsubscribe = [\"toka.tick\"]\nvault = true\n".to_owned(),
            "no vault is configured",
        ),
        (
            "[trust]\nrequire_signatures = true\n\n\
             [[agents]]\nname = \"Logger\"\nsubscribe = [\"toka.tick\"]\n"
                .to_owned(),
            "trusted_keys",
        ),
        (
            format!(
                "[[agents]]\nname = \"broken\"\nmodule = {:?}\n\
                 [[agents]]\nname = \"Logger\"\nsubscribe = [\"toka.tick\"]\n",
                broken.display().to_string()
            ),
            "broken.wasm",
        ),
    ];
    for (body, names) in &cases {
        let cfg = write_config(dir.path(), body);
        let cfg = cfg.to_str().unwrap();
        let runs = [
            toka_env(&["run", cfg, "--for", "300ms", "--strict", "--no-cache"]),
            toka_env(&["check", cfg, "--no-cache"]),
        ];
        for (command, out) in ["run --strict", "check"].iter().zip(&runs) {
            let log = text(out);
            assert_eq!(out.status.code(), Some(2), "{command}, {names}: {log}");
            assert!(log.contains(names), "{command} names it ({names}): {log}");
            assert!(!log.contains("runtime started"), "{command}: {log}");
        }
    }
}
