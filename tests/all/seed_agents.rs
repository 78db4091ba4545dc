//! The seed's agents: `IndexerAgent` (`guests/indexer`) over a fixture
//! directory granted read-only with `dirs`, and `SchedulerAgent`
//! (`guests/scheduler`) storing the latest index through the real S3 driver
//! against moto, retrying a driver that cannot reach its server.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde_json::Value;
use sha2::{Digest, Sha256};
use toka_core::Event;
use toka_tests::{Running, logs};

use crate::s3::{BUCKET, agents, moto, python};

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn json(event: &Event) -> Value {
    serde_json::from_slice(&event.payload)
        .unwrap_or_else(|e| panic!("{} is not JSON ({e}): {:?}", event.kind, event.payload))
}

/// The indexer, granted `content` read-only at `/content`.
fn indexer(content: &Path, trigger: &str) -> String {
    format!(
        r#"
        [[agents]]
        name = "IndexerAgent"
        module = "indexer.wasm"
        {trigger}
        publish = ["index.>"]
        dirs = [{{ host = "{}", guest = "/content" }}]
        timeout_ms = 10000
        max_payload_bytes = 1048576
        scan_path = "/content"
        "#,
        content.display()
    )
}

/// The events of `kind` recorded after the `after`-th `index.done`, up to
/// and including the next.
fn scan_events(events: &[Arc<Event>], after: usize) -> Vec<Arc<Event>> {
    let mut done = 0;
    let mut out = Vec::new();
    for event in events {
        if done == after && event.kind.as_str() != "index.scan" {
            out.push(event.clone());
        }
        if event.kind.as_str() == "index.done" {
            done += 1;
            if done > after {
                break;
            }
        }
    }
    out
}

/// `path -> (size, sha256)` of every `index.file` in `events`.
fn files(events: &[Arc<Event>]) -> BTreeMap<String, (u64, String)> {
    events
        .iter()
        .filter(|e| e.kind.as_str() == "index.file")
        .map(|e| {
            let v = json(e);
            (
                v["path"].as_str().unwrap().to_owned(),
                (
                    v["size"].as_u64().unwrap(),
                    v["sha256"].as_str().unwrap().to_owned(),
                ),
            )
        })
        .collect()
}

