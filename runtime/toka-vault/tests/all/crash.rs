//! SIGKILL in the middle of writes and re-keyings: the test binary re-executes itself as a
//! child that writes (or re-keys) in a loop, kills it at a random moment, and checks that the
//! vault opens and every blob reads back.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use std::{env, thread};

use sha2::{Digest, Sha256};
use toka_vault::{Error, Limits, Vault};

use crate::{blob_file_names, key};

/// Set (to the vault directory) only in the re-executed writer child.
const CHILD_ENV: &str = "TOKA_VAULT_CRASH_CHILD_DIR";
/// Set (to the vault directory) only in the re-executed re-keying child.
const REKEY_CHILD_ENV: &str = "TOKA_VAULT_REKEY_CHILD_DIR";
/// The keys the re-keying child switches between; the parent cannot know which is current.
const REKEY_KEYS: [u8; 2] = [7, 8];
/// The child prints this once the vault is open, and `DONE` after each committed operation.
const READY: &str = "TOKA-VAULT-CHILD-READY";
const DONE: &str = "TOKA-VAULT-CHILD-DONE";
const ROUNDS: usize = 20;
const NAMESPACES: [&str; 2] = ["crash-a", "crash-b"];
const NAMES: u64 = 4;
/// Blob sizes: large enough that a kill often lands inside the file writes.
const MIN_LEN: usize = 128 << 10;
const MAX_LEN: usize = 1 << 20;

/// The writer half of `sigkill_during_writes_leaves_a_readable_vault`. In a normal run the
/// variable is unset and this returns at once; the parent runs it with the variable set.
#[test]
fn crash_child() {
    let Some(dir) = env::var_os(CHILD_ENV) else {
        return;
    };
    write_until_killed(Path::new(&dir));
}

fn write_until_killed(dir: &Path) -> ! {
    let pool = pool();
    let vault = Vault::open(dir, key(7)).expect("child opens the vault");
    let mut stdout = std::io::stdout();
    writeln!(stdout, "\n{READY}").unwrap();
    stdout.flush().unwrap();

    let limits = Limits {
        max_blob_bytes: MAX_LEN as u64,
        quota_bytes: u64::MAX,
    };
    let mut rng = getrandom::u64().unwrap() | 1;
    loop {
        let r = xorshift(&mut rng);
        let namespace = NAMESPACES[(r % 2) as usize];
        let name = format!("big/{}", (r >> 8) % NAMES);
        if (r >> 16).is_multiple_of(8) {
            vault.delete(namespace, &name).unwrap();
        } else {
            let data = content(&pool, xorshift(&mut rng));
            vault
                .put(namespace, &name, "application/octet-stream", &data, &limits)
                .unwrap();
        }
        writeln!(stdout, "{DONE}").unwrap();
        stdout.flush().unwrap();
    }
}

#[test]
fn sigkill_during_writes_leaves_a_readable_vault() {
    let tmp = tempfile::tempdir().unwrap();
    let pool = pool();
    let mut rng = getrandom::u64().unwrap() | 1;
    let mut blobs_seen = 0;

    for round in 0..ROUNDS {
        kill_mid_operation("crash::crash_child", CHILD_ENV, tmp.path(), &mut rng, round);
        blobs_seen += check_vault(tmp.path(), &pool, round);
    }
    assert!(blobs_seen > 0, "the children never committed a write");
}

/// The re-keying half of `sigkill_during_rekey_leaves_the_vault_under_one_key`, run like
/// [`crash_child`].
#[test]
fn rekey_child() {
    let Some(dir) = env::var_os(REKEY_CHILD_ENV) else {
        return;
    };
    rekey_until_killed(Path::new(&dir));
}

fn rekey_until_killed(dir: &Path) -> ! {
    let mut current = current_key(dir, usize::MAX);
    let mut vault = Vault::open(dir, key(current)).expect("child opens the vault");
    let mut stdout = std::io::stdout();
    writeln!(stdout, "\n{READY}").unwrap();
    stdout.flush().unwrap();
    loop {
        let next = REKEY_KEYS[usize::from(current == REKEY_KEYS[0])];
        vault.rekey(key(next)).unwrap();
        current = next;
        writeln!(stdout, "{DONE}").unwrap();
        stdout.flush().unwrap();
    }
}

/// Which of [`REKEY_KEYS`] the vault in `dir` is under; exactly one must be.
fn current_key(dir: &Path, round: usize) -> u8 {
    let matching: Vec<u8> = REKEY_KEYS
        .into_iter()
        .filter(|&k| Vault::key_matches(dir, &key(k)).unwrap() == Some(true))
        .collect();
    assert_eq!(
        matching.len(),
        1,
        "round {round}: keys matching: {matching:?}"
    );
    matching[0]
}

