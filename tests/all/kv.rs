//! Durable key-value through real components: the `counter-durable` guest
//! keeps its count in its own bucket and continues from it after a fault
//! restart and after the runtime is dropped and built again; agents without
//! the grant (or asking for another agent's bucket) get `access-denied`.

use std::path::Path;

use toka_core::RuntimeConfig;
use toka_core::config::Declared;
use toka_runtime::Runtime;
use toka_tests::{GUESTS_DIR, Recorder, logs};

/// `toml` with `modules_dir` set to the guests and a `[kv]` store in `dir`,
/// parsed with the keys the `kv` capability owns (as the CLI loads it).
pub(crate) fn config(dir: &Path, toml: &str) -> RuntimeConfig {
    let text = format!(
        "modules_dir = {GUESTS_DIR:?}\n[kv]\npath = {:?}\n{toml}",
        dir.join("kv.redb")
    );
    RuntimeConfig::parse_declared(
        &text,
        Path::new("test.toml"),
        Path::new("."),
        &Declared {
            sections: &[toka_kv::config::SECTION],
            agent_keys: toka_kv::config::AGENT_KEYS,
        },
        &|_| None,
    )
    .unwrap_or_else(|e| panic!("test config: {e}"))
}

const COUNTER: &str = r#"
[limits]
backoff = "1ms"
backoff_max = "5ms"

[[agents]]
name = "Counter"
module = "counter_durable.wasm"
subscribe = ["counter.inc", "counter.fault"]
publish = ["counter.value", "counter.error"]
kv = true
"#;

