//! End-to-end tests of `toka ledger`: the operator's writes under the same
//! checks as an agent's (overdrafts, idempotency, names), reads, `--as` an
//! agent's grant, `check`, and exit code 2 for the operator's mistakes.
#![cfg(feature = "ledger")]

use std::path::Path;
use std::process::{Command, Output};

const CONFIG: &str = r#"
[ledger]
path = "state/ledger.redb"

[[agents]]
name = "billing"
ledger_mint = ["credits"]
ledger_debit = ["user/*"]
ledger_credit = ["user/*"]
ledger_read = ["user/*"]

[[agents]]
name = "shop"
ledger_read = ["user/1"]
"#;

fn ledger(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_toka"))
        .arg("ledger")
        .args(args)
        .args(["--config", "toka.toml"])
        .current_dir(dir)
        .env("RUST_LOG", "warn")
        .env("HOME", dir)
        .output()
        .expect("run toka")
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
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stderr.clone()).unwrap()
}

fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("toka.toml"), CONFIG).unwrap();
    dir
}

#[test]
fn the_operator_mints_transfers_and_reads_under_the_ledgers_checks() {
    let dir = setup();
    let d = dir.path();
    // Reading before anything was written says how to start.
    assert!(bad(&ledger(d, &["balance", "credits", "user/1"])).contains("no ledger at"));

    let out = ok(&ledger(
        d,
        &["mint", "credits", "user/1", "100", "--key", "m1"],
    ));
    assert!(out.starts_with("entry 1 (credits)"), "{out}");
    assert!(out.contains("user/1") && out.contains("-> 100"), "{out}");
    // The same key again: the original entry, nothing changes.
    let again = ok(&ledger(
        d,
        &["mint", "credits", "user/1", "100", "--key", "m1"],
    ));
    assert_eq!(again, out);
    assert!(
        bad(&ledger(
            d,
            &["mint", "credits", "user/1", "5", "--key", "m1"]
        ))
        .contains("conflict")
    );
    // Without --key a fresh one is made and printed for a safe retry.
    let fresh = ledger(d, &["transfer", "credits", "user/1", "user/2", "30"]);
    ok(&fresh);
    assert!(String::from_utf8_lossy(&fresh.stderr).contains("key: cli-"));
    let e = bad(&ledger(
        d,
        &[
            "transfer", "credits", "user/1", "user/2", "71", "--key", "t",
        ],
    ));
    assert!(e.contains("insufficient funds"), "{e}");
    assert!(bad(&ledger(d, &["burn", "credits", "nobody", "1"])).contains("unknown account"));
    assert!(bad(&ledger(d, &["mint", "credits", "bad name", "1"])).contains("invalid"));
    ok(&ledger(
        d,
        &[
            "open",
            "credits",
            "user/3",
            "--overdraft",
            "10",
            "--key",
            "o",
        ],
    ));
    ok(&ledger(
        d,
        &[
            "transfer", "credits", "user/3", "user/1", "10", "--key", "od",
        ],
    ));

    assert_eq!(
        ok(&ledger(d, &["balance", "credits", "user/1"])).trim(),
        "80"
    );
    assert_eq!(
        ok(&ledger(d, &["balance", "credits", "user/1", "--at", "1"])).trim(),
        "100"
    );
    let history = ok(&ledger(d, &["history", "credits", "user/1"]));
    let rows: Vec<Vec<&str>> = history
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows,
        [
            vec!["1", "+100", "100"],
            vec!["2", "-30", "70"],
            vec!["4", "+10", "80"]
        ]
    );
    let accounts = ok(&ledger(d, &["accounts", "credits"]));
    let names: Vec<&str> = accounts
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(names, ["user/1", "user/2", "user/3"]);
    assert!(ok(&ledger(d, &["check"])).contains("every invariant holds"));
}

#[test]
fn as_an_agent_the_operator_gets_its_answers() {
    let dir = setup();
    let d = dir.path();
    ok(&ledger(
        d,
        &[
            "mint", "credits", "user/1", "5", "--as", "billing", "--key", "k",
        ],
    ));
    ok(&ledger(d, &["mint", "credits", "user/2", "5"]));
    assert_eq!(
        ok(&ledger(
            d,
            &["balance", "credits", "user/1", "--as", "shop"]
        ))
        .trim(),
        "5"
    );
    // Not granted: denied whether the account exists (user/2) or not (user/9).
    for account in ["user/2", "user/9"] {
        let e = bad(&ledger(d, &["balance", "credits", account, "--as", "shop"]));
        assert!(e.contains("access denied"), "{account}: {e}");
    }
    assert!(
        bad(&ledger(
            d,
            &["mint", "credits", "user/1", "1", "--as", "shop"]
        ))
        .contains("access denied")
    );
    assert!(
        bad(&ledger(d, &["accounts", "credits", "--as", "nobody"])).contains("no agent `nobody`")
    );
    // The operator's keys and the agent's never meet: `k` is billing's.
    let out = ok(&ledger(
        d,
        &["mint", "credits", "user/1", "5", "--key", "k"],
    ));
    assert!(out.starts_with("entry 3"), "{out}");
}

#[test]
fn no_ledger_configured_is_the_operators_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("toka.toml"), "[[agents]]\nname = \"a\"\n").unwrap();
    let e = bad(&ledger(dir.path(), &["mint", "usd", "a", "1"]));
    assert!(e.contains("set [ledger] path"), "{e}");
}