#[test]
fn sigkill_during_rekey_leaves_the_vault_under_one_key() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pool = pool();
    let mut rng = getrandom::u64().unwrap() | 1;
    let limits = Limits {
        max_blob_bytes: MAX_LEN as u64,
        quota_bytes: u64::MAX,
    };
    // A few MiB over two namespaces, so a kill usually lands among the blob writes.
    let mut expected = Vec::new();
    let vault = Vault::open(dir, key(REKEY_KEYS[0])).unwrap();
    for i in 0..6 {
        let (namespace, name) = (NAMESPACES[i % 2], format!("blob/{i}"));
        let data = content(&pool, xorshift(&mut rng));
        vault.put(namespace, &name, "", &data, &limits).unwrap();
        expected.push((namespace, name, data));
    }
    drop(vault);

    let mut keys_seen = [0; 2];
    // Rounds killed with the old and new files side by side, i.e. inside a rekey.
    let mut mid_rekey = 0;
    for round in 0..ROUNDS {
        kill_mid_operation("crash::rekey_child", REKEY_CHILD_ENV, dir, &mut rng, round);
        mid_rekey += usize::from(blob_file_names(dir).len() > expected.len());

        let current = current_key(dir, round);
        let other = REKEY_KEYS[usize::from(current == REKEY_KEYS[0])];
        keys_seen[usize::from(current == REKEY_KEYS[1])] += 1;
        assert!(
            matches!(Vault::open(dir, key(other)), Err(Error::WrongKey { .. })),
            "round {round}: the other key opens it too"
        );
        let vault = Vault::open(dir, key(current))
            .unwrap_or_else(|e| panic!("round {round}: reopen after SIGKILL failed: {e}"));
        for (namespace, name, data) in &expected {
            let (_, got) = vault
                .get(namespace, name)
                .unwrap_or_else(|e| panic!("round {round}: {namespace}/{name}: {e}"))
                .unwrap_or_else(|| panic!("round {round}: {namespace}/{name} lost"));
            assert!(got == *data, "round {round}: {namespace}/{name} mangled");
        }
        assert_eq!(
            blob_file_names(dir).len(),
            expected.len(),
            "round {round}: leftovers after open"
        );
    }
    eprintln!(
        "rounds ending under key 7: {}, key 8: {}; killed inside a rekey: {mid_rekey}",
        keys_seen[0], keys_seen[1]
    );
}

/// Runs the child test `child` with `env` set to `dir`, lets it complete a few operations,
/// timing the last one, then kills it at a random point within the next: the kill lands
/// anywhere in an operation, whatever the machine's speed, without a fixed sleep.
fn kill_mid_operation(child: &str, env: &str, dir: &Path, rng: &mut u64, round: usize) {
    let mut child = Command::new(env::current_exe().unwrap())
        .args([child, "--exact", "--nocapture", "--test-threads=1"])
        .env(env, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok);
    let ready = lines.any(|line| line == READY);
    assert!(
        ready,
        "round {round}: child exited before ready: {:?}",
        child.wait()
    );

    let mut op_time = Duration::ZERO;
    let mut last = Instant::now();
    for _ in 0..1 + xorshift(rng) % 3 {
        let line = lines.find(|line| line == DONE);
        assert!(
            line.is_some(),
            "round {round}: child died: {:?}",
            child.wait()
        );
        op_time = last.elapsed();
        last = Instant::now();
    }
    let nanos = u64::try_from(op_time.as_nanos()).unwrap().max(1);
    thread::sleep(Duration::from_nanos(xorshift(rng) % nanos));
    // `Child::kill` is SIGKILL on unix: no destructors, no flushing, nothing.
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(
        !status.success(),
        "round {round}: child was not killed: {status:?}"
    );
}

/// Opens the vault left by a killed child and reads every blob; returns how many there are.
fn check_vault(dir: &Path, pool: &[u8], round: usize) -> usize {
    let vault = Vault::open(dir, key(7))
        .unwrap_or_else(|e| panic!("round {round}: reopen after SIGKILL failed: {e}"));
    let mut count = 0;
    for namespace in vault.namespaces().unwrap() {
        for entry in vault.list(&namespace).unwrap() {
            let (got, data) = vault
                .get(&namespace, &entry.name)
                .unwrap_or_else(|e| panic!("round {round}: {namespace}/{}: {e}", entry.name))
                .unwrap_or_else(|| panic!("round {round}: listed blob missing"));
            assert_eq!(got, entry);
            assert_eq!(data.len() as u64, entry.size);
            assert_eq!(<[u8; 32]>::from(Sha256::digest(&data)), entry.sha256);
            // Independent of the vault's own bookkeeping: the content is what was written.
            let seed = u64::from_le_bytes(data[..8].try_into().unwrap());
            assert!(
                data == content(pool, seed),
                "round {round}: content mangled"
            );
            count += 1;
        }
    }
    // Open removed whatever the kill left behind: exactly one file per blob remains.
    assert_eq!(
        blob_file_names(dir).len(),
        count,
        "round {round}: leftovers after open"
    );
    assert!(!dir.join("manifest.tmp").exists());
    count
}

/// Random-looking bytes both processes derive the same way, generated once: slicing it keeps
/// the child's time in the vault rather than in making test data.
fn pool() -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15;
    (0..(MAX_LEN + 4096) / 8)
        .flat_map(|_| xorshift(&mut state).to_le_bytes())
        .collect()
}

/// Self-describing content: the seed, then a stretch of the pool both chosen by it.
fn content(pool: &[u8], seed: u64) -> Vec<u8> {
    let len = MIN_LEN + (seed % (MAX_LEN - MIN_LEN) as u64) as usize;
    let start = ((seed >> 32) % 4096) as usize;
    let mut data = seed.to_le_bytes().to_vec();
    data.extend_from_slice(&pool[start..start + len - 8]);
    data
}

fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}
