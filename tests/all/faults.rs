//! A misbehaving guest is stopped, dead-lettered and restarted (or
//! quarantined) while a well-behaved agent beside it handles every event.

use serde_json::Value;
use toka_runtime::Runtime;
use toka_tests::{Recorder, logs, with_recorder};

/// A probe `victim` taking `cmd` events, and a healthy probe beside it.
fn setup(extra: &str) -> (Runtime, Recorder) {
    let (rt, rec) = with_recorder(
        &format!(
            r#"
        [limits]
        timeout_ms = 200
        memory_mb = 32
        backoff = "1ms"
        backoff_max = "5ms"
        max_restarts = 3

        [[agents]]
        name = "victim"
        module = "probe.wasm"
        subscribe = ["victim.cmd"]
        publish = ["probe.result"]
        {extra}

        [[agents]]
        name = "healthy"
        module = "probe.wasm"
        subscribe = ["work.item"]
        "#
        ),
        &["toka.>", "probe.result"],
    );
    (rt, rec)
}

fn dead_letters(rec: &Recorder) -> Vec<Value> {
    rec.payloads("toka.dead-letter")
        .iter()
        .map(|p| serde_json::from_str(p).unwrap())
        .collect()
}

async fn fault_then_recover(command: &str, reason: &str) {
    logs();
    let (rt, rec) = setup("");
    let cx = rt.injector("test");
    let stop = rt.shutdown_handle();
    let run = tokio::spawn(rt.run_until(std::future::pending()));
    for i in 0..50 {
        cx.publish("work.item", i.to_string()).unwrap();
    }
    cx.publish("victim.cmd", command.to_owned()).unwrap();
    cx.publish("victim.cmd", "count").unwrap();
    let results = rec.wait_kind("probe.result", 1).await;
    stop.shutdown();
    let report = run.await.unwrap().unwrap();
    assert_eq!(
        results,
        vec!["ok:1"],
        "the restarted instance is fresh and handles the next event"
    );
    let dl = dead_letters(&rec);
    assert_eq!(dl.len(), 1, "{dl:?}");
    assert_eq!(dl[0]["agent"], "victim");
    assert_eq!(dl[0]["kind"], "victim.cmd");
    assert_eq!(dl[0]["reason"], reason, "{dl:?}");
    let victim = report.agent("victim").unwrap();
    assert_eq!(
        (victim.faults, victim.starts, victim.quarantined),
        (1, 2, false)
    );
    assert_eq!(
        report.agent("healthy").unwrap().handled,
        50,
        "the healthy agent lost nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trap_is_dead_lettered_and_restarted() {
    fault_then_recover("trap", "trap").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_is_dead_lettered_and_restarted() {
    fault_then_recover("panic", "trap").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infinite_loop_hits_the_deadline() {
    fault_then_recover("spin", "deadline").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_bomb_hits_the_memory_limit() {
    fault_then_recover("alloc 1024", "memory-limit").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runaway_recursion_overflows_the_stack() {
    fault_then_recover("recurse", "stack-overflow").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_faults_quarantine_the_agent() {
    logs();
    let (rt, rec) = setup("");
    let cx = rt.injector("test");
    let stop = rt.shutdown_handle();
    let run = tokio::spawn(rt.run_until(std::future::pending()));
    for _ in 0..10 {
        cx.publish("victim.cmd", "trap").unwrap();
    }
    let q = rec.wait_kind("toka.agent.quarantined", 1).await;
    for i in 0..20 {
        cx.publish("work.item", i.to_string()).unwrap();
    }
    cx.publish("victim.cmd", "count").unwrap();
    stop.shutdown();
    let report = run.await.unwrap().unwrap();
    let q: Value = serde_json::from_str(&q[0]).unwrap();
    assert_eq!(q["agent"], "victim");
    assert_eq!(
        q["failures"], 4,
        "max_restarts = 3: the fourth fault quarantines"
    );
    let victim = report.agent("victim").unwrap();
    assert!(victim.quarantined);
    assert_eq!(victim.faults, 4);
    assert!(
        rec.payloads("probe.result").is_empty(),
        "a quarantined agent handles nothing"
    );
    assert_eq!(report.agent("healthy").unwrap().handled, 20);
    assert_eq!(
        report.abandoned, 0,
        "discarded events do not hold up the drain"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_init_is_retried_then_quarantined() {
    logs();
    let (rt, rec) = setup(r#"fail_init = "no database configured""#);
    let stop = rt.shutdown_handle();
    let run = tokio::spawn(rt.run_until(std::future::pending()));
    let q = rec.wait_kind("toka.agent.quarantined", 1).await;
    stop.shutdown();
    run.await.unwrap().unwrap();
    assert!(q[0].contains("no database configured"), "{q:?}");
    assert_eq!(rec.payloads("toka.agent.failed").len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasi_grants_nothing_by_default() {
    logs();
    let (rt, rec) = setup("");
    let cx = rt.injector("test");
    for cmd in [
        "env",
        "read /etc/passwd",
        "read .",
        "connect 127.0.0.1:1",
        "print hello from the guest",
    ] {
        cx.publish("victim.cmd", cmd).unwrap();
    }
    rt.run_until(async {}).await.unwrap();
    let results = rec.payloads("probe.result");
    assert_eq!(results[0], "ok:0:0", "no env vars, no args");
    assert!(
        results[1].starts_with("err:"),
        "no filesystem: {}",
        results[1]
    );
    assert!(
        results[2].starts_with("err:"),
        "no filesystem: {}",
        results[2]
    );
    assert!(results[3].starts_with("err:"), "no sockets: {}", results[3]);
    assert_eq!(
        results[4], "ok",
        "stdout is accepted (and goes to the host log)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_bounds_access_traps() {
    fault_then_recover("oob", "trap").await;
}

/// A native agent with a bug: panics on `boom`, counts everything else.
#[derive(Debug, Default, Clone)]
struct Buggy(std::sync::Arc<std::sync::atomic::AtomicU64>);

impl toka_core::Agent for Buggy {
    fn interest(&self) -> toka_core::PatternSet {
        toka_core::PatternSet::parse(&["native.>"]).unwrap()
    }

    async fn handle(
        &self,
        event: std::sync::Arc<toka_core::Event>,
        _cx: &toka_core::Context,
    ) -> anyhow::Result<()> {
        if &event.payload[..] == b"boom" {
            panic!("native agent bug");
        }
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_native_agent_is_contained() {
    logs();
    let (mut rt, rec) = setup("");
    let buggy = Buggy::default();
    rt.register("buggy", buggy.clone()).unwrap();
    let cx = rt.injector("test");
    cx.publish("native.x", "1").unwrap();
    cx.publish("native.x", "boom").unwrap();
    cx.publish("native.x", "2").unwrap();
    for i in 0..10 {
        cx.publish("work.item", i.to_string()).unwrap();
    }
    let report = rt.run_until(async {}).await.unwrap();
    let dl = dead_letters(&rec);
    assert_eq!(dl.len(), 1, "{dl:?}");
    assert_eq!(
        (dl[0]["agent"].as_str(), dl[0]["reason"].as_str()),
        (Some("buggy"), Some("panic"))
    );
    assert_eq!(dl[0]["message"], "native agent bug");
    assert_eq!(
        buggy.0.load(std::sync::atomic::Ordering::Relaxed),
        2,
        "the agent went on after its panic"
    );
    assert_eq!(report.agent("healthy").unwrap().handled, 10);
}
