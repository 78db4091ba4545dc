//! The `secrets`, `vault` and `auth` capabilities, exercised by a real guest
//! (`capable`) through the WIT contract: granted calls work, and every
//! denial is a value the guest can see, identical for "not granted" and
//! "does not exist".

use std::path::{Path, PathBuf};

use toka_runtime::Runtime;
use toka_secrets::{MasterKey, SecretStore};
use toka_tests::{captured_logs, config, logs, with_recorder};

/// A distinctive value that must never appear in any log.
const STRIPE_KEY: &str = "sk_live_5f3e9c1d-never-in-logs";

/// A temp dir holding a master key file, a secret store with two secrets
/// and a vault directory, and the `[secrets]`/`[vault]` config for them.
struct Stores {
    _dir: tempfile::TempDir,
    toml: String,
    db: PathBuf,
}

fn stores() -> Stores {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("master.key");
    let db = dir.path().join("secrets.db");
    let key = MasterKey::create_key_file(&key_file).unwrap();
    {
        let store = SecretStore::open(&db, key).unwrap();
        store.set("stripe/api-key", STRIPE_KEY.as_bytes()).unwrap();
        store.set("db/password", b"hunter2-db").unwrap();
    }
    let toml = format!(
        r#"
        [secrets]
        path = {db:?}
        key_file = {key_file:?}
        [vault]
        path = {vault:?}
        max_blob_mb = 1
        "#,
        vault = dir.path().join("vault"),
    );
    Stores {
        _dir: dir,
        toml,
        db,
    }
}

/// Run `agents` (TOML) with the stores, send each agent its commands as
/// `<agent>.cmd` events, and return each agent's results in order.
async fn run(stores: &Stores, agents: &str, commands: &[(&str, &str)]) -> Vec<(String, String)> {
    logs();
    let (rt, rec) = with_recorder(&format!("{}\n{agents}", stores.toml), &["capable.result"]);
    let cx = rt.injector("test");
    let stop = rt.shutdown_handle();
    let running = tokio::spawn(rt.run_until(std::future::pending()));
    for (agent, cmd) in commands {
        cx.publish(&format!("{agent}.cmd"), cmd.to_string())
            .unwrap();
    }
    rec.wait_for("every result", |evs| evs.len() >= commands.len())
        .await;
    stop.shutdown();
    running.await.unwrap().unwrap();
    rec.events()
        .iter()
        .map(|e| {
            (
                e.source.to_string(),
                String::from_utf8_lossy(&e.payload).into_owned(),
            )
        })
        .collect()
}

fn agent(name: &str, grants: &str) -> String {
    format!(
        r#"
        [[agents]]
        name = "{name}"
        module = "capable.wasm"
        subscribe = ["{name}.cmd"]
        publish = ["capable.result"]
        {grants}
        "#
    )
}

