//! The hostile-guest suite: each way a guest can abuse the host, run beside a
//! well-behaved agent. Every test asserts that (a) the host stays up, (b) the
//! healthy agent handles every one of its events, (c) the hostile one is
//! refused, throttled, stopped or quarantined as specified, and (d) dead
//! letters carry the reason. Traps, deadlines, memory bombs and stack
//! overflows are in `faults`; malformed modules in `modules`.

use std::time::{Duration, Instant};

use toka_tests::{Running, logs};

/// Work items the healthy agent must all handle.
const WORK: u64 = 50;

/// A probe `victim` with `victim` config lines, a healthy probe beside it,
/// and `WORK` items queued for the healthy one.
fn start(bus: &str, victim: &str) -> Running {
    logs();
    let running = Running::start(
        &format!(
            r#"
            [event_bus]
            drain_timeout = "500ms"
            {bus}

            [limits]
            timeout_ms = 500
            memory_mb = 32
            backoff = "1ms"
            backoff_max = "5ms"
            max_restarts = 3

            [[agents]]
            name = "victim"
            module = "probe.wasm"
            {victim}

            [[agents]]
            name = "healthy"
            module = "probe.wasm"
            subscribe = ["work.item"]
            "#
        ),
        &[
            "toka.>",
            "probe.result",
            "probe.seen",
            "probe.storm",
            "payments.>",
        ],
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_publish_payload_is_refused_as_a_value() {
    let run = start(
        "",
        r#"
        subscribe = ["victim.cmd"]
        publish = ["probe.init", "probe.result", "probe.seen", "big.>"]
        "#,
    );
    run.cx
        .publish("victim.cmd", "publish-size big.blob 10000000")
        .unwrap();
    run.cx
        .publish("victim.cmd", "publish-size big.blob 65536")
        .unwrap();
    run.cx.publish("victim.cmd", "count").unwrap();
    let results = run.rec.wait_kind("probe.result", 3).await;
    let report = run.stop().await;
    assert_eq!(results[0], "err:too-large:65536", "over the cap: refused");
    assert!(results[1].starts_with("ok:"), "at the cap: accepted");
    assert_eq!(results[2], "ok:3", "the same instance goes on");
    let victim = report.agent("victim").unwrap();
    assert_eq!((victim.faults, victim.refused), (0, 1));
    healthy_handled_everything(&report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_storm_on_its_own_subscription_is_throttled() {
    // Every event the victim handles (its own storm events, and a tick every
    // 5 ms that keeps re-igniting it) makes it publish five more: a loop only
    // the rate limit holds back.
    let (rate, burst) = (200u64, 50u64);
    let run = start(
        "scheduler_tick_ms = 5",
        &format!(
            r#"
            subscribe = ["victim.cmd", "probe.storm", "toka.tick"]
            publish = ["probe.storm"]
            publish_rate = {rate}
            publish_burst = {burst}
            command = "storm 5"
            "#
        ),
    );
    let began = Instant::now();
    run.cx.publish("victim.cmd", "storm 10000").unwrap();
    // Wait until the storm has clearly outlived its burst.
    run.rec
        .wait_for("the storm to run past its burst", |evs| {
            evs.iter()
                .filter(|e| e.kind.as_str() == "probe.storm")
                .count() as u64
                > burst + 20
        })
        .await;
    let report = run.stop().await;
    let elapsed = began.elapsed();
    // Storm events are the only kind the victim may publish.
    let stormed = report.agent("victim").unwrap().published;
    let allowed = burst + (rate as f64 * elapsed.as_secs_f64()).ceil() as u64 + 1;
    assert!(
        stormed <= allowed,
        "{stormed} storm events in {elapsed:?} exceed burst {burst} + rate {rate}/s"
    );
    let victim = report.agent("victim").unwrap();
    assert!(
        victim.refused >= 10_000 - burst,
        "the storm was refused: {victim:?}"
    );
    assert_eq!(victim.faults, 0, "throttling is not a fault");
    healthy_handled_everything(&report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdout_flood_is_capped_and_the_guest_goes_on() {
    let run = start(
        "",
        r#"
        subscribe = ["victim.cmd"]
        publish = ["probe.result"]
        timeout_ms = 5000
        stdout_bytes = 4096
        "#,
    );
    let began = Instant::now();
    run.cx
        .publish("victim.cmd", "print-flood 52428800")
        .unwrap();
    run.cx.publish("victim.cmd", "count").unwrap();
    let results = run.rec.wait_kind("probe.result", 2).await;
    let report = run.stop().await;
    assert_eq!(results, ["ok:52428800", "ok:2"]);
    let victim = report.agent("victim").unwrap();
    assert_eq!(
        (victim.output_logged, victim.output_discarded),
        (4096, 52_428_800 - 4096),
        "only the cap reached the log"
    );
    assert!(
        began.elapsed() < Duration::from_secs(30),
        "discarding is cheap"
    );
    healthy_handled_everything(&report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_agent_with_a_full_mailbox_drops_only_its_own_events() {
    let run = start(
        "",
        r#"
        subscribe = ["slow.job"]
        mailbox = 4
        command = "busy 20"
        "#,
    );
    for i in 0..40 {
        run.cx.publish("slow.job", i.to_string()).unwrap();
    }
    let rec = run.rec.clone();
    let report = run.stop().await;
    let victim = report.agent("victim").unwrap();
    assert!(victim.dropped > 0, "its mailbox overflowed: {victim:?}");
    assert_eq!(
        victim.handled + victim.dropped,
        40,
        "every event was handled or counted as dropped"
    );
    assert_eq!(victim.faults, 0, "slow is not faulty");
    assert_eq!(
        rec.payloads("toka.dead-letter"),
        Vec::<String>::new(),
        "drops are counted, not dead-lettered"
    );
    healthy_handled_everything(&report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kinds_outside_the_subscription_never_arrive() {
    let run = start(
        "",
        r#"
        subscribe = ["victim.cmd"]
        publish = ["probe.result", "probe.seen"]
        "#,
    );
    for kind in [
        "secret.payroll",
        "victim.cmdx",
        "victim.cmd.nested",
        "victimcmd",
    ] {
        run.cx.publish(kind, "should not arrive").unwrap();
    }
    run.cx.publish("victim.cmd", "count").unwrap();
    let results = run.rec.wait_kind("probe.result", 1).await;
    let rec = run.rec.clone();
    let report = run.stop().await;
    assert_eq!(results, ["ok:1"], "only the granted kind was handled");
    // Only the victim may publish `probe.seen`: its whole view of the bus.
    assert_eq!(rec.payloads("probe.seen"), ["victim.cmd|test|count"]);
    healthy_handled_everything(&report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbidden_publish_is_denied_and_system_kinds_are_unforgeable() {
    let run = start(
        "",
        r#"
        subscribe = ["victim.cmd"]
        publish = ["probe.init", "probe.result"]
        "#,
    );
    for cmd in [
        "publish payments.refund all",
        "publish toka.agent.quarantined {\"agent\":\"healthy\"}",
        "publish toka.dead-letter forged",
        "publish probe.result.sub x",
    ] {
        run.cx.publish("victim.cmd", cmd).unwrap();
    }
    let results = run.rec.wait_kind("probe.result", 4).await;
    let rec = run.rec.clone();
    let report = run.stop().await;
    assert_eq!(
        results,
        [
            "err:access-denied",
            "err:access-denied",
            "err:access-denied",
            "err:access-denied"
        ]
    );
    let forged: Vec<String> = rec
        .events()
        .iter()
        .filter(|e| &*e.source == "victim" && e.kind.as_str() != "probe.seen")
        .map(|e| e.kind.to_string())
        .collect();
    assert_eq!(
        forged, ["probe.result"; 4],
        "nothing but its granted kind left the victim"
    );
    assert!(rec.payloads("toka.agent.quarantined").is_empty());
    assert!(rec.payloads("toka.dead-letter").is_empty());
    assert_eq!(
        report.agent("victim").unwrap().refused,
        8,
        "four forbidden kinds and four `probe.seen` it was not granted"
    );
    healthy_handled_everything(&report);
}
