//! SIGKILL at random moments while writes are acknowledged: the test binary
//! re-executes itself as a writer child (four threads sharing the group
//! commit, over two buckets) that prints `ack ...` after each write
//! returns, kills it, reopens the store and checks every acknowledged write
//! and the bookkeeping, over and over.
//!
//! Each writer thread runs its operations one after another, so when the
//! child dies each thread has at most one write in flight: the one after
//! its last `ack`. That write may or may not have landed; everything
//! acknowledged must have.

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use std::{env, thread};

use toka_kv::{Limits, Outcome, Quota, Store, Write};

/// Set (to the store file) only in the re-executed writer child.
const CHILD_ENV: &str = "TOKA_KV_CRASH_CHILD_STORE";
/// The round, so each child writes keys of its own.
const ROUND_ENV: &str = "TOKA_KV_CRASH_ROUND";
const READY: &str = "TOKA-KV-CHILD-READY";
const ROUNDS: usize = 24;
const THREADS: u64 = 4;

fn bucket(thread: u64) -> String {
    format!("b{}", thread % 2)
}

/// What op `i` of a thread does (every one is acknowledged with a line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    /// Set a key written once: `r/t/i`.
    Set,
    /// Set a key with a one-hour TTL: `r/ttl/t/i`.
    SetTtl,
    /// Set a key that op `i + 3` deletes: `r/d/t/i`.
    SetDoomed,
    /// Delete the key of op `i - 3`.
    Delete,
    /// Increment the thread's counter `r/c/t`.
    Increment,
}

fn op(i: u64) -> Op {
    match i % 10 {
        5 => Op::SetDoomed,
        8 => Op::Delete,
        7 => Op::Increment,
        9 => Op::SetTtl,
        _ => Op::Set,
    }
}

fn key(round: &str, thread: u64, i: u64) -> String {
    match op(i) {
        Op::Set => format!("{round}/{thread}/{i}"),
        Op::SetTtl => format!("{round}/ttl/{thread}/{i}"),
        Op::SetDoomed => format!("{round}/d/{thread}/{i}"),
        Op::Delete => format!("{round}/d/{thread}/{}", i - 3),
        Op::Increment => format!("{round}/c/{thread}"),
    }
}

/// A value both processes derive: 64 bytes and more, naming its key.
fn value(key: &str, i: u64) -> Vec<u8> {
    let mut v = format!("{key}={i};").into_bytes();
    v.resize(64 + (i % 200) as usize, b'x');
    v
}