fn results_of<'a>(all: &'a [(String, String)], agent: &str) -> Vec<&'a str> {
    all.iter()
        .filter(|(a, _)| a == agent)
        .map(|(_, r)| r.as_str())
        .collect()
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_read_only_by_grant_and_never_logged() {
    let stores = stores();
    let agents = [
        agent("payments", r#"secrets = ["stripe/*"]"#),
        agent("nosy", ""),
    ]
    .concat();
    let all = run(
        &stores,
        &agents,
        &[
            ("payments", "secret stripe/api-key"),
            ("payments", "secret db/password"),
            ("payments", "secret stripe/missing"),
            ("nosy", "secret stripe/api-key"),
            ("nosy", "secret does/not-exist"),
        ],
    )
    .await;
    assert_eq!(
        results_of(&all, "payments"),
        [
            &format!("ok:{STRIPE_KEY}")[..],
            "err:access-denied",
            "err:access-denied"
        ],
        "granted reads work; outside the grant and missing look the same"
    );
    assert_eq!(
        results_of(&all, "nosy"),
        ["err:access-denied", "err:access-denied"],
        "no grant: existing and missing secrets give the same answer"
    );
    let logged = captured_logs();
    assert!(
        logged.contains("secret read") && logged.contains("stripe/api-key"),
        "reads are logged by name"
    );
    assert!(
        !logged.contains(STRIPE_KEY),
        "the value never reaches a log"
    );
    for file in files_under(&stores.db) {
        let bytes = std::fs::read(&file).unwrap();
        assert!(
            !bytes
                .windows(STRIPE_KEY.len())
                .any(|w| w == STRIPE_KEY.as_bytes()),
            "{} holds the secret in clear",
            file.display()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_namespaces_are_isolated_and_the_quota_holds() {
    let stores = stores();
    let agents = [
        agent("alice", "vault = true\nvault_quota_mb = 1"),
        agent("bob", "vault = true\nvault_shared = [\"alice\"]"),
        agent("carol", ""),
    ]
    .concat();
    let big = "x".repeat(700 * 1024);
    let all = run(
        &stores,
        &agents,
        &[
            ("alice", "vault-put - note hello-from-alice"),
            ("alice", "vault-get - note"),
            ("alice", "vault-list -"),
            ("alice", &format!("vault-put - big1 {big}")),
            ("alice", &format!("vault-put - big2 {big}")),
            ("alice", "vault-get bob note"),
        ],
    )
    .await;
    // Agents run in parallel: bob and carol go second, once alice's blobs
    // are in (the vault outlives the runtime).
    let others = run(
        &stores,
        &agents,
        &[
            ("bob", "vault-get - note"),
            ("bob", "vault-put - note hello-from-bob"),
            ("bob", "vault-get alice note"),
            ("carol", "vault-list -"),
            ("carol", "vault-get alice note"),
        ],
    )
    .await;
    let alice = results_of(&all, "alice");
    assert_eq!(alice[0], "ok:note:16");
    assert_eq!(alice[1], "ok:64:hello-from-alice", "64 = sha256 hex length");
    assert_eq!(alice[2], "ok:note");
    assert_eq!(alice[3], &format!("ok:big1:{}", big.len()));
    assert_eq!(alice[4], "err:too-large:1048576", "the 1 MiB quota holds");
    assert_eq!(alice[5], "err:access-denied", "bob's namespace is bob's");
    assert_eq!(
        results_of(&others, "bob"),
        ["ok:none", "ok:note:14", "ok:64:hello-from-alice"],
        "bob's own namespace is separate; alice's is shared with him by grant"
    );
    assert_eq!(
        results_of(&others, "carol"),
        ["err:access-denied", "err:access-denied"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_and_tokens_by_separate_grants() {
    let stores = stores();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let agents = [
        agent("issuer", r#"auth = ["password", "issue-token"]"#),
        agent("checker", r#"auth = ["verify-token"]"#),
    ]
    .concat();
    let hash_then_issue = run(
        &stores,
        &agents,
        &[
            ("issuer", "hash correct-horse"),
            ("issuer", &format!("issue user-7 api {}", now + 600)),
            ("issuer", &format!("issue user-8 api {}", now - 600)),
            (
                "issuer",
                &format!("issue user-9 api {} {}", now + 600, now + 300),
            ),
            ("checker", "hash nope"),
        ],
    )
    .await;
    let issuer = results_of(&hash_then_issue, "issuer");
    let phc = issuer[0].strip_prefix("ok:").unwrap();
    assert!(phc.starts_with("$argon2id$"), "{phc}");
    let valid = issuer[1].strip_prefix("ok:").unwrap();
    let expired = issuer[2].strip_prefix("ok:").unwrap();
    let early = issuer[3].strip_prefix("ok:").unwrap();
    assert_eq!(
        results_of(&hash_then_issue, "checker"),
        ["err:access-denied"],
        "verify-token does not grant password hashing"
    );
    // Tamper with the payload: swap one character of the middle segment.
    let mut parts: Vec<String> = valid.split('.').map(str::to_owned).collect();
    let flipped = if parts[1].ends_with('A') { 'B' } else { 'A' };
    parts[1].pop();
    parts[1].push(flipped);
    let tampered = parts.join(".");
    let unsigned = format!("{}.{}.", "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0", parts[1]);

    let checks = run(
        &stores,
        &agents,
        &[
            ("checker", &format!("check {valid} api")),
            ("checker", &format!("check {valid} other")),
            ("checker", &format!("check {expired} api")),
            ("checker", &format!("check {early} api")),
            ("checker", &format!("check {tampered} api")),
            ("checker", &format!("check {unsigned} api")),
            ("issuer", &format!("verify correct-horse {phc}")),
            ("issuer", &format!("verify wrong-horse {phc}")),
            ("issuer", &format!("check {valid} api")),
        ],
    )
    .await;
    let checker = results_of(&checks, "checker");
    assert_eq!(
        checker[0], r#"ok:user-7:{"role":"reader"}"#,
        "the token round-trips, across runtime restarts (the key is stored)"
    );
    for (i, what) in [
        (1, "wrong audience"),
        (2, "expired"),
        (3, "not yet valid"),
        (4, "tampered"),
        (5, "alg none"),
    ] {
        assert!(
            checker[i].starts_with("err:invalid:"),
            "{what} is rejected: {}",
            checker[i]
        );
    }
    assert_eq!(
        results_of(&checks, "issuer"),
        ["ok:true", "ok:false", "err:access-denied"]
    );
    let logged = captured_logs();
    assert!(
        !logged.contains("correct-horse"),
        "passwords are never logged"
    );
    assert!(!logged.contains(valid), "tokens are never logged");
}

#[test]
fn a_grant_this_config_cannot_honour_fails_fast_naming_it() {
    logs();
    let err = Runtime::new(config(&agent("payments", r#"secrets = ["stripe/*"]"#)))
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no secret store is configured") || err.contains("master key"),
        "{err}"
    );
    let stores = stores();
    let err = Runtime::new(config(&format!(
        "{}\n{}",
        stores.toml,
        agent("payments", r#"secrets = ["stripe/[a-z]"]"#)
    )))
    .map(|_| ())
    .unwrap_err()
    .to_string();
    assert!(err.contains("payments") && err.contains("secrets"), "{err}");
}
