//! The seed's `config/portable.toml`, run end to end by `tests/portable.py`
//! (what `just portable` runs): moto as S3 with signature checking on, the
//! IndexerAgent over `config/content`, the SchedulerAgent storing the index
//! through the S3 driver, and a webhook signed by the official `stripe`
//! library posted to the Stripe route. The object is read back with boto3
//! (not Toka's driver), and the Logger's output is checked for both stories.
#![cfg(all(feature = "driver-s3", feature = "provider-stripe"))]

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `(path, size, sha256)` of every file under `config/content`, sorted.
fn content() -> Vec<(String, u64, String)> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<(String, u64, String)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(base, &path, out);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                let rel = path.strip_prefix(base).unwrap().to_str().unwrap();
                let digest: String = Sha256::digest(&bytes)
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                out.push((rel.replace('\\', "/"), bytes.len() as u64, digest));
            }
        }
    }
    let base = root().join("config/content");
    let mut out = Vec::new();
    walk(&base, &base, &mut out);
    out.sort();
    out
}

#[test]
fn portable_toml_runs_end_to_end() {
    let state = tempfile::tempdir().unwrap();
    let out = Command::new("python3")
        .arg(root().join("tests/portable.py"))
        .arg(env!("CARGO_BIN_EXE_toka"))
        .args(["--for", "8s"])
        .current_dir(root())
        .env("TOKA_STATE", state.path())
        .env("RUST_LOG", "info")
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("run python3 tests/portable.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let log = format!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{:?}: {log}", out.status);

    // The index in the bucket, as boto3 read it, is the fixture folder.
    let object: Vec<&str> = stdout
        .lines()
        .find_map(|l| l.strip_prefix("OBJECT "))
        .unwrap_or_else(|| panic!("no OBJECT line: {log}"))
        .split(' ')
        .collect();
    let expected = content();
    assert_eq!(object[1], expected.len().to_string(), "{log}");
    let files: Vec<(String, u64, String)> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("FILE "))
        .map(|l| {
            let parts: Vec<&str> = l.split(' ').collect();
            (parts[0].into(), parts[1].parse().unwrap(), parts[2].into())
        })
        .collect();
    assert_eq!(files, expected);

    // The signed webhook was accepted and became a `stripe.*` event that
    // the Logger printed, once.
    assert!(stdout.lines().any(|l| l == "WEBHOOK 200"), "{log}");
    let logged = log
        .lines()
        .filter(|l| {
            l.contains(r#"agent="Logger""#)
                && l.contains(r#"kind="stripe.checkout.session.completed""#)
                && l.contains("evt_portable_1")
        })
        .count();
    assert_eq!(logged, 1, "{log}");
    // And the Logger saw the scheduler's report of the stored object.
    assert!(
        log.lines()
            .any(|l| l.contains(r#"agent="Logger""#) && l.contains(r#"kind="scheduler.job.done""#)),
        "{log}"
    );
    assert!(
        !log.contains("whsec_portable_demo_secret"),
        "a secret in the output"
    );
    let summaries: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("agent summary"))
        .collect();
    // The routed `stripe-webhook` runs per request: no summary of its own.
    assert_eq!(summaries.len(), 5, "{log}");
    assert!(
        summaries.iter().all(|l| l.contains(" faults=0 ")),
        "{summaries:#?}"
    );
    // The provider's dedup store is where the config put it.
    assert!(state.path().join("kv.redb").exists());
}
