//! `toka run` with guests that wait inside host calls: the run ends on time,
//! the healthy agent beside them keeps its pace on one worker, memory stays
//! bounded, and a second SIGINT exits at once.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn write_config(dir: &Path, body: &str) -> PathBuf {
    let modules = root().join("target/modules");
    let path = dir.join("toka.toml");
    std::fs::write(
        &path,
        format!("modules_dir = {:?}\n{body}", modules.display().to_string()),
    )
    .unwrap();
    path
}

/// Sleeping victims and a healthy probe, all on the global tick.
fn config(drain: &str, victim_timeout_ms: u64) -> String {
    let victims: String = ["sleep", "poll", "block"]
        .iter()
        .map(|wait| {
            format!(
                r#"
                [[agents]]
                name = "{wait}er"
                module = "probe.wasm"
                subscribe = ["toka.tick"]
                timeout_ms = {victim_timeout_ms}
                command = "{wait} 600000"
                "#
            )
        })
        .collect();
    format!(
        r#"
        [event_bus]
        workers = 1
        scheduler_tick_ms = 50
        drain_timeout = "{drain}"

        [limits]
        memory_mb = 32
        backoff = "1ms"
        max_restarts = 100000

        {victims}

        [[agents]]
        name = "healthy"
        module = "probe.wasm"
        subscribe = ["toka.tick"]
        timeout_ms = 1000
        "#
    )
}

/// `toka run` with stderr read line by line on a thread.
fn spawn(args: &[&str]) -> (Child, mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_toka"))
        .args(args)
        .current_dir(root())
        .env("RUST_LOG", "info")
        .env("RUST_BACKTRACE", "0")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run toka");
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// Lines until one contains `what` (all of them returned); panics after `within`.
fn wait_line(rx: &mpsc::Receiver<String>, what: &str, within: Duration) -> Vec<String> {
    let deadline = Instant::now() + within;
    let mut lines = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let found = line.contains(what);
                lines.push(line);
                if found {
                    return lines;
                }
            }
            Err(_) => panic!("no line with {what:?} within {within:?}: {lines:#?}"),
        }
    }
}

/// Wait for `child` to exit within `within`, killing it (and failing) otherwise.
fn exit_within(child: Child, within: Duration) -> std::process::ExitStatus {
    let pid = child.id().to_string();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut child = child;
        let _ = tx.send(child.wait());
    });
    match rx.recv_timeout(within) {
        Ok(status) => status.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
            panic!("toka did not exit within {within:?}");
        }
    }
}

fn field(line: &str, key: &str) -> Option<u64> {
    let at = line.find(&format!("{key}="))? + key.len() + 1;
    line[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

#[test]
fn a_run_with_sleeping_guests_ends_on_time_and_the_healthy_agent_keeps_up() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &config("500ms", 1500));
    let began = Instant::now();
    let (child, rx) = spawn(&["run", cfg.to_str().unwrap(), "--for", "3s"]);
    let status = exit_within(child, Duration::from_secs(30));
    let took = began.elapsed();
    let log: Vec<String> = rx.try_iter().collect();
    let log = log.join("\n");
    assert!(status.success(), "{log}");
    // --for + drain_timeout + the longest timeout_ms + a tick, plus start-up.
    assert!(
        took < Duration::from_millis(3000 + 500 + 1500 + 5 + 4000),
        "the run ended on time: {took:?}\n{log}"
    );
    let summary = |agent: &str| {
        log.lines()
            .find(|l| l.contains("agent summary") && l.contains(&format!("agent={agent} ")))
            .unwrap_or_else(|| panic!("no summary for {agent}: {log}"))
            .to_string()
    };
    // 3 s of 50 ms ticks on the only worker, beside three guests that each
    // park it for 1.5 s per tick they take.
    let healthy = summary("healthy");
    let handled = field(&healthy, "handled").unwrap();
    assert!(handled >= 30, "the healthy agent kept up: {healthy}");
    assert_eq!(field(&healthy, "faults"), Some(0), "{healthy}");
    for victim in ["sleeper", "poller", "blocker"] {
        let line = summary(victim);
        assert!(field(&line, "faults").unwrap() >= 1, "{line}");
    }
    assert!(
        log.contains("waited in a host call until its deadline"),
        "{log}"
    );
    let peak = log
        .lines()
        .find_map(|l| {
            l.contains("peak resident memory")
                .then(|| field(l, "peak_rss_kib"))
        })
        .flatten()
        .expect("peak RSS reported");
    // Three 32 MiB guests and a healthy one, plus the documented host overhead.
    assert!(peak < (4 * 32 + 64) * 1024, "peak RSS {peak} KiB");
}

#[test]
fn a_second_sigint_exits_at_once() {
    let dir = tempfile::tempdir().unwrap();
    // Drain and deadlines of a minute: only the second signal ends this fast.
    let cfg = write_config(dir.path(), &config("60s", 60_000));
    let (child, rx) = spawn(&["run", cfg.to_str().unwrap()]);
    wait_line(&rx, "runtime started", Duration::from_secs(30));
    wait_line(&rx, "agent started", Duration::from_secs(30));
    // A victim is inside `handle` (its `probe.seen` is refused, then it
    // sleeps): the drain cannot end by itself before the second signal.
    wait_line(&rx, "publish refused", Duration::from_secs(30));
    let pid = child.id().to_string();
    let kill = |sig: &str| {
        let ok = Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    };
    kill("-INT");
    wait_line(&rx, "shutting down", Duration::from_secs(10));
    let second = Instant::now();
    kill("-INT");
    let status = exit_within(child, Duration::from_secs(5));
    assert!(second.elapsed() < Duration::from_secs(2));
    assert_eq!(status.code(), Some(130));
    let rest: Vec<String> = rx.iter().collect();
    assert!(
        rest.iter()
            .any(|l| l.contains("exiting now without finishing the drain")),
        "{rest:#?}"
    );
}
