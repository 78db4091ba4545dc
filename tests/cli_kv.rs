//! End-to-end tests of `toka kv`: put, get, ls and rm on the store a
//! configuration names, and the exit code 2 for the operator's mistakes (a
//! bad key or bucket, a missing key, no `[kv] path`, a store held by
//! another process).
#![cfg(feature = "kv")]

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};

const CONFIG: &str = r#"
[kv]
path = "state/kv.redb"
max_key_bytes = 16

[[agents]]
name = "counter"
kv = true
kv_shared = ["sessions"]
"#;

fn toka(dir: &Path, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_toka"))
        .args(args)
        .current_dir(dir)
        .env("RUST_LOG", "warn")
        .env("HOME", dir)
        .env_remove("TOKA_MASTER_KEY")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run toka");
    let mut pipe = child.stdin.take().unwrap();
    if let Some(bytes) = stdin {
        pipe.write_all(bytes).unwrap();
    }
    drop(pipe);
    child.wait_with_output().unwrap()
}

fn kv(dir: &Path, args: &[&str]) -> Output {
    let mut all = vec!["kv"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--config", "toka.toml"]);
    toka(dir, &all, None)
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// Asserts exit code 2 and returns stderr.
fn bad(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{err}");
    err
}

fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("toka.toml"), CONFIG).unwrap();
    dir
}

#[test]
fn put_get_ls_rm() {
    let dir = setup();
    let d = dir.path();
    // Nothing stored yet: reading says how to create it.
    assert!(bad(&kv(d, &["ls"])).contains("`toka kv put` creates it"));

    // The bucket defaults to the one agent with its own.
    let out = ok(&kv(d, &["put", "greeting", "hello"]));
    assert_eq!(out, "stored counter/greeting (5 bytes, version 1)\n");
    assert!(d.join("state/kv.redb").exists());
    let out = toka(
        d,
        &[
            "kv",
            "put",
            "token",
            "--bucket",
            "sessions",
            "--ttl",
            "1h",
            "--config",
            "toka.toml",
        ],
        Some(b"\x00\xffbytes"),
    );
    assert!(ok(&out).starts_with("stored sessions/token (7 bytes"));
    std::fs::write(d.join("v.json"), br#"{"n":1}"#).unwrap();
    ok(&kv(d, &["put", "doc", "--file", "v.json"]));

    assert_eq!(ok(&kv(d, &["get", "greeting"])), "hello");
    let out = kv(d, &["get", "token", "--bucket", "sessions"]);
    assert!(out.status.success());
    assert_eq!(out.stdout, b"\x00\xffbytes");

    let buckets = ok(&kv(d, &["ls"]));
    let lines: Vec<&str> = buckets.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["BUCKET", "KEYS", "BYTES", "WRITES"]
    );
    let counter: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(counter, ["counter", "2", &(8 + 5 + 3 + 7).to_string(), "2"]);
    assert!(lines[2].starts_with("sessions "), "{buckets}");

    let keys = ok(&kv(d, &["ls", "--bucket", "counter"]));
    let names: Vec<&str> = keys
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(names, ["doc", "greeting"]);
    let keys = ok(&kv(d, &["ls", "--bucket", "sessions"]));
    let token: Vec<&str> = keys.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(token[..3], ["token", "7", "1"]);
    assert!(token[3].ends_with('Z'), "an expiry time: {keys}");
    let keys = ok(&kv(d, &["ls", "--bucket", "counter", "--prefix", "gr"]));
    assert_eq!(keys.lines().count(), 2, "{keys}");

    assert_eq!(
        ok(&kv(d, &["rm", "greeting"])),
        "removed counter/greeting\n"
    );
    assert!(bad(&kv(d, &["get", "greeting"])).contains("no key greeting in bucket counter"));
    assert!(bad(&kv(d, &["rm", "greeting"])).contains("no key greeting"));
    // Versions keep growing after a delete.
    assert!(ok(&kv(d, &["put", "greeting", "again"])).contains("version 3"));
}

#[test]
fn the_operators_mistakes_exit_2() {
    let dir = setup();
    let d = dir.path();
    ok(&kv(d, &["put", "a", "1"]));
    let err = bad(&kv(d, &["put", "a-key-longer-than-16", "x"]));
    assert!(
        err.contains("invalid key") && err.contains("max_key_bytes"),
        "{err}"
    );
    let err = bad(&kv(d, &["put", "", "x"]));
    assert!(err.contains("cannot be empty"), "{err}");
    let err = bad(&kv(d, &["get", "a", "--bucket", "no/such"]));
    assert!(err.contains("invalid bucket name"), "{err}");
    assert!(bad(&kv(d, &["put", "a", "x", "--ttl", "0s"])).contains("--ttl"));

    // Several agents with their own buckets: name one.
    std::fs::write(
        d.join("toka.toml"),
        format!("{CONFIG}\n[[agents]]\nname = \"other\"\nkv = true\n"),
    )
    .unwrap();
    let err = bad(&kv(d, &["get", "a"]));
    assert!(
        err.contains("--bucket") && err.contains("counter, other"),
        "{err}"
    );

    // A grant key of the wrong type is located.
    std::fs::write(
        d.join("toka.toml"),
        format!("{CONFIG}kv_max_keys = \"many\"\n"),
    )
    .unwrap();
    let err = bad(&kv(d, &["get", "a"]));
    assert!(
        err.contains("toka.toml:10:15: agents[0].kv_max_keys"),
        "{err}"
    );

    // No store configured.
    std::fs::write(d.join("toka.toml"), "[[agents]]\nname = \"x\"\nkv = true\n").unwrap();
    assert!(bad(&kv(d, &["ls"])).contains("set [kv] path"));
}

#[test]
fn a_store_held_by_another_process_is_refused() {
    let dir = setup();
    let d = dir.path();
    ok(&kv(d, &["put", "a", "1"]));
    let held = toka_kv::Store::open(&d.join("state/kv.redb"), Default::default()).unwrap();
    let err = bad(&kv(d, &["get", "a"]));
    assert!(err.contains("open in another process"), "{err}");
    drop(held);
    assert_eq!(ok(&kv(d, &["get", "a"])), "1");
}
