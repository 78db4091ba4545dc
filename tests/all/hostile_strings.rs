//! Hostile suite, second pass: guest-controlled strings (log records, error values, rejected kinds, init errors) are truncated, escaped and budgeted before they reach the log or the bus.
//!
//! Every test runs its hostile probe (named uniquely, so its records can be
//! picked out of the process-wide captured log) beside a healthy probe that
//! must handle all of its work.

use std::time::Instant;

use serde_json::Value;
use toka_core::RuntimeConfig;
use toka_core::text::{MARKER_MAX, MAX_ERROR, MAX_KIND, MAX_LOG_MESSAGE};
use toka_tests::{Running, captured_logs, logs};

/// Work items the healthy agent must all handle.
const WORK: u64 = 50;
/// What a log line adds around the guest text it carries (timestamp, level,
/// target, message, the agent and event fields): generous.
const LINE_OVERHEAD: usize = 512;
/// The longest a `toka.*` payload may be: the bounded guest text plus the
/// JSON around it.
const PAYLOAD_BOUND: usize = MAX_ERROR + MARKER_MAX + 512;
/// A timestamp like the text log's own, for forged lines.
const FORGED_TS: &str = "2026-01-01T00:00:00.000000Z";

/// A probe named `name` configured with `victim` (which may append more
/// `[[agents]]` tables), a healthy probe beside it, and `WORK` items queued
/// for the healthy one. Everything on the bus is recorded.
fn start(name: &str, victim: &str) -> Running {
    logs();
    let running = Running::start(
        &format!(
            r#"
            [event_bus]
            drain_timeout = "500ms"

            [limits]
            timeout_ms = 2000
            memory_mb = 32
            backoff = "1ms"
            backoff_max = "5ms"
            max_restarts = 3

            [[agents]]
            name = "{name}"
            module = "probe.wasm"
            {victim}

            [[agents]]
            name = "healthy"
            module = "probe.wasm"
            subscribe = ["work.item"]
            "#
        ),
        &[">"],
    );
    for i in 0..WORK {
        running.cx.publish("work.item", i.to_string()).unwrap();
    }
    running
}

fn healthy_handled_everything(report: &toka_runtime::Report) {
    let healthy = report.agent("healthy").unwrap();
    assert_eq!(
        (healthy.handled, healthy.faults, healthy.dropped),
        (WORK, 0, 0),
        "the healthy agent lost nothing"
    );
}

/// Captured log lines that mention `needle` (an agent name or a token).
fn lines_with(needle: &str) -> Vec<String> {
    captured_logs()
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_owned)
        .collect()
}

/// Every recorded `toka.*` payload is within [`PAYLOAD_BOUND`]; returns
/// those naming `agent`, parsed.
fn toka_payloads_of(rec: &toka_tests::Recorder, agent: &str) -> Vec<(String, Value)> {
    let mut mine = Vec::new();
    for e in rec.events() {
        if !e.kind.as_str().starts_with("toka.") || e.kind.as_str() == "toka.tick" {
            continue;
        }
        assert!(
            e.payload.len() <= PAYLOAD_BOUND,
            "{} payload of {} bytes",
            e.kind,
            e.payload.len()
        );
        if let Ok(v) = serde_json::from_slice::<Value>(&e.payload)
            && v["agent"] == agent
        {
            mine.push((e.kind.to_string(), v));
        }
    }
    mine
}

/// The process's peak resident set (`VmHWM`), in KiB.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Bound on peak RSS growth during one flood: far below what copying the
/// flood would cost, generous for tests running beside it.
const RSS_GROWTH_KIB: u64 = 384 * 1024;