/// The writer half of `sigkill_never_loses_an_acknowledged_write`; returns
/// at once in a normal run.
#[test]
fn crash_child() {
    let Some(path) = env::var_os(CHILD_ENV) else {
        return;
    };
    let round = env::var(ROUND_ENV).unwrap();
    let store = Arc::new(Store::open(Path::new(&path), Limits::default()).unwrap());
    let out = Arc::new(Mutex::new(std::io::stdout()));
    {
        let mut out = out.lock().unwrap();
        writeln!(out, "\n{READY}").unwrap();
        out.flush().unwrap();
    }
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (store, out, round) = (Arc::clone(&store), Arc::clone(&out), round.clone());
            thread::spawn(move || write_until_killed(&store, &out, &round, t))
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

fn write_until_killed(store: &Store, out: &Mutex<std::io::Stdout>, round: &str, t: u64) {
    let b = bucket(t);
    for i in 0.. {
        let k = key(round, t, i);
        let write = match op(i) {
            Op::Set | Op::SetDoomed => Write::Set {
                key: k.clone(),
                value: value(&k, i),
                ttl_ms: None,
            },
            Op::SetTtl => Write::Set {
                key: k.clone(),
                value: value(&k, i),
                ttl_ms: Some(3_600_000),
            },
            Op::Delete => Write::Delete { key: k.clone() },
            Op::Increment => Write::Increment {
                key: k.clone(),
                delta: 1,
            },
        };
        let answer = store.write(&b, Quota::UNLIMITED, write).unwrap();
        let n = match answer {
            Outcome::Incremented(n) => n,
            _ => 0,
        };
        let mut out = out.lock().unwrap();
        writeln!(out, "ack {t} {i} {n}").unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn sigkill_never_loses_an_acknowledged_write() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("kv.redb");
    let mut rng = getrandom::u64().unwrap() | 1;
    let mut acked_total = 0;
    for round in 0..ROUNDS {
        let (acks, all) = kill_at_random(&path, round, &mut rng);
        acked_total += all.len();
        check(&path, round, &acks, &all);
    }
    eprintln!("{ROUNDS} rounds, {acked_total} acknowledged writes checked");
    assert!(acked_total > 0, "the children never acknowledged a write");
}

/// The last acknowledged op of each thread, and the counter's last value.
type Acks = HashMap<u64, Option<(u64, u64)>>;

/// Runs a writer child for `round`, kills it at a random moment once it is
/// writing, and returns what it acknowledged.
fn kill_at_random(path: &Path, round: usize, rng: &mut u64) -> (Acks, Vec<(u64, u64)>) {
    let mut child = Command::new(env::current_exe().unwrap())
        .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, path)
        .env(ROUND_ENV, round.to_string())
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
    thread::sleep(Duration::from_millis(10 + xorshift(rng) % 400));
    // `Child::kill` is SIGKILL on unix: no destructors, no flushing, nothing.
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(
        !status.success(),
        "round {round}: child was not killed: {status:?}"
    );
    let mut acks: Acks = (0..THREADS).map(|t| (t, None)).collect();
    let mut all = Vec::new();
    for line in reader.join().unwrap() {
        // A line cut short by the kill has fewer fields; it acknowledged nothing.
        let fields: Vec<u64> = line
            .strip_prefix("ack ")
            .map(|l| l.split(' ').filter_map(|f| f.parse().ok()).collect())
            .unwrap_or_default();
        if let [t, i, n] = fields[..] {
            assert_eq!(
                acks[&t].map_or(0, |(last, _)| last + 1),
                i,
                "ops run in order"
            );
            let counter = if op(i) == Op::Increment {
                n
            } else {
                acks[&t].map_or(0, |(_, c)| c)
            };
            acks.insert(t, Some((i, counter)));
            all.push((t, i));
        }
    }
    (acks, all)
}

/// Reopens the store and checks every write `round` acknowledged.
fn check(path: &Path, round: usize, acks: &Acks, all: &[(u64, u64)]) {
    let store = Store::open(path, Limits::default())
        .unwrap_or_else(|e| panic!("round {round}: reopen after SIGKILL failed: {e}"));
    let r = round.to_string();
    let in_flight = |t: u64| acks[&t].map_or(0, |(last, _)| last + 1);
    for &(t, i) in all {
        let b = bucket(t);
        let k = key(&r, t, i);
        let got = store
            .get(&b, &k)
            .unwrap_or_else(|e| panic!("round {round}: {k}: {e}"));
        match op(i) {
            Op::Set | Op::SetTtl => {
                let e = got.unwrap_or_else(|| panic!("round {round}: acknowledged {k} lost"));
                assert_eq!(e.value, value(&k, i), "round {round}: {k} mangled");
                assert_eq!(e.expires_ms.is_some(), op(i) == Op::SetTtl, "{k}");
            }
            Op::SetDoomed => {
                let deleted = all.contains(&(t, i + 3));
                let maybe_deleted = in_flight(t) == i + 3;
                match got {
                    Some(e) => {
                        assert!(!deleted, "round {round}: deleted {k} is back");
                        assert_eq!(e.value, value(&k, i), "round {round}: {k} mangled");
                    }
                    None => assert!(
                        deleted || maybe_deleted,
                        "round {round}: acknowledged {k} lost"
                    ),
                }
            }
            Op::Delete => assert!(got.is_none(), "round {round}: deleted {k} is back"),
            Op::Increment => {}
        }
    }
    for t in 0..THREADS {
        let Some((_, counter)) = acks[&t] else {
            continue;
        };
        let k = format!("{r}/c/{t}");
        let got = store.get(&bucket(t), &k).unwrap();
        let n: u64 = got.map_or(0, |e| String::from_utf8(e.value).unwrap().parse().unwrap());
        let one_more = op(in_flight(t)) == Op::Increment;
        assert!(
            n == counter || (one_more && n == counter + 1),
            "round {round}: counter {k} is {n}, acknowledged {counter}"
        );
    }
    let problems = store.check().unwrap();
    assert!(problems.is_empty(), "round {round}: {problems:#?}");
}

fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}
