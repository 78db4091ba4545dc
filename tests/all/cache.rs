//! The precompiled module cache: a second load deserializes instead of
//! compiling; a changed module or other engine settings miss (and never load
//! another's artifact); a corrupt artifact is rebuilt and the agent still
//! runs. Every claim is proved by the cache's own counters, not by timing.

use std::path::{Path, PathBuf};

use toka_runtime::host::cache::{Cache, CacheStats};
use toka_runtime::host::engine::{Codegen, EngineOptions, MemoryLayout, new_engine};
use toka_runtime::host::{self, module};
use toka_runtime::{Runtime, RuntimeOptions};
use toka_tests::{LOGGER, PROBE, Recorder, config, logs};

/// Load `path` with a fresh engine (as a new process would have, `fuel` on or
/// off) through a fresh [`Cache`] on `dir`; what the cache counted.
fn load(fuel: bool, dir: &Path, path: &Path) -> CacheStats {
    let options = EngineOptions { fuel };
    let engine = new_engine(&options).unwrap();
    let cache = Cache::open(dir, Codegen::new(&options, MemoryLayout::OnDemand)).unwrap();
    let linker = host::new_linker(&engine).unwrap();
    module::load_cached(&engine, &linker, path, Some(&cache)).expect("the module loads");
    cache.stats()
}

fn stats(hits: u64, misses: u64, rebuilt: u64) -> CacheStats {
    CacheStats {
        hits,
        misses,
        rebuilt,
    }
}

fn artifacts(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(
        files
            .iter()
            .all(|f| f.extension().is_some_and(|e| e == "cwasm")),
        "only whole artifacts, no temporary files: {files:?}"
    );
    files
}

#[test]
fn second_load_comes_from_the_cache() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let probe = Path::new(PROBE);
    assert_eq!(load(false, dir.path(), probe), stats(0, 1, 0));
    assert_eq!(artifacts(dir.path()).len(), 1, "one artifact written");
    // A fresh engine with the same settings.
    assert_eq!(load(false, dir.path(), probe), stats(1, 0, 0));
    assert_eq!(artifacts(dir.path()).len(), 1);
}

#[test]
fn a_changed_module_is_recompiled() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let modules = tempfile::tempdir().unwrap();
    let agent = modules.path().join("agent.wasm");
    std::fs::copy(PROBE, &agent).unwrap();
    assert_eq!(load(false, dir.path(), &agent), stats(0, 1, 0));
    // Same file name, other contents.
    std::fs::copy(LOGGER, &agent).unwrap();
    assert_eq!(load(false, dir.path(), &agent), stats(0, 1, 0));
    assert_eq!(artifacts(dir.path()).len(), 2);
    assert_eq!(load(false, dir.path(), &agent), stats(1, 0, 0));
}

#[test]
fn other_engine_settings_never_load_the_others_artifact() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let probe = Path::new(PROBE);
    assert_eq!(load(false, dir.path(), probe), stats(0, 1, 0));
    // Fuel changes the generated code: a plain miss, not even a look at (and
    // a rebuild of) the fuel-less artifact.
    assert_eq!(load(true, dir.path(), probe), stats(0, 1, 0));
    assert_eq!(artifacts(dir.path()).len(), 2);
    assert_eq!(load(true, dir.path(), probe), stats(1, 0, 0));
    assert_eq!(load(false, dir.path(), probe), stats(1, 0, 0));
}

/// Run the probe with `cache_dir`; it must start and answer an event.
/// Returns how the runtime's cache served it.
async fn run_probe(cache_dir: &Path) -> CacheStats {
    let mut rt = Runtime::with_options(
        config(
            r#"
            [[agents]]
            name = "probe"
            subscribe = ["x.>"]
            publish = ["probe.>"]
            "#,
        ),
        RuntimeOptions {
            cache_dir: Some(cache_dir.to_path_buf()),
            ..Default::default()
        },
    )
    .unwrap();
    assert!(rt.plan().failed.is_empty());
    let rec = Recorder::new(&["probe.init", "probe.seen"]);
    rt.register("recorder", rec.clone()).unwrap();
    let cx = rt.injector("test");
    let stats = rt.cache_stats().expect("the runtime has a cache");
    let stop = rt.shutdown_handle();
    let run = tokio::spawn(rt.run_until(std::future::pending()));
    rec.wait_kind("probe.init", 1).await;
    cx.publish("x.y", "hello").unwrap();
    let seen = rec.wait_kind("probe.seen", 1).await;
    stop.shutdown();
    run.await.unwrap().unwrap();
    assert_eq!(seen, ["x.y|test|hello"]);
    stats
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_artifacts_are_rebuilt() {
    logs();
    type Corrupt = fn(&mut Vec<u8>);
    let corruptions: [(&str, Corrupt); 2] = [
        ("a flipped payload byte", |bytes| {
            let at = bytes.len() - bytes.len() / 3;
            bytes[at] ^= 0x40;
        }),
        ("truncation", |bytes| bytes.truncate(bytes.len() / 2)),
    ];
    for (what, corrupt) in corruptions {
        let dir = tempfile::tempdir().unwrap();
        load(false, dir.path(), Path::new(PROBE));
        let [artifact] = &artifacts(dir.path())[..] else {
            panic!("one artifact")
        };
        let mut bytes = std::fs::read(artifact).unwrap();
        corrupt(&mut bytes);
        std::fs::write(artifact, &bytes).unwrap();

        assert_eq!(run_probe(dir.path()).await, stats(0, 0, 1), "{what}");
        // Rewritten whole: the next run is a hit.
        assert_eq!(artifacts(dir.path()).len(), 1, "{what}");
        assert_eq!(run_probe(dir.path()).await, stats(1, 0, 0), "{what}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runtime_runs_a_guest_from_the_cache() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(run_probe(dir.path()).await, stats(0, 1, 0), "cold");
    assert_eq!(run_probe(dir.path()).await, stats(1, 0, 0), "warm");
}
