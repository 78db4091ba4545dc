//! The `ledger` capability through real components (`ledger-probe`): what
//! a granted agent may do, the same `access-denied` for what it may not
//! (whether the account exists or not), an ungranted component that loads
//! and is denied every call, eight agents transferring at once keeping every
//! invariant, and balances that outlive the runtime.

use std::path::Path;
use std::sync::Arc;

use toka_ledger::{Embedded, Ledger, WideSum};
use toka_tests::{Running, logs};

/// Agents: `billing` (mints `credits` into `user/*`, moves `user/*` to
/// `revenue`, reads all), `shop` (reads `user/1`), `nobody` (no grant).
fn toml(dir: &Path) -> String {
    format!(
        r#"
        [ledger]
        path = {:?}

        [[agents]]
        name = "billing"
        module = "ledger_probe.wasm"
        subscribe = ["billing.cmd"]
        publish = ["ledger.result"]
        ledger_mint = ["credits"]
        ledger_burn = ["credits"]
        ledger_debit = ["user/*"]
        ledger_credit = ["user/*", "revenue"]
        ledger_read = ["*"]

        [[agents]]
        name = "shop"
        module = "ledger_probe.wasm"
        subscribe = ["shop.cmd"]
        publish = ["ledger.result"]
        ledger_read = ["user/1"]

        [[agents]]
        name = "nobody"
        module = "ledger_probe.wasm"
        subscribe = ["nobody.cmd"]
        publish = ["ledger.result"]
        "#,
        dir.join("ledger.redb")
    )
}

/// Run each `(kind, command)` in order, each after the previous answered;
/// the answers.
async fn ask(run: &Running, commands: &[(&str, &str)]) -> Vec<String> {
    for (i, (kind, command)) in commands.iter().enumerate() {
        run.cx.publish(kind, command.as_bytes().to_vec()).unwrap();
        run.rec.wait_kind("ledger.result", i + 1).await;
    }
    run.rec.payloads("ledger.result")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_granted_agent_mints_and_transfers_and_others_are_denied_alike() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let run = Running::start(&toml(dir.path()), &["ledger.result", "toka.dead-letter"]);
    let got = ask(
        &run,
        &[
            ("billing.cmd", "mint m1 credits user/1 100"),
            ("billing.cmd", "mint m1 credits user/1 100"),
            ("billing.cmd", "transfer t1 credits user/1 revenue 30"),
            ("billing.cmd", "transfer t2 credits user/1 revenue 71"),
            ("billing.cmd", "transfer t3 credits revenue user/1 1"),
            ("billing.cmd", "mint m1 credits user/1 5"),
            ("billing.cmd", "mint m2 credits user/2 1"),
            ("billing.cmd", "balance credits user/1"),
            ("billing.cmd", "history credits user/1"),
            ("billing.cmd", "issued credits"),
            ("shop.cmd", "balance credits user/1"),
            // user/2 exists, user/3 does not: the same answer.
            ("shop.cmd", "balance credits user/2"),
            ("shop.cmd", "balance credits user/3"),
            ("shop.cmd", "mint s1 credits user/1 1"),
            ("shop.cmd", "lookup m1"),
            ("nobody.cmd", "balance credits user/1"),
            ("nobody.cmd", "mint n1 credits user/1 1"),
            ("billing.cmd", "transfer t4 credits user/1 user/1 1"),
        ],
    )
    .await;
    assert_eq!(
        got,
        [
            "ok:entry=1 #issuance=-100 user/1=100",
            // The replay answers the original entry.
            "ok:entry=1 #issuance=-100 user/1=100",
            "ok:entry=2 user/1=70 revenue=30",
            "err:insufficient-funds",
            "err:access-denied",
            "err:conflict",
            "ok:entry=3 #issuance=-101 user/2=1",
            "ok:70",
            "ok:1:100,2:-30",
            "ok:101",
            "ok:70",
            "err:access-denied",
            "err:access-denied",
            "err:access-denied",
            "ok:none",
            "err:access-denied",
            "err:access-denied",
            "err:invalid:transfer from user/1 to itself",
        ]
    );
    let report = run.stop().await;
    assert!(run_ok(&report), "{report:?}");
    // Nothing the denied calls asked for happened.
    let ledger = Embedded::open(&dir.path().join("ledger.redb")).unwrap();
    assert_eq!(ledger.account("credits", "user/1").unwrap().balance, 70);
    assert_eq!(ledger.issued("credits").unwrap(), 101);
    assert!(ledger.check().unwrap().is_empty());
}

