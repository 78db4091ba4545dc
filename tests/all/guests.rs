//! One test per guest; `foreach_guest!` fails the build if a guest has none.

use toka_runtime::Runtime;
use toka_tests::{Recorder, config, logs};

macro_rules! assert_test_exists {
    ($name:ident) => {
        #[expect(unused_imports, reason = "only checks the test exists")]
        use self::$name as _;
    };
}
toka_tests::foreach_guest!(assert_test_exists);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logger() {
    logs();
    let rt = Runtime::new(config(
        r#"
        [[agents]]
        name = "Logger"
        subscribe = ["a.>"]
        "#,
    ))
    .unwrap();
    let cx = rt.injector("test");
    cx.publish("a.b", "text").unwrap();
    cx.publish("a.c", vec![0xff, 0xfe]).unwrap();
    let report = rt.run_until(async {}).await.unwrap();
    let logger = report.agent("Logger").unwrap();
    // `Logger` resolved to logger.wasm by snake-casing the name.
    assert_eq!((logger.handled, logger.errors, logger.faults), (2, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counter() {
    logs();
    let mut rt = Runtime::new(config(
        r#"
        [event_bus]
        scheduler_tick_ms = 5
        [[agents]]
        name = "Counter"
        subscribe = ["toka.tick"]
        publish = ["counter.value"]
        step = 2
        "#,
    ))
    .unwrap();
    let rec = Recorder::new(&["counter.value"]);
    rt.register("recorder", rec.clone()).unwrap();
    let stop = rt.shutdown_handle();
    let run = tokio::spawn(rt.run_until(std::future::pending()));
    let values = rec.wait_kind("counter.value", 3).await;
    stop.shutdown();
    run.await.unwrap().unwrap();
    assert_eq!(values[..3], ["2", "4", "6"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn milestone() {
    logs();
    let mut rt = Runtime::new(config(
        r#"
        [[agents]]
        name = "Milestone"
        subscribe = ["counter.value"]
        publish = ["counter.milestone"]
        every_n = 5
        "#,
    ))
    .unwrap();
    let rec = Recorder::new(&["counter.milestone"]);
    rt.register("recorder", rec.clone()).unwrap();
    let cx = rt.injector("Counter");
    for n in 1..=10 {
        cx.publish("counter.value", n.to_string()).unwrap();
    }
    let report = rt.run_until(async {}).await.unwrap();
    assert_eq!(report.agent("Milestone").unwrap().handled, 10);
    assert_eq!(
        rec.payloads("counter.milestone"),
        vec!["Counter reached 5", "Counter reached 10"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe() {
    logs();
    let mut rt = Runtime::new(config(
        r#"
        [[agents]]
        name = "probe"
        subscribe = ["probe.cmd"]
        publish = ["probe.result"]
        "#,
    ))
    .unwrap();
    let rec = Recorder::new(&["probe.result"]);
    rt.register("recorder", rec.clone()).unwrap();
    let cx = rt.injector("test");
    for _ in 0..3 {
        cx.publish("probe.cmd", "count").unwrap();
    }
    rt.run_until(async {}).await.unwrap();
    assert_eq!(
        rec.payloads("probe.result"),
        vec!["ok:1", "ok:2", "ok:3"],
        "state persists across calls"
    );
}

#[test]
fn unlinkable() {
    logs();
    let rt = Runtime::new(config(
        r#"
        [[agents]]
        name = "needs-more"
        module = "unlinkable.wasm"

        [[agents]]
        name = "fine"
        module = "probe.wasm"
        "#,
    ))
    .unwrap();
    let plan = rt.plan();
    assert_eq!(plan.agents.len(), 1, "the other agent still starts");
    let err = plan.failed[0].1.to_string();
    assert!(err.contains("unlinkable.wasm"), "names the file: {err}");
    assert!(
        err.contains("toka:test-unlinkable/missing"),
        "names the missing import: {err}"
    );
}
