//! Hostile suite, second pass: module files that are not regular files, too large, or too costly to compile are refused with a clear error, and never delay the other agents.
//!
//! Each test points one agent's `module` at something hostile (a FIFO with
//! no writer, `/dev/zero` behind a symlink, a directory, a socket, a sparse
//! file larger than `max_module_mb`, a FIFO as the signature file) beside a
//! healthy probe, and asserts that the runtime builds at once (a special
//! file is never waited on), the victim is refused naming the file and the
//! reason, the healthy agent handles every event, and the process's peak
//! RSS stays bounded (nothing was read whole). Compile budgets need the
//! real `toka` binary (the child process): see the end of `tests/cli.rs`.

use std::path::Path;
use std::time::{Duration, Instant};

use toka_tests::{PROBE, Running, logs};

/// Work items the healthy agent must all handle.
const WORK: u64 = 50;

/// Longest a refusal may take: it is immediate; the rest is slack for a
/// loaded machine (compiling the healthy probe is most of it).
const QUICK: Duration = Duration::from_secs(5);

/// Past this the build is declared hung (a FIFO read without the checks
/// never returns).
const HUNG: Duration = Duration::from_secs(20);

/// Peak RSS the test process may reach: far below what reading any of the
/// hostile files whole would take (the sparse file is 4 GiB, `/dev/zero`
/// has no end), with room for the rest of the suite running beside.
const PEAK_RSS_KIB: u64 = 2 << 20;

/// What the victim's failure says, after a run of it beside a healthy
/// probe that handled all its work.
struct Outcome {
    reason: String,
    built_in: Duration,
}

/// Build and run a runtime whose `victim` agent loads `victim` (with
/// `extra` top-level TOML: `[modules]` bounds, `[trust]`) beside a healthy
/// probe `healthy` loads from `healthy_module`; queue `WORK` items for the
/// healthy one, stop, and check everything but the victim's reason.
async fn run_beside(victim: &Path, healthy_module: &str, extra: &str) -> Outcome {
    logs();
    let toml = format!(
        r#"
        [event_bus]
        drain_timeout = "10s"
        {extra}

        [[agents]]
        name = "victim"
        module = {victim:?}

        [[agents]]
        name = "healthy"
        module = {healthy_module:?}
        subscribe = ["work.item"]
        "#
    );
    let began = Instant::now();
    // Built on a blocking thread under a deadline, so a hang fails the test
    // rather than stalling the suite.
    let build = tokio::task::spawn_blocking(move || Running::start(&toml, &["toka.>"]));
    let running = tokio::time::timeout(HUNG, build)
        .await
        .expect("the runtime was built (a special module file hung it)")
        .expect("the build thread");
    let built_in = began.elapsed();
    for i in 0..WORK {
        running.cx.publish("work.item", i.to_string()).unwrap();
    }
    let report = running.stop().await;
    let healthy = report.agent("healthy").expect("the healthy agent started");
    assert_eq!(
        (healthy.handled, healthy.faults, healthy.dropped),
        (WORK, 0, 0),
        "the healthy agent lost nothing"
    );
    assert!(report.agent("victim").is_none(), "the victim never started");
    let [(agent, error)] = &report.failed[..] else {
        panic!("exactly the victim failed: {:?}", report.failed);
    };
    assert_eq!(agent, "victim");
    let reason = error.to_string();
    assert!(
        reason.contains(&victim.display().to_string()),
        "names the file: {reason}"
    );
    assert!(
        built_in < QUICK,
        "refused at once, not after {built_in:?}: {reason}"
    );
    let peak = peak_rss_kib();
    assert!(
        peak < PEAK_RSS_KIB,
        "peak RSS {peak} KiB: a hostile file was read into memory"
    );
    Outcome { reason, built_in }
}

/// This process's peak resident set (`VmHWM`), in KiB.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmHWM in /proc/self/status")
}

fn mkfifo(path: &Path) {
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("run mkfifo");
    assert!(status.success(), "mkfifo {}", path.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_with_no_writer_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("agent.wasm");
    mkfifo(&fifo);
    let out = run_beside(&fifo, "probe.wasm", "").await;
    assert!(
        out.reason.contains("not a regular file (a FIFO)"),
        "{}",
        out.reason
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_zero_behind_a_symlink_is_refused_unread() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("zero.wasm");
    std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
    let out = run_beside(&link, "probe.wasm", "").await;
    assert!(
        out.reason
            .contains("not a regular file (a character device)"),
        "{}",
        out.reason
    );
    // And named directly.
    let out = run_beside(Path::new("/dev/zero"), "probe.wasm", "").await;
    assert!(
        out.reason.contains("(a character device)"),
        "{}",
        out.reason
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("agent.wasm");
    std::fs::create_dir(&folder).unwrap();
    let out = run_beside(&folder, "probe.wasm", "").await;
    assert!(
        out.reason.contains("not a regular file (a directory)"),
        "{}",
        out.reason
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.wasm");
    let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let out = run_beside(&path, "probe.wasm", "").await;
    assert!(
        out.reason.contains("not a regular file (a socket)"),
        "{}",
        out.reason
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_over_max_module_mb_is_refused_unread() {
    // Sparse: 4 GiB that cost nothing on disk, and would cost 4 GiB of
    // memory if read. The healthy probe (about 180 KiB) loads under the
    // same 1 MiB limit.
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.wasm");
    let size: u64 = 4 << 30;
    std::fs::File::create(&big).unwrap().set_len(size).unwrap();
    let out = run_beside(&big, "probe.wasm", "[modules]\nmax_module_mb = 1\n").await;
    assert!(
        out.reason
            .contains(&format!("larger than max_module_mb = 1 MiB: {size} bytes")),
        "{}",
        out.reason
    );

    // One byte over a limit is enough, at the default too.
    let over = dir.path().join("over.wasm");
    std::fs::File::create(&over)
        .unwrap()
        .set_len((64 << 20) + 1)
        .unwrap();
    let out = run_beside(&over, "probe.wasm", "").await;
    assert!(
        out.reason
            .contains("larger than max_module_mb = 64 MiB: 67108865 bytes"),
        "{}",
        out.reason
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_as_the_signature_file_is_refused_at_once() {
    let key = toka_auth::SigningKey::generate().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let wasm = std::fs::read(PROBE).unwrap();
    // The healthy agent's module is signed; the victim's signature file is a
    // FIFO nobody writes.
    let healthy = dir.path().join("healthy.wasm");
    std::fs::write(&healthy, &wasm).unwrap();
    let sig = toka_auth::module_sig::sign_module(&key, &wasm);
    std::fs::write(
        toka_auth::module_sig::signature_path(&healthy),
        sig.to_file_string(),
    )
    .unwrap();
    let victim = dir.path().join("victim.wasm");
    std::fs::write(&victim, &wasm).unwrap();
    mkfifo(&toka_auth::module_sig::signature_path(&victim));
    let trust = format!(
        "[trust]\nrequire_signatures = true\ntrusted_keys = [\"{}\"]\n",
        key.verifying_key()
    );
    let out = run_beside(&victim, healthy.to_str().unwrap(), &trust).await;
    assert!(
        out.reason
            .contains("victim.wasm.sig is not a regular file (a FIFO)"),
        "{}",
        out.reason
    );
    assert!(out.built_in < QUICK);
}
