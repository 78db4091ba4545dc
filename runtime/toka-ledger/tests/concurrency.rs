//! Many threads applying transfers (and mints, burns, replays) to one
//! ledger at once, while another thread checks every invariant on
//! snapshots as they commit; afterwards every acknowledged operation is in
//! the journal exactly once and the totals add up. The same run goes
//! against the embedded backend, against PostgreSQL, and against two
//! independent `Postgres` handles (two connection pools, as two processes
//! would have) sharing one database.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use common::Backend;
use proptest::prelude::*;
use toka_ledger::{Entry, ErrorKind, Ledger, Op, Postgres, WideSum};

const ACCOUNTS: usize = 10;
const START: u128 = 1000;
const OVERDRAFT: u128 = 500;

fn account(i: u64) -> String {
    // The last account runs on an overdraft; the others must stay >= 0.
    if i as usize % (ACCOUNTS + 1) == ACCOUNTS {
        "ovd".into()
    } else {
        format!("user/{}", i as usize % (ACCOUNTS + 1))
    }
}

/// What one thread did: its acknowledged entries and net issuance.
#[derive(Debug, Default)]
struct Done {
    entries: Vec<Entry>,
    minted: u128,
    burnt: u128,
    refused: usize,
}

fn worker(l: &dyn Ledger, t: usize, ops: usize, mut rng: u64) -> Done {
    let mut done = Done::default();
    for i in 0..ops {
        let r = xorshift(&mut rng);
        let amount = u128::from(1 + xorshift(&mut rng) % 300);
        let from = account(xorshift(&mut rng));
        let to = account(xorshift(&mut rng));
        let op = match r % 100 {
            0..8 => Op::Mint {
                asset: "usd".into(),
                to,
                amount,
            },
            8..15 => Op::Burn {
                asset: "usd".into(),
                from,
                amount,
            },
            15..20 if !done.entries.is_empty() => {
                // Replay one of our own acknowledged operations.
                let e = &done.entries[(r as usize / 100) % done.entries.len()];
                let again = l.apply(&e.key, &e.op).unwrap();
                assert_eq!(&again, e, "a replay changed its answer");
                continue;
            }
            _ if from == to => continue,
            _ => Op::Transfer {
                asset: "usd".into(),
                from,
                to,
                amount,
            },
        };
        let key = format!("t{t}/{i}");
        match l.apply(&key, &op) {
            Ok(entry) => {
                match &op {
                    Op::Mint { amount, .. } => done.minted += amount,
                    Op::Burn { amount, .. } => done.burnt += amount,
                    _ => {}
                }
                done.entries.push(entry);
            }
            // Refusals are expected (funds run out); they change nothing,
            // which the checker and the final totals verify.
            Err(e) if matches!(e.kind(), ErrorKind::InsufficientFunds | ErrorKind::Invalid) => {
                done.refused += 1;
            }
            Err(e) => panic!("thread {t} op {i}: {e}"),
        }
    }
    done
}

/// Runs `threads` workers, worker `t` on `ledgers[t % len]` (handles on
/// one ledger), and checks through `ledgers[0]`.
fn run(ledgers: &[Arc<dyn Ledger>], threads: usize, ops: usize, seed: u64) {
    let l = Arc::clone(&ledgers[0]);
    l.open("open-ovd", "usd", "ovd", OVERDRAFT).unwrap();
    for a in 0..ACCOUNTS as u64 {
        l.mint(&format!("seed-{a}"), "usd", &account(a), START)
            .unwrap();
    }
    let setup = 1 + ACCOUNTS as u64;

    let writing = Arc::new(AtomicBool::new(true));
    let checker = {
        let (l, writing) = (Arc::clone(&l), Arc::clone(&writing));
        thread::spawn(move || {
            let mut checks = 0;
            // At least one check, however fast the writers are.
            loop {
                let problems = l.check().unwrap();
                assert!(problems.is_empty(), "mid-run: {problems:#?}");
                checks += 1;
                if !writing.load(Ordering::Acquire) {
                    return checks;
                }
            }
        })
    };
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let l = Arc::clone(&ledgers[t % ledgers.len()]);
            let rng = (seed ^ (t as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1;
            thread::spawn(move || worker(&*l, t, ops, rng))
        })
        .collect();
    let done: Vec<Done> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    writing.store(false, Ordering::Release);
    let checks = checker.join().unwrap();
    assert!(checks >= 1);

    let problems = l.check().unwrap();
    assert!(problems.is_empty(), "{problems:#?}");
    let mut ids: Vec<u64> = Vec::new();
    for d in &done {
        for e in &d.entries {
            assert_eq!(
                l.lookup(&e.key).unwrap().as_ref(),
                Some(e),
                "{} lost",
                e.key
            );
            ids.push(e.id);
        }
    }
    let acknowledged = ids.len() as u64;
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(
        ids.len() as u64,
        acknowledged,
        "two operations share an entry"
    );
    // Refusals commit nothing, so the ids run on without gaps.
    assert_eq!(
        ids.first().copied(),
        (acknowledged > 0).then_some(setup + 1)
    );
    assert_eq!(
        ids.last().copied(),
        (acknowledged > 0).then_some(setup + acknowledged)
    );
    assert_eq!(l.entry(setup + acknowledged + 1).unwrap(), None);

    let minted: u128 = done.iter().map(|d| d.minted).sum();
    let burnt: u128 = done.iter().map(|d| d.burnt).sum();
    let issued = START * ACCOUNTS as u128 + minted - burnt;
    assert_eq!(l.issued("usd").unwrap(), issued);
    let page = l.accounts("usd", None, 1000).unwrap();
    let mut sum = WideSum::default();
    for a in &page.rows {
        sum.add(a.balance);
        let floor = if a.name == "ovd" {
            -(OVERDRAFT as i128)
        } else {
            0
        };
        assert!(a.balance >= floor, "{}: {}", a.name, a.balance);
    }
    assert_eq!(sum.get(), Some(issued as i128));
    let refused: usize = done.iter().map(|d| d.refused).sum();
    eprintln!(
        "{} handles, {threads} threads: {acknowledged} acknowledged, {refused} refused, {checks} checks",
        ledgers.len()
    );
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 4,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn embedded_concurrent_operations_keep_every_invariant(
        threads in 2usize..=8,
        seed in any::<u64>(),
    ) {
        let l = Backend::Embedded.fresh();
        run(&[Arc::clone(&l.ledger)], threads, 120, seed);
    }
}