fn run_ok(report: &toka_runtime::Report) -> bool {
    report.agents.iter().all(|a| a.faults == 0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_agents_transferring_at_once_keep_every_invariant() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.redb");
    const AGENTS: usize = 8;
    const EACH: usize = 50;
    {
        let ledger = Embedded::open(&path).unwrap();
        for i in 0..AGENTS {
            ledger
                .mint(&format!("seed{i}"), "usd", &format!("a{i}"), EACH as u128)
                .unwrap();
        }
    }
    // Agent i moves from a<i> to a<i+1>: every account is debited by one
    // agent and credited by another, at once.
    let mut toml = format!("[ledger]\npath = {path:?}\n");
    for i in 0..AGENTS {
        toml.push_str(&format!(
            r#"
            [[agents]]
            name = "mover{i}"
            module = "ledger_probe.wasm"
            subscribe = ["m{i}.transfer"]
            asset = "usd"
            from = "a{i}"
            to = "a{next}"
            ledger_debit = ["a{i}"]
            ledger_credit = ["a{next}"]
            # Eight writers queue for one fsync'd writer, on a machine whose
            # disk is shared: a transfer may wait long, never past this.
            timeout_ms = 30000
            "#,
            next = (i + 1) % AGENTS
        ));
    }
    let run = Running::start(&toml, &["toka.dead-letter"]);
    for _ in 0..EACH {
        for i in 0..AGENTS {
            run.cx
                .publish(&format!("m{i}.transfer"), Vec::new())
                .unwrap();
        }
    }
    let report = run.stop().await;
    for a in report.agents.iter().filter(|a| a.name.starts_with("mover")) {
        assert_eq!(
            (a.handled, a.errors, a.faults),
            (EACH as u64, 0, 0),
            "{a:?}"
        );
    }
    let ledger = Arc::new(Embedded::open(&path).unwrap());
    let mut sum = WideSum::default();
    for i in 0..AGENTS {
        let a = ledger.account("usd", &format!("a{i}")).unwrap();
        assert!(a.balance >= 0, "{a:?}");
        sum.add(a.balance);
    }
    assert_eq!(sum.get(), Some((AGENTS * EACH) as i128));
    assert_eq!(ledger.issued("usd").unwrap(), (AGENTS * EACH) as u128);
    assert!(ledger.check().unwrap().is_empty());
    // Every acknowledged transfer is one entry: seeds plus one per event.
    let history: usize = (0..AGENTS)
        .map(|i| {
            ledger
                .history("usd", &format!("a{i}"), None, 1000)
                .unwrap()
                .rows
                .len()
        })
        .sum();
    assert_eq!(history, AGENTS + 2 * AGENTS * EACH);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn balances_outlive_the_runtime() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let run = Running::start(&toml(dir.path()), &["ledger.result"]);
    let got = ask(&run, &[("billing.cmd", "mint m1 credits user/1 42")]).await;
    // A minter reads the issuance account: minus what is in circulation.
    assert_eq!(got, ["ok:entry=1 #issuance=-42 user/1=42"]);
    run.stop().await;
    let run = Running::start(&toml(dir.path()), &["ledger.result"]);
    let got = ask(
        &run,
        &[
            ("billing.cmd", "balance credits user/1"),
            // The key is remembered across the restart.
            ("billing.cmd", "mint m1 credits user/1 42"),
            ("billing.cmd", "lookup m1"),
        ],
    )
    .await;
    assert_eq!(
        got,
        [
            "ok:42",
            "ok:entry=1 #issuance=-42 user/1=42",
            "ok:entry=1 #issuance=-42 user/1=42"
        ]
    );
    run.stop().await;
}
