//! One test per guest; `foreach_guest!` fails the build if a guest has none.

use toka_runtime::Runtime;
use toka_tests::{Recorder, config, logs, with_recorder};

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
    let (rt, rec) = with_recorder(
        r#"
        [event_bus]
        scheduler_tick_ms = 5
        [[agents]]
        name = "Counter"
        subscribe = ["toka.tick"]
        publish = ["counter.value"]
        step = 2
        "#,
        &["counter.value"],
    );
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
    let (rt, rec) = with_recorder(
        r#"
        [[agents]]
        name = "Milestone"
        subscribe = ["counter.value"]
        publish = ["counter.milestone"]
        every_n = 5
        "#,
        &["counter.milestone"],
    );
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
    let (rt, rec) = with_recorder(
        r#"
        [[agents]]
        name = "probe"
        subscribe = ["probe.cmd"]
        publish = ["probe.result"]
        "#,
        &["probe.result"],
    );
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy() {
    // Built against the frozen `toka:runtime@0.1.0` contract; this host
    // serves 0.1.1 and must still link and run it.
    logs();
    let mut rt = Runtime::new(config(
        r#"
        [[agents]]
        name = "old"
        module = "legacy.wasm"
        subscribe = ["ping"]
        publish = ["legacy.echo"]
        "#,
    ))
    .unwrap();
    assert!(rt.plan().failed.is_empty(), "{:?}", rt.plan().failed);
    let rec = Recorder::new(&["legacy.echo"]);
    rt.register("recorder", rec.clone()).unwrap();
    let cx = rt.injector("test");
    cx.publish("ping", "hello").unwrap();
    rt.run_until(async {}).await.unwrap();
    assert_eq!(rec.payloads("legacy.echo"), ["hello"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capable() {
    // A guest importing the capability interfaces loads, and without grants
    // every capability call is a denial value (the `capabilities` tests
    // cover granted use).
    logs();
    let mut rt = Runtime::new(config(
        r#"
        [[agents]]
        name = "capable"
        subscribe = ["c.cmd"]
        publish = ["capable.result"]
        "#,
    ))
    .unwrap();
    let rec = Recorder::new(&["capable.result"]);
    rt.register("recorder", rec.clone()).unwrap();
    let cx = rt.injector("test");
    for cmd in ["secret a/b", "vault-list -", "hash pw"] {
        cx.publish("c.cmd", cmd).unwrap();
    }
    rt.run_until(async {}).await.unwrap();
    assert_eq!(rec.payloads("capable.result"), ["err:access-denied"; 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink() {
    // The bench guest handles every event and publishes nothing; its live
    // counters (`Runtime::agent_stats`) follow along.
    logs();
    let rt = Runtime::new(config(
        r#"
        [[agents]]
        name = "sink"
        subscribe = ["bench.>"]
        "#,
    ))
    .unwrap();
    let stats = rt.agent_stats("sink").unwrap();
    assert!(rt.agent_stats("nobody").is_none());
    let cx = rt.injector("test");
    for size in 0..100 {
        cx.publish("bench.event", vec![0x5a; size]).unwrap();
    }
    let report = rt.run_until(async {}).await.unwrap();
    let sink = report.agent("sink").unwrap();
    assert_eq!(
        (sink.handled, sink.errors, sink.faults, sink.published),
        (100, 0, 0, 0)
    );
    assert_eq!(
        (stats.handled(), stats.starts(), stats.faults()),
        (100, 1, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_client() {
    // The `wasi:http` guest loads without a grant, and its request is a
    // denial value (the `http` tests cover granted use). 5 s per call, not
    // the default 1 s: the suite shares two cores with module compiles and
    // the `s3` tests' moto server, and a starved first call must not fault.
    logs();
    let mut rt = Runtime::new(config(
        r#"
        [[agents]]
        name = "http_client"
        subscribe = ["h.cmd"]
        publish = ["http.result"]
        timeout_ms = 5000
        "#,
    ))
    .unwrap();
    let rec = Recorder::new(&["http.result"]);
    rt.register("recorder", rec.clone()).unwrap();
    rt.injector("test")
        .publish("h.cmd", "get https example.com /")
        .unwrap();
    rt.run_until(async {}).await.unwrap();
    assert_eq!(rec.payloads("http.result"), ["err:HttpRequestDenied"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counter_durable() {
    // The count lives in the agent's bucket (the `kv` tests restart it).
    logs();
    let dir = tempfile::tempdir().unwrap();
    let mut rt = Runtime::new(crate::kv::config(
        dir.path(),
        r#"
        [[agents]]
        name = "Counter"
        module = "counter_durable.wasm"
        subscribe = ["counter.inc"]
        publish = ["counter.value"]
        kv = true
        step = 5
        "#,
    ))
    .unwrap();
    let rec = Recorder::new(&["counter.value"]);
    rt.register("recorder", rec.clone()).unwrap();
    let cx = rt.injector("test");
    for _ in 0..3 {
        cx.publish("counter.inc", "").unwrap();
    }
    rt.run_until(async {}).await.unwrap();
    assert_eq!(rec.payloads("counter.value"), ["5", "10", "15"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_bench() {
    // The bench guest's durable set and get of its own bucket.
    logs();
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::new(crate::kv::config(
        dir.path(),
        r#"
        [[agents]]
        name = "kvb"
        module = "kv_bench.wasm"
        subscribe = ["kv.>"]
        kv = true
        "#,
    ))
    .unwrap();
    let cx = rt.injector("test");
    cx.publish("kv.set", vec![7u8; 64]).unwrap();
    cx.publish("kv.get", "").unwrap();
    let report = rt.run_until(async {}).await.unwrap();
    let kvb = report.agent("kvb").unwrap();
    assert_eq!((kvb.handled, kvb.errors, kvb.faults), (2, 0, 0));
}

/// One GET over a fresh connection to a listener at `addr`: the reply as
/// text.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    String::from_utf8_lossy(&buf).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_hello() {
    logs();
    let rt = Runtime::new(config(
        r#"
        [http]
        listen = "127.0.0.1:0"
        [[http.routes]]
        path = "/..."
        agent = "Hello"
        [[agents]]
        name = "Hello"
        module = "http_hello.wasm"
        "#,
    ))
    .unwrap();
    let addr = rt.http_listener().expect("listener bound");
    let stop = rt.shutdown_handle();
    let run = tokio::spawn(rt.run_until(std::future::pending()));
    let reply = http_get(addr, "/anything").await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains("hello\n"), "{reply}");
    stop.shutdown();
    run.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_webhook() {
    logs();
    let (rt, rec) = with_recorder(
        r#"
        [http]
        listen = "127.0.0.1:0"
        [[http.routes]]
        path = "/publish"
        agent = "Hook"
        [[agents]]
        name = "Hook"
        module = "http_webhook.wasm"
        publish = ["webhook.received"]
        "#,
        &["webhook.>"],
    );
    let addr = rt.http_listener().expect("listener bound");
    let stop = rt.shutdown_handle();
    let run = tokio::spawn(rt.run_until(std::future::pending()));
    let reply = http_get(addr, "/publish").await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert_eq!(rec.wait_kind("webhook.received", 1).await, [""]);
    stop.shutdown();
    run.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_probe() {
    // A `.transfer` event moves one unit under a key of its own; a refused
    // one (the second, past the balance) fails the event, not the instance.
    logs();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.redb");
    toka_ledger::Ledger::mint(
        &toka_ledger::Embedded::open(&path).unwrap(),
        "k",
        "usd",
        "a",
        1,
    )
    .unwrap();
    let rt = Runtime::new(config(&format!(
        r#"
        [ledger]
        path = {path:?}

        [[agents]]
        name = "lp"
        module = "ledger_probe.wasm"
        subscribe = ["lp.>"]
        asset = "usd"
        from = "a"
        to = "b"
        ledger_debit = ["a"]
        ledger_credit = ["b"]
        "#
    )))
    .unwrap();
    let cx = rt.injector("test");
    cx.publish("lp.transfer", "").unwrap();
    cx.publish("lp.transfer", "").unwrap();
    let report = rt.run_until(async {}).await.unwrap();
    let lp = report.agent("lp").unwrap();
    assert_eq!((lp.handled, lp.errors, lp.faults), (2, 1, 0), "{lp:?}");
    let ledger = toka_ledger::Embedded::open(&path).unwrap();
    assert_eq!(
        toka_ledger::Ledger::account(&ledger, "usd", "b")
            .unwrap()
            .balance,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn driver_s3() {
    // Without `allowed_hosts` the driver's request is refused by the guard,
    // and the client gets the typed `unreachable` answer (the `s3` tests run
    // it against a real server).
    logs();
    let mut rt = Runtime::new(config(
        r#"
        [[agents]]
        name = "s3"
        module = "driver_s3.wasm"
        serve = ["s3.>"]
        endpoint = "http://127.0.0.1:9"
        bucket = "b"
        path_style = true
        access_key_id = "AKIDEXAMPLE"
        secret_access_key = "wJalrXUtnFEMI"

        [[agents]]
        name = "app"
        module = "probe.wasm"
        subscribe = ["app.cmd"]
        publish = ["probe.result"]
        request = ["s3.>"]
        "#,
    ))
    .unwrap();
    let rec = Recorder::new(&["probe.result"]);
    rt.register("recorder", rec.clone()).unwrap();
    rt.injector("test")
        .publish("app.cmd", r#"request s3.get {"key":"k"}"#)
        .unwrap();
    rt.run_until(async {}).await.unwrap();
    let out = rec.payloads("probe.result");
    assert_eq!(out.len(), 1, "{out:?}");
    assert!(
        out[0].starts_with(r#"err:remote:{"code":"HttpRequestDenied","error":"unreachable""#),
        "{out:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indexer() {
    logs();
    // Its own `every` ticks scan an empty granted directory.
    let dir = tempfile::tempdir().unwrap();
    let run = toka_tests::Running::start(
        &format!(
            r#"
            [[agents]]
            name = "IndexerAgent"
            module = "indexer.wasm"
            every = "10ms"
            publish = ["index.>"]
            dirs = [{{ host = "{}", guest = "/content" }}]
            scan_path = "/content"
            "#,
            dir.path().display()
        ),
        &["index.>"],
    );
    let done = run.rec.wait_kind("index.done", 2).await;
    run.stop().await;
    let first: serde_json::Value = serde_json::from_str(&done[0]).unwrap();
    assert_eq!(first["count"], 0, "{first}");
    assert_eq!(first["files"], serde_json::json!([]));
    assert_eq!(first["scan"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduler() {
    logs();
    // No driver serves `s3.put`: with no retries, the first failure is reported.
    let run = toka_tests::Running::start(
        r#"
        [[agents]]
        name = "SchedulerAgent"
        module = "scheduler.wasm"
        subscribe = ["index.done"]
        publish = ["scheduler.job.>"]
        request = ["s3.put"]
        every = "10ms"
        retries = 0
        "#,
        &["scheduler.job.>"],
    );
    run.cx.publish("index.done", r#"{"files":[]}"#).unwrap();
    let failed = run.rec.wait_kind("scheduler.job.failed", 1).await;
    run.stop().await;
    let failed: serde_json::Value = serde_json::from_str(&failed[0]).unwrap();
    assert_eq!(failed["attempts"], 1, "{failed}");
    assert_eq!(failed["error"], "no-responders", "{failed}");
    assert_eq!(failed["key"], "index/latest.json", "{failed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_stripe() {
    // The service agent alone, without `allowed_hosts`: an API call is
    // refused by the guard (typed `unreachable`), and a webhook with a bad
    // signature is typed `bad-signature` (the `stripe` tests run it with
    // stripe-python's vectors, the route and a stand-in API).
    logs();
    let mut rt = Runtime::new(config(
        r#"
        [[agents]]
        name = "stripe"
        module = "provider_stripe.wasm"
        serve = ["stripe.>"]
        publish = ["stripe.>"]
        secret_key = "sk_test_guests"
        webhook_secret = "whsec_guests"
        timeout_ms = 10000

        [[agents]]
        name = "app"
        module = "probe.wasm"
        subscribe = ["app.cmd"]
        publish = ["probe.result"]
        request = ["stripe.>"]
        timeout_ms = 20000
        "#,
    ))
    .unwrap();
    let rec = Recorder::new(&["probe.result", "stripe.>"]);
    rt.register("recorder", rec.clone()).unwrap();
    let cx = rt.injector("test");
    cx.publish(
        "app.cmd",
        r#"request stripe.customers.create {"email":"a@b.c"}"#,
    )
    .unwrap();
    cx.publish(
        "app.cmd",
        "request stripe.webhook {\"signature\":\"t=1,v1=00\"}\n{\"id\":\"evt_1\",\"type\":\"x.y\"}",
    )
    .unwrap();
    rt.run_until(async {}).await.unwrap();
    let out = rec.payloads("probe.result");
    assert_eq!(out.len(), 2, "{out:?}");
    let json = |text: &str| -> serde_json::Value {
        let error = text
            .strip_prefix("err:remote:")
            .unwrap_or_else(|| panic!("{out:?}"));
        serde_json::from_str(error).unwrap_or_else(|e| panic!("{e}: {out:?}"))
    };
    let api = json(&out[0]);
    assert_eq!(
        (&api["error"], &api["code"]),
        (&"unreachable".into(), &"HttpRequestDenied".into()),
        "{api}"
    );
    assert!(!out[0].contains("sk_test_guests"), "{out:?}");
    let hook = json(&out[1]);
    assert_eq!(hook["error"], "bad-signature", "{hook}");
    assert!(rec.payloads("stripe.x.y").is_empty());
}