proptest! {
    // Fewer cases: the checker rereads the whole database in a loop, which
    // on PostgreSQL costs far more than a redb snapshot.
    #![proptest_config(ProptestConfig {
        cases: 3,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn postgres_concurrent_operations_keep_every_invariant(
        threads in 2usize..=8,
        seed in any::<u64>(),
    ) {
        let l = Backend::Postgres.fresh();
        run(&[Arc::clone(&l.ledger)], threads, 120, seed);
    }

    #[test]
    fn two_postgres_handles_on_one_database_keep_every_invariant(
        threads in 2usize..=8,
        seed in any::<u64>(),
    ) {
        // Two pools, as two processes would have: nothing shared in memory.
        let url = common::pg::fresh_database();
        let a: Arc<dyn Ledger> = Arc::new(Postgres::connect(&url).unwrap());
        let b: Arc<dyn Ledger> = Arc::new(Postgres::connect(&url).unwrap());
        run(&[a, b], threads, 120, seed);
    }
}

/// Threads racing on what the row locks do not cover until commit: one
/// idempotency key (with the same operation, and with different ones) and
/// the creation of one new account. PostgreSQL resolves these with unique
/// violations and retries; the answers must be the embedded backend's.
fn races(l: Arc<dyn Ledger>) {
    const N: usize = 8;
    let race = |f: Arc<dyn Fn(usize) -> Result<Entry, toka_ledger::Error> + Send + Sync>| {
        let barrier = Arc::new(std::sync::Barrier::new(N));
        let handles: Vec<_> = (0..N)
            .map(|i| {
                let (f, barrier) = (Arc::clone(&f), Arc::clone(&barrier));
                thread::spawn(move || {
                    barrier.wait();
                    f(i)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect::<Vec<_>>()
    };

    // One key, one operation: one entry, every caller gets it.
    let m = Arc::clone(&l);
    let got = race(Arc::new(move |_| m.mint("same", "usd", "new/1", 7)));
    let first = got[0].as_ref().unwrap().clone();
    for g in &got {
        assert_eq!(g.as_ref().unwrap(), &first);
    }
    assert_eq!(l.account("usd", "new/1").unwrap().balance, 7);

    // One key, different operations: one wins, the rest conflict (or
    // replay, when they asked for the winner's operation).
    let m = Arc::clone(&l);
    let got = race(Arc::new(move |i| {
        m.mint("contested", "usd", "new/2", 1 + i as u128)
    }));
    let won: Vec<&Entry> = got.iter().filter_map(|g| g.as_ref().ok()).collect();
    assert_eq!(won.len(), 1, "{got:?}");
    for g in &got {
        if let Err(e) = g {
            assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
        }
    }
    assert_eq!(l.lookup("contested").unwrap().as_ref(), Some(won[0]));

    // Many credits creating one account at once: all land.
    let m = Arc::clone(&l);
    let got = race(Arc::new(move |i| {
        m.transfer(&format!("create-{i}"), "usd", "new/1", "fresh", 1)
    }));
    let landed = got.iter().filter(|g| g.is_ok()).count();
    // new/1 holds 7: seven transfers of 1 succeed, the eighth overdraws.
    assert_eq!(landed, 7, "{got:?}");
    assert_eq!(l.account("usd", "fresh").unwrap().balance, 7);
    let m = Arc::clone(&l);
    let got = race(Arc::new(move |i| {
        m.mint(&format!("open-{i}"), "eur", &format!("x{}", i % 2), 3)
    }));
    assert!(got.iter().all(|g| g.is_ok()), "{got:?}");
    assert_eq!(l.issued("eur").unwrap(), 3 * N as u128);

    let problems = l.check().unwrap();
    assert!(problems.is_empty(), "{problems:#?}");
    // Ids stay gap-free whatever was retried.
    let mut n = 0;
    while l.entry(n + 1).unwrap().is_some() {
        n += 1;
    }
    assert_eq!(n, 2 + 7 + N as u64);
}

#[test]
fn embedded_races_on_keys_and_new_accounts() {
    races(Backend::Embedded.fresh().ledger);
}

#[test]
fn postgres_races_on_keys_and_new_accounts() {
    let l = Arc::new(Postgres::connect(&common::pg::fresh_database()).unwrap());
    races(Arc::clone(&l) as Arc<dyn Ledger>);
    // Timing decides how many collide, so this only reports.
    eprintln!("postgres races: {} retries", l.retries());
}

fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}
