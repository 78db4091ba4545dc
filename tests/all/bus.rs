//! Routing, grants, ordering, ticks, init config, native agents and drain.

use toka_runtime::Runtime;
use toka_tests::{Recorder, config, logs, with_recorder};

/// Run `rt` in the background; returns a handle to stop it and the join.
fn start(
    rt: Runtime,
) -> (
    toka_runtime::ShutdownHandle,
    tokio::task::JoinHandle<toka_runtime::Report>,
) {
    let stop = rt.shutdown_handle();
    let run = tokio::spawn(async move { rt.run_until(std::future::pending()).await.unwrap() });
    (stop, run)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_filters_what_an_agent_sees() {
    logs();
    let (rt, rec) = with_recorder(
        r#"
        [[agents]]
        name = "probe"
        subscribe = ["orders.*"]
        publish = ["probe.>"]
        "#,
        &["probe.seen"],
    );
    let cx = rt.injector("test");
    for kind in [
        "payments.done",
        "orders.created",
        "orders.eu.created",
        "orders",
        "orders.paid",
    ] {
        cx.publish(kind, kind.as_bytes().to_vec()).unwrap();
    }
    let (stop, run) = start(rt);
    let seen = rec.wait_kind("probe.seen", 2).await;
    stop.shutdown();
    run.await.unwrap();
    assert_eq!(
        seen,
        vec![
            "orders.created|test|orders.created",
            "orders.paid|test|orders.paid"
        ],
        "only kinds matching orders.* reach the agent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_outside_grant_is_an_error_value_and_agent_goes_on() {
    logs();
    let (rt, rec) = with_recorder(
        r#"
        [[agents]]
        name = "probe"
        subscribe = ["probe.cmd"]
        publish = ["probe.>", "*"]
        [[agents]]
        name = "narrow"
        module = "probe.wasm"
        subscribe = ["narrow.cmd"]
        publish = ["probe.result"]
        "#,
        &["probe.result", "orders.>"],
    );
    let cx = rt.injector("test");
    cx.publish("narrow.cmd", "publish orders.created x")
        .unwrap();
    cx.publish("narrow.cmd", "publish probe.seen x").unwrap();
    cx.publish("probe.cmd", "publish toka.tick x").unwrap();
    cx.publish("probe.cmd", "publish toka.agent.started x")
        .unwrap();
    cx.publish("probe.cmd", "publish bad..kind x").unwrap();
    cx.publish("probe.cmd", "publish orders.created fine")
        .unwrap();
    let (stop, run) = start(rt);
    let results = rec.wait_kind("probe.result", 6).await;
    stop.shutdown();
    let report = run.await.unwrap();
    let mut narrow: Vec<&str> = results
        .iter()
        .map(String::as_str)
        .filter(|r| r.starts_with("err"))
        .collect();
    narrow.sort();
    assert_eq!(
        narrow,
        vec![
            "err:access-denied",
            "err:access-denied",
            "err:access-denied",
            "err:access-denied",
            "err:invalid:kind `bad..kind` has an empty segment",
        ],
        "outside the grant, and toka.* even under a `*` grant, are denied as values"
    );
    assert_eq!(
        rec.payloads("orders.created"),
        vec!["fine"],
        "the granted publish went through"
    );
    assert_eq!(
        report.agent("probe").unwrap().faults,
        0,
        "a denial never traps the agent"
    );
    assert_eq!(report.agent("narrow").unwrap().faults, 0);
    // Two denied commands, plus its own `probe.init` and two `probe.seen`
    // publishes, all outside its one-kind grant.
    assert_eq!(report.agent("narrow").unwrap().refused, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_agent_sees_events_in_publish_order() {
    logs();
    let (rt, rec) = with_recorder(
        r#"
        [[agents]]
        name = "a"
        module = "probe.wasm"
        subscribe = ["seq.n"]
        publish = ["probe.seen"]
        publish_rate = 100000
        publish_burst = 100000
        [[agents]]
        name = "b"
        module = "probe.wasm"
        subscribe = ["seq.n"]
        publish = ["probe.seen"]
        publish_rate = 100000
        publish_burst = 100000
        "#,
        &["probe.seen"],
    );
    let cx = rt.injector("test");
    let (stop, run) = start(rt);
    const N: usize = 500;
    for i in 0..N {
        cx.publish("seq.n", i.to_string()).unwrap();
    }
    rec.wait_kind("probe.seen", 2 * N).await;
    stop.shutdown();
    run.await.unwrap();
    for agent in ["a", "b"] {
        let seq: Vec<usize> = rec
            .events()
            .iter()
            .filter(|e| &*e.source == agent)
            .map(|e| {
                let text = String::from_utf8_lossy(&e.payload).into_owned();
                text.rsplit('|').next().unwrap().parse().unwrap()
            })
            .collect();
        assert_eq!(
            seq,
            (0..N).collect::<Vec<_>>(),
            "agent {agent} saw events out of order"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticks_arrive_globally_and_on_an_agents_own_period() {
    logs();
    let (rt, rec) = with_recorder(
        r#"
        [event_bus]
        scheduler_tick_ms = 10
        [[agents]]
        name = "global"
        module = "probe.wasm"
        subscribe = ["toka.tick"]
        publish = ["probe.seen"]
        [[agents]]
        name = "own"
        module = "probe.wasm"
        subscribe = ["toka.tick"]
        publish = ["probe.seen"]
        every = "1h"
        "#,
        &["probe.seen", "toka.tick"],
    );
    let (stop, run) = start(rt);
    rec.wait_for("3 ticks handled by `global`", |evs| {
        evs.iter()
            .filter(|e| &*e.source == "global" && e.kind.as_str() == "probe.seen")
            .count()
            >= 3
    })
    .await;
    stop.shutdown();
    run.await.unwrap();
    let ticks: Vec<u64> = rec
        .events()
        .iter()
        .filter(|e| e.kind.as_str() == "toka.tick")
        .map(|e| u64::from_le_bytes(e.payload[..8].try_into().unwrap()))
        .collect();
    assert!(ticks.len() >= 3);
    assert_eq!(ticks[..3], [1, 2, 3], "tick payload is its sequence number");
    assert!(
        !rec.events().iter().any(|e| &*e.source == "own"),
        "an agent with its own (1h) period gets no global ticks"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_period_ticks_reach_only_that_agent() {
    logs();
    let (rt, rec) = with_recorder(
        r#"
        [event_bus]
        scheduler_tick_ms = 3600000
        [[agents]]
        name = "fast"
        module = "probe.wasm"
        publish = ["probe.seen"]
        every = "10ms"
        "#,
        &["probe.seen", "toka.tick"],
    );
    let (stop, run) = start(rt);
    let seen = rec.wait_kind("probe.seen", 3).await;
    stop.shutdown();
    run.await.unwrap();
    assert!(seen.iter().all(|s| s.starts_with("toka.tick|toka|")));
    assert!(
        rec.payloads("toka.tick").is_empty(),
        "per-agent ticks are not broadcast"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_receives_the_agents_free_form_keys() {
    logs();
    let (rt, rec) = with_recorder(
        r#"
        [[agents]]
        name = "probe"
        publish = ["probe.init"]
        greeting = "hello ${TOKA_TEST_UNSET_VAR:-world}"
        answer = 42
        enabled = true
        ports = [1, 2]
        timeout_ms = 900
        "#,
        &["probe.init"],
    );
    let (stop, run) = start(rt);
    let init = rec.wait_kind("probe.init", 1).await;
    stop.shutdown();
    run.await.unwrap();
    assert_eq!(
        init[0], "greeting=hello world\nanswer=42\nenabled=true\nports=[1, 2]\n",
        "free-form keys in file order, runtime keys (name, publish, limits) left out"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_and_wasm_agents_talk_both_ways() {
    logs();
    struct Pinger;
    impl toka_core::Agent for Pinger {
        fn interest(&self) -> toka_core::PatternSet {
            toka_core::PatternSet::parse(&["probe.seen"]).unwrap()
        }
        async fn handle(
            &self,
            event: std::sync::Arc<toka_core::Event>,
            cx: &toka_core::Context,
        ) -> anyhow::Result<()> {
            cx.publish("native.pong", event.payload.clone())?;
            Ok(())
        }
    }
    let mut rt = Runtime::new(config(
        r#"
        [[agents]]
        name = "probe"
        subscribe = ["native.ping"]
        publish = ["probe.seen"]
        "#,
    ))
    .unwrap();
    rt.register("pinger", Pinger).unwrap();
    let rec = Recorder::new(&["native.pong"]);
    rt.register("recorder", rec.clone()).unwrap();
    assert!(rt.register("pinger", Pinger).is_err(), "names are unique");
    let cx = rt.injector("test");
    let (stop, run) = start(rt);
    cx.publish("native.ping", "hi").unwrap();
    let pongs = rec.wait_kind("native.pong", 1).await;
    stop.shutdown();
    let report = run.await.unwrap();
    assert_eq!(pongs, vec!["native.ping|test|hi"]);
    assert_eq!(report.agent("pinger").unwrap().handled, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_queued_events() {
    logs();
    let rt = Runtime::new(config(
        r#"
        [[agents]]
        name = "probe"
        subscribe = ["work.item"]
        "#,
    ))
    .unwrap();
    let cx = rt.injector("test");
    const N: u64 = 300;
    for i in 0..N {
        cx.publish("work.item", i.to_string()).unwrap();
    }
    // Shutdown is requested before the run even starts: everything queued
    // must still be handled before the run returns.
    let report = rt.run_until(async {}).await.unwrap();
    assert_eq!(report.abandoned, 0);
    assert_eq!(report.agent("probe").unwrap().handled, N);
    assert!(
        cx.publish("work.item", "late").is_err(),
        "intake is closed after shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_mailbox_drops_for_that_agent_only() {
    logs();
    let mut rt = Runtime::new(config(
        r#"
        [[agents]]
        name = "small"
        module = "probe.wasm"
        subscribe = ["load.x"]
        mailbox = 4
        "#,
    ))
    .unwrap();
    let rec = Recorder::new(&["load.x"]);
    rt.register("recorder", rec.clone()).unwrap();
    let cx = rt.injector("test");
    for i in 0..20 {
        cx.publish("load.x", i.to_string()).unwrap();
    }
    let report = rt.run_until(async {}).await.unwrap();
    let small = report.agent("small").unwrap();
    assert_eq!(small.handled, 4, "the first four were kept");
    assert_eq!(small.dropped, 16, "the rest were dropped and counted");
    assert_eq!(
        report.agent("recorder").unwrap().handled,
        20,
        "other subscribers lost nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_asked_before_run_still_stops() {
    logs();
    let rt = Runtime::new(config(
        r#"
        [[agents]]
        name = "Logger"
        subscribe = ["a.>"]
        "#,
    ))
    .unwrap();
    rt.shutdown_handle().shutdown();
    let report = tokio::time::timeout(toka_tests::WAIT, rt.run_until(std::future::pending()))
        .await
        .expect("a shutdown requested before `run` is not lost")
        .unwrap();
    assert_eq!(report.agent("Logger").unwrap().faults, 0);
}