/// Build a runtime from `config` with a recorder of the counter's output,
/// publish `events` (kinds) in order, wait for `values` counts, shut down.
async fn run(config: RuntimeConfig, events: &[&str], values: usize) -> (Vec<String>, Recorder) {
    let mut rt = Runtime::new(config).expect("runtime builds");
    assert!(rt.plan().failed.is_empty(), "{:?}", rt.plan().failed);
    let rec = Recorder::new(&["counter.value", "counter.error", "toka.dead-letter"]);
    rt.register("recorder", rec.clone()).unwrap();
    let cx = rt.injector("test");
    let stop = rt.shutdown_handle();
    let running = tokio::spawn(rt.run_until(std::future::pending()));
    for kind in events {
        cx.publish(kind, "").unwrap();
        if *kind == "counter.fault" {
            // The next event must reach the restarted instance, not be
            // queued behind the fault in the old one's turn.
            rec.wait_kind("toka.dead-letter", 1).await;
        }
    }
    let got = rec.wait_kind("counter.value", values).await;
    stop.shutdown();
    let report = running.await.unwrap().unwrap();
    let counter = report.agent("Counter").unwrap();
    let faults = events.iter().filter(|k| **k == "counter.fault").count() as u64;
    assert_eq!(counter.faults, faults, "{counter:?}");
    (got, rec)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_count_survives_a_fault_restart() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let events = [
        "counter.inc",
        "counter.inc",
        "counter.inc",
        "counter.fault",
        "counter.inc",
        "counter.inc",
    ];
    let (values, rec) = run(config(dir.path(), COUNTER), &events, 5).await;
    // A fresh instance (its memory lost with the fault) continues the count.
    assert_eq!(values, ["1", "2", "3", "4", "5"]);
    assert!(rec.payloads("counter.error").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_count_survives_a_process_restart() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let (first, _) = run(config(dir.path(), COUNTER), &["counter.inc"; 4], 4).await;
    assert_eq!(first, ["1", "2", "3", "4"]);
    // Everything dropped: the store is closed and opened again from disk.
    let (second, _) = run(config(dir.path(), COUNTER), &["counter.inc"; 3], 3).await;
    assert_eq!(second, ["5", "6", "7"]);
    let store = toka_kv::Store::open(&dir.path().join("kv.redb"), Default::default()).unwrap();
    let count = store.get("Counter", "count").unwrap().unwrap();
    assert_eq!(count.value, b"7");
    assert_eq!(count.version, 7, "one write per event");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn components_without_the_grant_are_denied() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let toml = r#"
    [[agents]]
    name = "Counter"
    module = "counter_durable.wasm"
    subscribe = ["counter.inc"]
    publish = ["counter.value", "counter.error"]
    kv = true

    [[agents]]
    name = "ungranted"
    module = "counter_durable.wasm"
    subscribe = ["counter.inc"]
    publish = ["counter.error"]

    [[agents]]
    name = "nosy"
    module = "counter_durable.wasm"
    subscribe = ["counter.inc"]
    publish = ["counter.error"]
    kv = true
    bucket = "Counter"

    [[agents]]
    name = "guesser"
    module = "counter_durable.wasm"
    subscribe = ["counter.inc"]
    publish = ["counter.error"]
    kv = true
    bucket = "does-not-exist"
    "#;
    let mut rt = Runtime::new(config(dir.path(), toml)).unwrap();
    assert!(rt.plan().failed.is_empty(), "{:?}", rt.plan().failed);
    let rec = Recorder::new(&["counter.value", "counter.error"]);
    rt.register("recorder", rec.clone()).unwrap();
    let cx = rt.injector("test");
    cx.publish("counter.inc", "").unwrap();
    let report = rt.run_until(async {}).await.unwrap();
    assert_eq!(rec.payloads("counter.value"), ["1"]);
    let mut errors: Vec<(String, String)> = rec
        .events()
        .iter()
        .filter(|e| e.kind.as_str() == "counter.error")
        .map(|e| {
            (
                e.source.to_string(),
                String::from_utf8_lossy(&e.payload).into(),
            )
        })
        .collect();
    errors.sort();
    // Not granted, another agent's bucket, a bucket that does not exist:
    // one answer, and the components loaded and ran.
    assert_eq!(
        errors,
        [
            ("guesser".into(), "open: access-denied".into()),
            ("nosy".into(), "open: access-denied".into()),
            ("ungranted".into(), "open: access-denied".into()),
        ]
    );
    for name in ["ungranted", "nosy", "guesser"] {
        let a = report.agent(name).unwrap();
        assert_eq!((a.errors, a.faults), (1, 0), "{name}: a denial is a value");
    }
    // Nothing reached the counter's bucket but its own count.
    let store = toka_kv::Store::open(&dir.path().join("kv.redb"), Default::default()).unwrap();
    assert_eq!(store.get("Counter", "count").unwrap().unwrap().value, b"1");
}

#[test]
fn a_grant_without_a_store_fails_at_startup() {
    let text = format!(
        "modules_dir = {GUESTS_DIR:?}\n[[agents]]\nname = \"Counter\"\nmodule = \"counter_durable.wasm\"\nkv = true\n"
    );
    let cfg = RuntimeConfig::parse_declared(
        &text,
        Path::new("test.toml"),
        Path::new("."),
        &Declared {
            sections: &[toka_kv::config::SECTION],
            agent_keys: toka_kv::config::AGENT_KEYS,
        },
        &|_| None,
    )
    .unwrap();
    let err = Runtime::new(cfg).unwrap_err().to_string();
    assert!(err.contains("set `[kv] path`"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_waiting_for_commits_do_not_hold_up_the_others() {
    // One worker thread, eight agents whose every event waits for a commit:
    // each waits with a stand-in serving the rest, so all finish.
    logs();
    let dir = tempfile::tempdir().unwrap();
    let mut toml = String::from("[event_bus]\nworkers = 1\n");
    for i in 0..8 {
        toml.push_str(&format!(
            "[[agents]]\nname = \"c{i}\"\nmodule = \"counter_durable.wasm\"\nsubscribe = [\"counter.inc\"]\npublish = [\"counter.value\"]\nkv = true\n"
        ));
    }
    let rt = Runtime::new(config(dir.path(), &toml)).unwrap();
    let cx = rt.injector("test");
    for _ in 0..20 {
        cx.publish("counter.inc", "").unwrap();
    }
    let report = rt.run_until(async {}).await.unwrap();
    let store = toka_kv::Store::open(&dir.path().join("kv.redb"), Default::default()).unwrap();
    for i in 0..8 {
        let name = format!("c{i}");
        let a = report.agent(&name).unwrap();
        assert_eq!((a.handled, a.errors, a.faults), (20, 0, 0), "{name}");
        assert_eq!(store.get(&name, "count").unwrap().unwrap().value, b"20");
    }
    assert!(store.check().unwrap().is_empty());
}
