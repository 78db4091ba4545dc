//! SIGKILL in the middle of writes: the test binary re-executes itself as a writer child,
//! kills it at a random moment, and checks that the vault opens and every blob reads back.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use std::{env, thread};

use sha2::{Digest, Sha256};
use toka_vault::{Limits, Vault};

use crate::{blob_file_names, key};

/// Set (to the vault directory) only in the re-executed child.
const CHILD_ENV: &str = "TOKA_VAULT_CRASH_CHILD_DIR";
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
    let exe = env::current_exe().unwrap();
    let pool = pool();
    let mut rng = getrandom::u64().unwrap() | 1;
    let mut blobs_seen = 0;

    for round in 0..ROUNDS {
        let mut child = Command::new(&exe)
            .args([
                "crash::crash_child",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, tmp.path())
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

        // Let it complete a few operations, timing the last one, then kill it at a random
        // point within the next: the kill lands anywhere in a put or delete, whatever the
        // machine's speed, without a fixed sleep.
        let mut op_time = Duration::ZERO;
        let mut last = Instant::now();
        for _ in 0..1 + xorshift(&mut rng) % 3 {
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
        thread::sleep(Duration::from_nanos(xorshift(&mut rng) % nanos));
        // `Child::kill` is SIGKILL on unix: no destructors, no flushing, nothing.
        child.kill().unwrap();
        let status = child.wait().unwrap();
        assert!(
            !status.success(),
            "round {round}: child was not killed: {status:?}"
        );

        blobs_seen += check_vault(tmp.path(), &pool, round);
    }
    assert!(blobs_seen > 0, "the children never committed a write");
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
