//! SIGKILL at random moments while operations are acknowledged: the test
//! binary re-executes itself as a writer child (four threads minting,
//! transferring and burning on one ledger file) that prints `ack ...` after
//! each operation returns, kills it, reopens the ledger and checks every
//! invariant and every operation acknowledged in this round and all the
//! rounds before, over and over.
//!
//! Each writer thread runs its operations one after another, so when the
//! child dies each thread has at most one operation in flight: the one
//! after its last `ack`. It may or may not have landed; after the check it
//! is retried with its key, as a client would, and must then be there
//! exactly once.
#![cfg(unix)]

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::process::ExitStatusExt as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use std::{env, thread};

use toka_ledger::{Embedded, Error, Ledger, Op};

/// Set (to the ledger file) only in the re-executed writer child.
const CHILD_ENV: &str = "TOKA_LEDGER_CRASH_CHILD";
/// The round, so each child uses keys of its own.
const ROUND_ENV: &str = "TOKA_LEDGER_CRASH_ROUND";
const READY: &str = "TOKA-LEDGER-CHILD-READY";
const ROUNDS: usize = 20;
const THREADS: u64 = 4;

fn key(round: usize, t: u64, i: u64) -> String {
    format!("r{round}/t{t}/{i}")
}

/// Thread `t`'s op `i`: both processes derive it. Thread `t` is the only
/// one that debits `u{t}`, so funds mostly suffice; a refusal is an
/// acknowledged outcome too (and must leave nothing).
fn op(t: u64, i: u64) -> Op {
    let asset = if t.is_multiple_of(2) { "usd" } else { "eur" }.to_string();
    let me = format!("u{t}");
    // The next thread of the same asset: two per asset.
    let peer = format!("u{}", (t + 2) % THREADS);
    match i % 10 {
        0 | 4 | 8 => Op::Mint {
            asset,
            to: me,
            amount: u128::from(10 + i % 7),
        },
        9 => Op::Burn {
            asset,
            from: me,
            amount: u128::from(1 + i % 5),
        },
        _ => Op::Transfer {
            asset,
            from: me,
            to: peer,
            amount: u128::from(1 + i % 4),
        },
    }
}

