//! Hostile suite, second pass: guests that wait inside host calls (sleep,
//! poll, block) are bounded by their deadline, never starve the others, and
//! never hold up shutdown.
//!
//! Epoch interruption cannot stop a guest parked in a host call; before the
//! fix a 1 s `timeout_ms` never fired on a sleeping guest, two sleepers on
//! two workers starved everyone, and shutdown waited for them forever.

use std::time::{Duration, Instant};

use toka_tests::{Running, logs};

/// Work items the healthy agent must all handle.
const WORK: u64 = 50;

/// `victims` probes (`victim0`, ...) subscribed to `victim.cmd`, a healthy
/// probe on `work.item`, and `bus`/`limits` lines for the config.
fn start(bus: &str, limits: &str, victims: usize) -> Running {
    logs();
    let victims: String = (0..victims)
        .map(|i| {
            format!(
                r#"
                [[agents]]
                name = "victim{i}"
                module = "probe.wasm"
                subscribe = ["victim.cmd"]
                publish = ["probe.seen"]
                "#
            )
        })
        .collect();
    Running::start(
        &format!(
            r#"
            [event_bus]
            {bus}

            [limits]
            memory_mb = 32
            backoff = "1ms"
            backoff_max = "5ms"
            max_restarts = 1000
            {limits}

            {victims}

            [[agents]]
            name = "healthy"
            module = "probe.wasm"
            subscribe = ["work.item"]
            publish = ["probe.seen"]
            timeout_ms = 1000
            "#
        ),
        &["toka.dead-letter", "probe.result", "probe.seen"],
    )
}

fn work(run: &Running) {
    for i in 0..WORK {
        run.cx.publish("work.item", i.to_string()).unwrap();
    }
}

/// Wait until the healthy agent has seen every work item.
async fn healthy_done(run: &Running) {
    run.rec
        .wait_for("the healthy agent to handle all its work", |evs| {
            evs.iter()
                .filter(|e| {
                    e.kind.as_str() == "probe.seen"
                        && e.source.as_ref() == "healthy"
                        && e.payload.starts_with(b"work.item|")
                })
                .count() as u64
                == WORK
        })
        .await;
}

fn healthy_handled_everything(report: &toka_runtime::Report) {
    let healthy = report.agent("healthy").unwrap();
    assert_eq!(
        (healthy.handled, healthy.faults, healthy.dropped),
        (WORK, 0, 0),
        "the healthy agent lost nothing"
    );
}

/// Peak resident memory of this test process, in KiB.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status")
}

/// Shared by every test of this binary (they run in one process): waiting
/// guests cost a thread each, not memory that grows with the wait.
const PEAK_RSS_BOUND_KIB: u64 = 3 << 20;