async fn scan(run: &Running, n: usize) -> Vec<Arc<Event>> {
    run.cx.publish("index.scan", "").unwrap();
    run.rec.wait_kind("index.done", n).await;
    scan_events(&run.rec.events(), n - 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indexer_reports_everything_then_only_what_changed() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let content = dir.path().join("content");
    std::fs::create_dir_all(content.join("sub/deeper")).unwrap();
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
    let initial: [(&str, &[u8]); 4] = [
        ("a.txt", b"alpha"),
        ("b.bin", &big),
        ("sub/c.txt", b"see"),
        ("sub/deeper/empty", b""),
    ];
    for (path, bytes) in initial {
        std::fs::write(content.join(path), bytes).unwrap();
    }
    std::fs::write(dir.path().join("outside.txt"), "not indexed").unwrap();
    std::os::unix::fs::symlink(dir.path().join("outside.txt"), content.join("link")).unwrap();

    let run = Running::start(
        &indexer(&content, r#"subscribe = ["index.scan"]"#),
        &["index.>"],
    );
    let first = scan(&run, 1).await;
    let expected: BTreeMap<String, (u64, String)> = initial
        .iter()
        .map(|(p, b)| (p.to_string(), (b.len() as u64, sha256(b))))
        .collect();
    assert_eq!(files(&first), expected, "the first scan reports every file");
    let done = json(first.last().unwrap());
    assert_eq!(done["count"], 4);
    assert_eq!(done["bytes"], 5 + 200_000 + 3);
    assert_eq!(done["changed"], 4);
    assert_eq!(done["removed"], 0);
    let listed: Vec<&str> = done["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ["a.txt", "b.bin", "sub/c.txt", "sub/deeper/empty"]);

    // One changed, one added, one removed; `b.bin` and the rest untouched.
    std::fs::write(content.join("a.txt"), "alpha, changed").unwrap();
    std::fs::write(content.join("sub/d.txt"), "new").unwrap();
    std::fs::remove_file(content.join("sub/c.txt")).unwrap();
    let second = scan(&run, 2).await;
    let changed = files(&second);
    assert_eq!(
        changed,
        BTreeMap::from([
            ("a.txt".to_owned(), (14, sha256(b"alpha, changed"))),
            ("sub/d.txt".to_owned(), (3, sha256(b"new"))),
        ]),
        "only what changed"
    );
    let removed: Vec<Value> = second
        .iter()
        .filter(|e| e.kind.as_str() == "index.removed")
        .map(|e| json(e))
        .collect();
    assert_eq!(removed, [serde_json::json!({ "path": "sub/c.txt" })]);
    let done = json(second.last().unwrap());
    assert_eq!(
        (done["changed"].as_u64(), done["removed"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(done["count"], 4);
    let index: BTreeMap<String, (u64, String)> = done["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["path"].as_str().unwrap().to_owned(),
                (
                    f["size"].as_u64().unwrap(),
                    f["sha256"].as_str().unwrap().to_owned(),
                ),
            )
        })
        .collect();
    let mut now = expected.clone();
    now.remove("sub/c.txt");
    now.insert("a.txt".into(), (14, sha256(b"alpha, changed")));
    now.insert("sub/d.txt".into(), (3, sha256(b"new")));
    assert_eq!(index, now, "index.done carries the whole current index");

    // Nothing changed: nothing but the summary.
    let third = scan(&run, 3).await;
    assert_eq!(third.len(), 1, "{third:?}");
    assert_eq!(json(&third[0])["changed"], 0);

    let report = run.stop().await;
    let agent = report.agent("IndexerAgent").unwrap();
    assert_eq!((agent.errors, agent.faults), (0, 0));
}

/// The scheduler storing under `key` through `s3.put`, ticking every 20 ms.
fn scheduler(extra: &str) -> String {
    format!(
        r#"
        [[agents]]
        name = "SchedulerAgent"
        module = "scheduler.wasm"
        subscribe = ["index.done"]
        publish = ["scheduler.job.>"]
        request = ["s3.put"]
        every = "20ms"
        timeout_ms = 20000
        max_payload_bytes = 1048576
        default_driver = "s3"
        object_key = "index/latest.json"
        request_timeout_ms = 15000
        {extra}
        "#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduler_stores_the_latest_index_in_s3() {
    let dir = tempfile::tempdir().unwrap();
    let content = dir.path().join("content");
    std::fs::create_dir_all(&content).unwrap();
    std::fs::write(content.join("page.html"), "<h1>hi</h1>").unwrap();
    std::fs::write(content.join("style.css"), "h1 {}").unwrap();

    let moto = moto().await;
    logs();
    let toml = format!(
        "{}{}{}",
        agents(moto.port, &moto.key, &moto.secret),
        indexer(&content, r#"subscribe = ["index.scan"]"#),
        scheduler(""),
    );
    let run = Running::start(&toml, &["index.done", "scheduler.job.>"]);
    run.cx.publish("index.scan", "").unwrap();
    let done = run.rec.wait_kind("scheduler.job.done", 1).await;
    let job: Value = serde_json::from_str(&done[0]).unwrap();
    let index = run.rec.payloads("index.done");
    assert_eq!(index.len(), 1);
    assert_eq!(job["key"], "index/latest.json");
    assert_eq!(job["bytes"], index[0].len());
    assert_eq!(job["size"], index[0].len());
    assert_eq!(job["attempts"], 1);
    assert_eq!(job["driver"], "s3");

    // Read back with boto3, an independent client, signing with the key.
    let stored = python(
        r#"
import boto3, hashlib, sys
ep, bucket, key, secret = sys.argv[1:5]
s3 = boto3.client("s3", endpoint_url=ep, region_name="us-east-1",
                  aws_access_key_id=key, aws_secret_access_key=secret)
obj = s3.get_object(Bucket=bucket, Key="index/latest.json")
body = obj["Body"].read()
print(obj["ETag"].strip('"'), obj["ContentType"], hashlib.md5(body).hexdigest(),
      hashlib.sha256(body).hexdigest())
"#,
        &[
            &format!("http://127.0.0.1:{}", moto.port),
            BUCKET,
            &moto.key,
            &moto.secret,
        ],
    );
    let words: Vec<&str> = stored.split(' ').collect();
    let [etag, content_type, md5, digest] = words[..] else {
        panic!("boto3 printed {stored:?}");
    };
    assert_eq!(job["etag"], etag, "the reply's ETag is the stored object's");
    assert_eq!(etag, md5, "single-part ETag: the MD5 of the bytes stored");
    assert_eq!(content_type, "application/json");
    assert_eq!(
        digest,
        sha256(index[0].as_bytes()),
        "the object is the index.done payload, byte for byte"
    );
    let listed: Value = serde_json::from_str(&index[0]).unwrap();
    assert_eq!(listed["count"], 2);

    // A scan that finds nothing new is not stored again (no PUT per tick).
    run.cx.publish("index.scan", "").unwrap();
    let unchanged = run.rec.wait_kind("scheduler.job.unchanged", 1).await;
    assert_eq!(
        serde_json::from_str::<Value>(&unchanged[0]).unwrap(),
        serde_json::json!({ "key": "index/latest.json", "count": 2 })
    );
    assert_eq!(run.rec.payloads("scheduler.job.done").len(), 1);
    // A changed file is.
    std::fs::write(content.join("style.css"), "h1 { color: red }").unwrap();
    run.cx.publish("index.scan", "").unwrap();
    let done = run.rec.wait_kind("scheduler.job.done", 2).await;
    let job: Value = serde_json::from_str(&done[1]).unwrap();
    assert_eq!(job["bytes"], run.rec.payloads("index.done")[2].len());
    assert!(run.rec.payloads("scheduler.job.unchanged").len() == 1);

    let report = run.stop().await;
    assert!(report.agents.iter().all(|a| a.faults == 0), "{report:?}");
    assert_eq!(report.agent("SchedulerAgent").unwrap().errors, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduler_retries_with_backoff_then_reports_the_failure() {
    logs();
    // A loopback port nobody listens on: every put is `unreachable`.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let toml = format!(
        "{}{}",
        agents(port, "AKIDEXAMPLE", "secret"),
        scheduler("retries = 3"),
    );
    let run = Running::start(&toml, &["scheduler.job.>"]);
    run.cx
        .publish("index.done", r#"{"files":[],"count":0,"bytes":0}"#)
        .unwrap();
    let failed = run.rec.wait_kind("scheduler.job.failed", 1).await;
    let failed: Value = serde_json::from_str(&failed[0]).unwrap();
    assert_eq!(
        failed["attempts"], 4,
        "the first attempt and 3 retries: {failed}"
    );
    let errors = failed["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 4);
    for error in errors {
        let text = error.as_str().unwrap();
        assert!(
            text.contains("unreachable") && text.contains("ConnectionRefused"),
            "{text}"
        );
    }
    assert_eq!(failed["error"], errors[3]);
    let retries: Vec<Value> = run
        .rec
        .payloads("scheduler.job.retry")
        .iter()
        .map(|p| serde_json::from_str(p).unwrap())
        .collect();
    let waits: Vec<u64> = retries
        .iter()
        .map(|r| r["retry_in_ticks"].as_u64().unwrap())
        .collect();
    assert_eq!(waits, [1, 2, 4], "exponential backoff, in ticks");
    let attempts: Vec<u64> = retries
        .iter()
        .map(|r| r["attempt"].as_u64().unwrap())
        .collect();
    assert_eq!(attempts, [1, 2, 3]);
    assert!(run.rec.payloads("scheduler.job.done").is_empty());
    let report = run.stop().await;
    assert!(report.agents.iter().all(|a| a.faults == 0), "{report:?}");
}