/// The writer half of `sigkill_never_loses_an_acknowledged_operation`;
/// returns at once in a normal run.
#[test]
fn crash_child() {
    let Some(path) = env::var_os(CHILD_ENV) else {
        return;
    };
    let round: usize = env::var(ROUND_ENV).unwrap().parse().unwrap();
    let ledger = Arc::new(Embedded::open(Path::new(&path)).unwrap());
    let out = Arc::new(Mutex::new(std::io::stdout()));
    {
        let mut out = out.lock().unwrap();
        writeln!(out, "\n{READY}").unwrap();
        out.flush().unwrap();
    }
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (ledger, out) = (Arc::clone(&ledger), Arc::clone(&out));
            thread::spawn(move || {
                for i in 0.. {
                    let id = match ledger.apply(&key(round, t, i), &op(t, i)) {
                        Ok(entry) => entry.id,
                        Err(Error::InsufficientFunds { .. }) => 0,
                        Err(e) => panic!("{e}"),
                    };
                    let mut out = out.lock().unwrap();
                    writeln!(out, "ack {t} {i} {id}").unwrap();
                    out.flush().unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn sigkill_never_loses_an_acknowledged_operation() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("ledger.redb");
    let mut rng = getrandom::u64().unwrap() | 1;
    // Every acknowledged operation of every round: key → entry id (0: refused).
    let mut acked: HashMap<String, (Op, u64)> = HashMap::new();
    let mut applied = 0;
    for round in 0..ROUNDS {
        let last = kill_at_random(&path, round, &mut rng, &mut acked);
        let ledger = Embedded::open(&path)
            .unwrap_or_else(|e| panic!("round {round}: reopen after SIGKILL failed: {e}"));
        let problems = ledger.check().unwrap();
        assert!(problems.is_empty(), "round {round}: {problems:#?}");
        for (k, (op, id)) in &acked {
            let got = ledger.lookup(k).unwrap();
            if *id == 0 {
                assert_eq!(got, None, "round {round}: refused {k} landed");
                continue;
            }
            let entry = got.unwrap_or_else(|| panic!("round {round}: acknowledged {k} lost"));
            assert_eq!(
                (entry.id, &entry.op),
                (*id, op),
                "round {round}: {k} changed"
            );
        }
        // Retry each thread's in-flight op, as its client would: it lands
        // once, whether or not it had before the kill.
        for t in 0..THREADS {
            let i = last[&t].map_or(0, |i| i + 1);
            let (k, op) = (key(round, t, i), op(t, i));
            let before = ledger.lookup(&k).unwrap();
            // Nothing past the in-flight op was ever started.
            assert_eq!(ledger.lookup(&key(round, t, i + 1)).unwrap(), None);
            match ledger.apply(&k, &op) {
                Ok(entry) => {
                    if let Some(b) = before {
                        assert_eq!(b, entry, "round {round}: retry of {k} changed it");
                    }
                    acked.insert(k, (op, entry.id));
                }
                Err(Error::InsufficientFunds { .. }) => {
                    assert_eq!(before, None);
                    acked.insert(k, (op, 0));
                }
                Err(e) => panic!("round {round}: retrying {k}: {e}"),
            }
        }
        let problems = ledger.check().unwrap();
        assert!(
            problems.is_empty(),
            "round {round}: after retries: {problems:#?}"
        );
        // The journal holds exactly the acknowledged (and retried) entries.
        let landed = acked.values().filter(|(_, id)| *id != 0).count() as u64;
        assert_eq!(ledger.entry(landed).unwrap().map(|e| e.id), Some(landed));
        assert_eq!(ledger.entry(landed + 1).unwrap(), None);
        applied = landed;
    }
    eprintln!(
        "{ROUNDS} rounds, {applied} entries, {} acknowledged operations checked",
        acked.len()
    );
    assert!(
        applied > ROUNDS as u64 * THREADS,
        "the children acknowledged too little"
    );
}

/// Runs a writer child for `round`, kills it at a random moment once it is
/// writing, records what it acknowledged in `acked` and returns each
/// thread's last acknowledged op.
fn kill_at_random(
    path: &Path,
    round: usize,
    rng: &mut u64,
    acked: &mut HashMap<String, (Op, u64)>,
) -> HashMap<u64, Option<u64>> {
    let mut child = Command::new(env::current_exe().unwrap())
        .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, path)
        .env(ROUND_ENV, round.to_string())
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = lines.by_ref().map_while(Result::ok).any(|l| l == READY);
    assert!(
        ready,
        "round {round}: child exited before ready: {:?}",
        child.wait()
    );
    // Read the acks as they come, so the child never blocks on a full pipe.
    let reader = thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<String>>());
    // The moment of the kill is the point of the test: a random delay, not
    // an event to wait for.
    thread::sleep(Duration::from_millis(5 + xorshift(rng) % 300));
    // `Child::kill` is SIGKILL on unix: no destructors, no flushing, nothing.
    child.kill().unwrap();
    let status = child.wait().unwrap();
    // Killed by our signal, not ended by a panic of its own (a failure
    // status too, which would hide an operation the child refused).
    assert_eq!(
        status.signal(),
        Some(9),
        "round {round}: child was not killed by SIGKILL: {status:?}"
    );
    let mut last: HashMap<u64, Option<u64>> = (0..THREADS).map(|t| (t, None)).collect();
    for line in reader.join().unwrap() {
        // A line cut short by the kill has fewer fields; it acknowledged nothing.
        let fields: Vec<u64> = line
            .strip_prefix("ack ")
            .map(|l| l.split(' ').filter_map(|f| f.parse().ok()).collect())
            .unwrap_or_default();
        if let [t, i, id] = fields[..] {
            assert_eq!(last[&t].map_or(0, |l| l + 1), i, "ops run in order");
            last.insert(t, Some(i));
            acked.insert(key(round, t, i), (op(t, i), id));
        }
    }
    last
}

fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}