/// Each way a guest can wait in WASI: a 60 s wait under a 300 ms deadline.
const WAITS: [&str; 4] = ["sleep 60000", "poll 60000", "block 60000", "nap-loop 60000"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_wait_faults_at_the_deadline() {
    let run = start("", "timeout_ms = 300", WAITS.len());
    let began = Instant::now();
    // Every victim gets every command: each runs all four waits, one after
    // the other, each in a fresh instance after the fault before it.
    for wait in WAITS {
        run.cx.publish("victim.cmd", wait).unwrap();
    }
    work(&run);
    let letters = run
        .rec
        .wait_kind("toka.dead-letter", WAITS.len() * WAITS.len())
        .await;
    let elapsed = began.elapsed();
    healthy_done(&run).await;
    let report = run.stop().await;
    let mut in_host_call = 0;
    for letter in &letters {
        let letter: serde_json::Value = serde_json::from_str(letter).unwrap();
        assert_eq!(letter["reason"], "deadline", "{letter}");
        let message = letter["message"].as_str().unwrap();
        if message.contains("waited in a host call until its deadline") {
            in_host_call += 1;
        }
    }
    // One long sleep, poll or block is always cut inside the host call; the
    // 1 ms naps may be cut there or by the epoch between two naps.
    assert!(
        in_host_call >= 3 * WAITS.len(),
        "{in_host_call} of {} cut in the host call: {letters:#?}",
        letters.len()
    );
    // 16 waits of at most 300 ms, four victims in parallel with stand-ins:
    // far below a single one of the 60 s waits.
    assert!(
        elapsed < Duration::from_secs(15),
        "waits were cut at their deadline: {elapsed:?}"
    );
    for i in 0..WAITS.len() {
        let victim = report.agent(&format!("victim{i}")).unwrap();
        assert_eq!(victim.faults, WAITS.len() as u64, "{victim:?}");
        assert!(!victim.quarantined);
    }
    healthy_handled_everything(&report);
    assert!(peak_rss_kib() < PEAK_RSS_BOUND_KIB);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_guests_never_starve_the_others_on_one_worker() {
    // Two sleepers on the only worker, each with a 20 s deadline: without a
    // stand-in for the parked worker the healthy agent would wait for them.
    let run = start("workers = 1", "timeout_ms = 20000", 2);
    for _ in 0..3 {
        run.cx.publish("victim.cmd", "sleep 20000").unwrap();
    }
    let began = Instant::now();
    work(&run);
    healthy_done(&run).await;
    let took = began.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "the healthy agent ran beside two sleeping guests on one worker: {took:?}"
    );
    assert!(
        run.rec.payloads("toka.dead-letter").is_empty(),
        "the sleepers were still within their deadline"
    );
    // A second batch after the first: stand-ins keep serving.
    let more = Instant::now();
    for i in 0..WORK {
        run.cx.publish("work.item", format!("again {i}")).unwrap();
    }
    run.rec
        .wait_for("the second batch", |evs| {
            evs.iter()
                .filter(|e| e.kind.as_str() == "probe.seen" && e.source.as_ref() == "healthy")
                .count() as u64
                == 2 * WORK
        })
        .await;
    assert!(more.elapsed() < Duration::from_secs(10));
    // Do not wait out the sleepers: the drain deadline (default 5 s) ends
    // the run; each sleeper is then cut at its own deadline at most.
    let stop = Instant::now();
    let report = run.stop().await;
    assert!(
        stop.elapsed() < Duration::from_secs(5 + 20 + 2),
        "shutdown bounded by drain_timeout + timeout_ms + a tick: {:?}",
        stop.elapsed()
    );
    let healthy = report.agent("healthy").unwrap();
    assert_eq!((healthy.handled, healthy.faults), (2 * WORK, 0));
    assert!(peak_rss_kib() < PEAK_RSS_BOUND_KIB);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_is_bounded_whatever_guests_wait_for() {
    // Every variant at once, with events queued behind each wait, a 1 s
    // deadline and a 300 ms drain.
    let run = start(r#"drain_timeout = "300ms""#, "timeout_ms = 1000", 4);
    for wait in WAITS {
        for _ in 0..10 {
            run.cx.publish("victim.cmd", wait).unwrap();
        }
    }
    work(&run);
    healthy_done(&run).await;
    let stop = Instant::now();
    let report = tokio::time::timeout(Duration::from_secs(30), run.stop())
        .await
        .expect("shutdown finished");
    let took = stop.elapsed();
    // drain_timeout + the longest timeout_ms + one tick, plus scheduling slack.
    assert!(
        took < Duration::from_millis(300 + 1000 + 5 + 1500),
        "shutdown took {took:?}"
    );
    assert!(
        report.abandoned > 0,
        "queued waits were abandoned: {report:?}"
    );
    healthy_handled_everything(&report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_does_not_wait_for_a_whole_batch() {
    // 64 queued events of 150 ms each are one batch of almost 10 s; the
    // drain deadline is checked between them.
    let run = start(r#"drain_timeout = "200ms""#, "timeout_ms = 1000", 1);
    work(&run);
    healthy_done(&run).await;
    for _ in 0..64 {
        run.cx.publish("victim.cmd", "busy 150").unwrap();
    }
    run.rec
        .wait_for("the victim to be busy", |evs| {
            evs.iter()
                .any(|e| e.kind.as_str() == "probe.seen" && e.source.as_ref() == "victim0")
        })
        .await;
    let stop = Instant::now();
    let report = run.stop().await;
    let took = stop.elapsed();
    assert!(
        took < Duration::from_millis(200 + 150 + 5 + 1500),
        "shutdown stopped between two events of the batch: {took:?}"
    );
    let victim = report.agent("victim0").unwrap();
    assert!(victim.handled < 64, "the rest was abandoned: {victim:?}");
    assert!(report.abandoned >= 64 - victim.handled);
    healthy_handled_everything(&report);
}