/// `log-flood n size` from agent `name` with a budget of `records`/s and
/// `bytes`/s: the log gets no more than the budget over the run, the rest is
/// counted as dropped, and nothing faults.
async fn log_flood(name: &str, n: u64, size: u64, records: u64, bytes: u64) {
    let rss_before = peak_rss_kib();
    let began = Instant::now();
    let run = start(
        name,
        &format!(
            r#"
            subscribe = ["flood.cmd"]
            publish = ["probe.result"]
            memory_mb = 64
            timeout_ms = 10000
            log_records_per_sec = {records}
            log_bytes_per_sec = {bytes}
            "#
        ),
    );
    run.cx
        .publish("flood.cmd", format!("log-flood {n} {size}"))
        .unwrap();
    run.cx.publish("flood.cmd", "count").unwrap();
    let results = run.rec.wait_kind("probe.result", 2).await;
    let report = run.stop().await;
    let secs = began.elapsed().as_secs_f64();
    assert_eq!(results, [format!("ok:{n}"), "ok:2".to_string()]);

    let victim = report.agent(name).unwrap();
    assert_eq!(
        (victim.faults, victim.starts),
        (0, 1),
        "flooding is not a fault"
    );
    let allowed_records = records + (records as f64 * secs).ceil() as u64;
    let allowed_bytes = bytes + (bytes as f64 * secs).ceil() as u64;
    assert!(
        victim.log_records <= allowed_records && victim.log_bytes <= allowed_bytes,
        "{victim:?} over {records} records/s and {bytes} B/s for {secs:.2} s"
    );
    assert_eq!(
        victim.log_records + victim.log_records_dropped,
        n,
        "every record was logged or counted as dropped"
    );
    assert!(victim.log_records_dropped > 0, "{victim:?}");
    assert_eq!(
        victim.log_bytes_dropped,
        victim.log_records_dropped * size,
        "dropped records are counted at the size the guest sent"
    );

    // What actually reached the log.
    let guest_lines: Vec<String> = lines_with(name)
        .into_iter()
        .filter(|l| l.contains("toka::guest"))
        .collect();
    let logged: usize = guest_lines.iter().map(String::len).sum();
    assert!(
        guest_lines.len() as u64 <= allowed_records,
        "{} guest records logged, {allowed_records} allowed",
        guest_lines.len()
    );
    assert!(
        logged as u64 <= allowed_bytes + guest_lines.len() as u64 * LINE_OVERHEAD as u64,
        "{logged} bytes of guest records in the log, budget {allowed_bytes}"
    );
    for l in &guest_lines {
        assert!(
            l.len() <= MAX_LOG_MESSAGE + MARKER_MAX + LINE_OVERHEAD,
            "a line of {} bytes",
            l.len()
        );
    }
    let warned = lines_with(name)
        .iter()
        .filter(|l| l.contains("guest log budget exhausted"))
        .count();
    assert_eq!(warned, 1, "one warning per instance, not one per record");

    let growth = peak_rss_kib().saturating_sub(rss_before);
    assert!(growth <= RSS_GROWTH_KIB, "peak RSS grew by {growth} KiB");
    healthy_handled_everything(&report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_flood_of_small_records_is_held_to_the_record_budget() {
    log_flood("flood-records", 20_000, 10, 50, 1 << 20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_flood_of_large_records_is_held_to_the_byte_budget() {
    log_flood("flood-bytes", 20_000, 1000, 10_000, 16 * 1024).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_flood_of_huge_records_is_cut_and_budgeted() {
    // 100 KB messages: each cut to 8 KiB (and marked), two fit the budget.
    log_flood("flood-huge", 2_000, 100_000, 1000, 20 * 1024).await;
    let marked = lines_with("flood-huge")
        .iter()
        .filter(|l| l.contains(&format!("…[cut {} bytes]", 100_000 - MAX_LOG_MESSAGE)))
        .count();
    assert!(marked >= 1, "the cut records say how much was cut");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_log_budget_applies_without_configuration() {
    let began = Instant::now();
    let run = start(
        "flood-default",
        r#"
        subscribe = ["flood.cmd"]
        publish = ["probe.result"]
        timeout_ms = 10000
        "#,
    );
    run.cx.publish("flood.cmd", "log-flood 5000 10").unwrap();
    run.rec.wait_kind("probe.result", 1).await;
    let report = run.stop().await;
    let secs = began.elapsed().as_secs_f64();
    let victim = report.agent("flood-default").unwrap();
    // Defaults: 200 records/s, 64 KiB/s.
    assert!(
        victim.log_records <= 200 + (200.0 * secs).ceil() as u64,
        "{victim:?} in {secs:.2} s"
    );
    assert_eq!(victim.log_records + victim.log_records_dropped, 5000);
    assert_eq!(victim.faults, 0);
    healthy_handled_everything(&report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_handle_error_is_cut_in_the_log() {
    const SIZE: usize = 20_000_000;
    let run = start(
        "fail-huge",
        r#"
        subscribe = ["fail.cmd"]
        publish = ["probe.result"]
        memory_mb = 96
        "#,
    );
    run.cx
        .publish("fail.cmd", format!("fail-size {SIZE}"))
        .unwrap();
    run.cx.publish("fail.cmd", "fail-size 5000").unwrap();
    run.cx.publish("fail.cmd", "count").unwrap();
    let results = run.rec.wait_kind("probe.result", 1).await;
    let rec = run.rec.clone();
    let report = run.stop().await;
    assert_eq!(results, ["ok:3"], "an error value is not a fault");
    let victim = report.agent("fail-huge").unwrap();
    assert_eq!((victim.errors, victim.faults), (2, 0));

    let errors: Vec<String> = lines_with("fail-huge")
        .into_iter()
        .filter(|l| l.contains("handler returned an error"))
        .collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    for l in &errors {
        assert!(
            l.len() <= MAX_ERROR + MARKER_MAX + LINE_OVERHEAD,
            "a line of {} bytes",
            l.len()
        );
    }
    assert!(errors[0].contains(&format!("…[cut {} bytes]", SIZE - MAX_ERROR)));
    assert!(errors[1].contains(&format!("…[cut {} bytes]", 5000 - MAX_ERROR)));
    toka_payloads_of(&rec, "fail-huge");
    healthy_handled_everything(&report);
}

/// An agent whose `init` fails with a `size`-byte error: every log line and
/// `toka.*` payload about it is bounded and marked, and it is quarantined.
async fn huge_init_error(
    name: &str,
    size: usize,
    extra: &str,
) -> (toka_runtime::Report, Vec<Value>) {
    let run = start(
        name,
        &format!(
            r#"
            memory_mb = 128
            fail_init_size = "{size}"
            {extra}
            "#
        ),
    );
    run.rec
        .wait_for(&format!("{name} quarantined"), |evs| {
            evs.iter().any(|e| {
                e.kind.as_str() == "toka.agent.quarantined"
                    && e.payload_str().is_some_and(|p| p.contains(name))
            })
        })
        .await;
    let rec = run.rec.clone();
    let report = run.stop().await;
    let marker = format!("…[cut {} bytes]", size - MAX_ERROR);
    let mine = toka_payloads_of(&rec, name);
    let failed: Vec<Value> = mine
        .iter()
        .filter(|(k, _)| k == "toka.agent.failed")
        .map(|(_, v)| v.clone())
        .collect();
    assert_eq!(failed.len(), 4, "max_restarts = 3: four failed starts");
    for (kind, v) in &mine {
        let reason = v["reason"].as_str().unwrap_or_default();
        assert!(reason.contains(&marker), "{kind}: {reason:.200}");
        assert!(
            reason.starts_with("init returned an error: iii"),
            "{reason:.100}"
        );
    }
    let lines = lines_with(name);
    assert!(!lines.is_empty());
    for l in &lines {
        assert!(
            l.len() <= MAX_ERROR + MARKER_MAX + LINE_OVERHEAD,
            "a line of {} bytes",
            l.len()
        );
    }
    assert!(lines.iter().any(|l| l.contains(&marker)));
    let victim = report.agent(name).unwrap();
    assert_eq!((victim.faults, victim.quarantined), (4, true));
    healthy_handled_everything(&report);
    (report, failed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_init_error_is_cut_in_the_log_and_lifecycle_events() {
    huge_init_error("init-huge", 20_000_000, "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_subscriber_is_unharmed_by_a_huge_init_error() {
    // A probe watching `toka.agent.>` (with the default 32 MiB) beside an
    // agent whose init fails with 30 MB: before, each `toka.agent.failed`
    // carried the 30 MB and the watcher faulted on it.
    let rss_before = peak_rss_kib();
    let (report, _) = huge_init_error(
        "init-bomb",
        30_000_000,
        r#"
        [[agents]]
        name = "lifecycle-watcher"
        module = "probe.wasm"
        subscribe = ["toka.agent.>"]
        "#,
    )
    .await;
    let watcher = report.agent("lifecycle-watcher").unwrap();
    assert_eq!(
        (watcher.faults, watcher.starts, watcher.dropped),
        (0, 1, 0),
        "the watcher never noticed: {watcher:?}"
    );
    // Four `failed` and one `quarantined` for the bomb, `started` for the
    // healthy agent and itself (at least).
    assert!(watcher.handled >= 6, "{watcher:?}");
    assert_eq!(watcher.errors, 0);
    let growth = peak_rss_kib().saturating_sub(rss_before);
    assert!(growth <= RSS_GROWTH_KIB, "peak RSS grew by {growth} KiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_kind_is_cut_in_the_log_and_the_answer() {
    const SIZE: usize = 20_000_000;
    let run = start(
        "kind-huge",
        r#"
        subscribe = ["kind.cmd"]
        publish = ["probe.result"]
        memory_mb = 96
        "#,
    );
    run.cx
        .publish("kind.cmd", format!("publish-kind-size {SIZE}"))
        .unwrap();
    run.cx.publish("kind.cmd", "publish-kind-size 300").unwrap();
    run.cx.publish("kind.cmd", "count").unwrap();
    let results = run.rec.wait_kind("probe.result", 3).await;
    let rec = run.rec.clone();
    let report = run.stop().await;
    assert!(
        results[0].starts_with("err:invalid:kind `kkk")
            && results[0].contains(&format!("…[cut {} bytes]", SIZE - MAX_KIND))
            && results[0].len() < 1024,
        "{:.300}",
        results[0]
    );
    assert!(
        results[1].contains("…[cut 45 bytes]` is longer than 255 bytes"),
        "{}",
        results[1]
    );
    assert_eq!(results[2], "ok:3");
    let victim = report.agent("kind-huge").unwrap();
    assert_eq!(victim.faults, 0);
    let refused: Vec<String> = lines_with("kind-huge")
        .into_iter()
        .filter(|l| l.contains("publish refused"))
        .collect();
    assert!(refused.len() >= 2, "{refused:?}");
    for l in &refused {
        assert!(
            l.len() <= MAX_KIND + MAX_ERROR + 2 * MARKER_MAX + LINE_OVERHEAD,
            "a line of {} bytes",
            l.len()
        );
    }
    assert!(
        refused
            .iter()
            .any(|l| l.contains(&format!("…[cut {} bytes]", SIZE - MAX_KIND)))
    );
    toka_payloads_of(&rec, "kind-huge");
    healthy_handled_everything(&report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_text_cannot_forge_log_lines() {
    let run = start(
        "forger",
        &format!(
            r#"
            subscribe = ["forge.cmd"]
            publish = ["probe.result"]

            [[agents]]
            name = "forger-init"
            module = "probe.wasm"
            fail_init = "x\n{FORGED_TS}  INFO toka: forged-init\r\u001b[2K"
            "#
        ),
    );
    for cmd in [
        format!("log info hello\n{FORGED_TS}  INFO toka: forged-msg"),
        "log warn \u{1b}[2K\u{1b}[1Gforged-esc\rFORGED-CR".to_string(),
        format!("log-fields k\\nFORGED-KEY v\\n{FORGED_TS}  INFO toka: forged-value\" x=\"y"),
        format!("fail x\\n{FORGED_TS}  INFO toka: forged-fail\\rtail"),
        "count".to_string(),
    ] {
        run.cx.publish("forge.cmd", cmd).unwrap();
    }
    let results = run.rec.wait_kind("probe.result", 4).await;
    run.rec
        .wait_for("forger-init quarantined", |evs| {
            evs.iter().any(|e| {
                e.kind.as_str() == "toka.agent.quarantined"
                    && e.payload_str().is_some_and(|p| p.contains("forger-init"))
            })
        })
        .await;
    let report = run.stop().await;
    assert_eq!(results, ["ok", "ok", "ok", "ok:5"]);

    let all = captured_logs();
    for line in all.lines() {
        assert!(
            !line.starts_with(FORGED_TS) && !line.starts_with("FORGED-"),
            "a forged line reached the log: {line:?}"
        );
    }
    for token in [
        "forged-msg",
        "forged-esc",
        "FORGED-CR",
        "FORGED-KEY",
        "forged-value",
        "forged-fail",
        "forged-init",
    ] {
        let lines = lines_with(token);
        assert!(!lines.is_empty(), "{token} was logged");
        for l in &lines {
            assert!(
                l.contains("forger"),
                "{token} appears only inside the forger's own records: {l:?}"
            );
            assert!(
                !l.contains('\r') && !l.contains('\u{1b}'),
                "control characters are escaped: {l:?}"
            );
        }
    }
    let forger = lines_with("forger").join("\n");
    for escaped in [
        format!("hello\\n{FORGED_TS}"),
        "\\u{1b}[2K\\u{1b}[1Gforged-esc\\rFORGED-CR".to_string(),
        "k\\nFORGED-KEY=\"v\\n".to_string(),
        "forged-value\\\" x=\\\"y\"".to_string(),
        format!("x\\n{FORGED_TS}  INFO toka: forged-fail\\rtail"),
        // The fault reason is logged through `Debug`, which escapes the
        // escapes once more.
        format!("x\\\\n{FORGED_TS}  INFO toka: forged-init\\\\r\\\\u{{1b}}[2K"),
    ] {
        assert!(forger.contains(&escaped), "escaped as {escaped:?}");
    }
    healthy_handled_everything(&report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faulting_on_every_other_event_is_quarantined() {
    // Each fault follows a success, so the consecutive count never reached
    // max_restarts; the rate within restart_window does.
    let run = start(
        "flaky",
        r#"
        subscribe = ["flaky.cmd"]
        publish = ["probe.result"]
        "#,
    );
    for _ in 0..10 {
        run.cx.publish("flaky.cmd", "count").unwrap();
        run.cx.publish("flaky.cmd", "trap").unwrap();
    }
    run.rec
        .wait_for("flaky quarantined", |evs| {
            evs.iter().any(|e| {
                e.kind.as_str() == "toka.agent.quarantined"
                    && e.payload_str().is_some_and(|p| p.contains("\"flaky\""))
            })
        })
        .await;
    let rec = run.rec.clone();
    let report = run.stop().await;
    let victim = report.agent("flaky").unwrap();
    assert!(victim.quarantined, "{victim:?}");
    assert_eq!(
        victim.faults, 4,
        "max_restarts = 3: the fourth fault in the window"
    );
    assert_eq!(
        rec.payloads("probe.result"),
        ["ok:1"; 4],
        "each restarted instance succeeded before it faulted"
    );
    let mine = toka_payloads_of(&rec, "flaky");
    let dead: Vec<&Value> = mine
        .iter()
        .filter(|(k, _)| k == "toka.dead-letter")
        .map(|(_, v)| v)
        .collect();
    assert_eq!(dead.len(), 4);
    assert!(dead.iter().all(|d| d["reason"] == "trap"));
    let quarantined: Vec<&Value> = mine
        .iter()
        .filter(|(k, _)| k == "toka.agent.quarantined")
        .map(|(_, v)| v)
        .collect();
    assert_eq!(quarantined.len(), 1);
    assert_eq!(quarantined[0]["failures"], 4);
    healthy_handled_everything(&report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_kinds_are_reserved_in_any_case() {
    let run = start(
        "case-forger",
        r#"
        subscribe = ["case.cmd"]
        publish = ["*"]
        "#,
    );
    for cmd in [
        "publish TOKA.tick x",
        "publish Toka.x y",
        "publish tOkA.agent.failed {\"agent\":\"healthy\",\"reason\":\"forged\"}",
        "publish TOKA z",
        "publish case.fine ok",
    ] {
        run.cx.publish("case.cmd", cmd).unwrap();
    }
    let results = run.rec.wait_kind("probe.result", 5).await;
    let rec = run.rec.clone();
    let report = run.stop().await;
    assert_eq!(
        results[..4],
        ["err:access-denied"; 4],
        "case variants of `toka` are the runtime's"
    );
    assert!(results[4].starts_with("ok:"), "{}", results[4]);
    let forged: Vec<String> = rec
        .events()
        .iter()
        .filter(|e| {
            &*e.source == "case-forger"
                && e.kind.as_str()[..4.min(e.kind.as_str().len())].eq_ignore_ascii_case("toka")
        })
        .map(|e| e.kind.to_string())
        .collect();
    assert!(forged.is_empty(), "{forged:?}");
    assert_eq!(report.agent("case-forger").unwrap().faults, 0);
    healthy_handled_everything(&report);
}

#[test]
fn case_variants_of_toka_cannot_be_granted() {
    for grant in ["TOKA.x", "Toka.>", "tOkA.agent.failed", "TOKA"] {
        let toml = format!("[[agents]]\nname = \"a\"\npublish = [{grant:?}]\n");
        let err = RuntimeConfig::parse_str(
            &toml,
            std::path::Path::new("test.toml"),
            std::path::Path::new("."),
            &[],
        )
        .expect_err(grant);
        assert_eq!(err.key(), Some("agents[0].publish"), "{grant}: {err}");
    }
}
