//! End-to-end tests of the operator commands for the capabilities:
//! `toka secrets`, `toka vault`, `toka keygen` / `sign` / `verify`.
//!
//! Every command runs with `RUST_LOG=debug`, `HOME` and `XDG_CONFIG_HOME`
//! inside a temp dir and `TOKA_MASTER_KEY` unset unless a test sets it, so
//! nothing touches the real home directory. The crash tests SIGKILL a command
//! at a random moment and check that the stores are still whole.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn command(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_toka"));
    cmd.args(args)
        .current_dir(dir)
        .env("RUST_LOG", "debug")
        .env("RUST_BACKTRACE", "0")
        .env("NO_COLOR", "1")
        .env("HOME", dir)
        .env("XDG_CONFIG_HOME", dir.join("xdg"))
        .env_remove("TOKA_MASTER_KEY");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Runs `toka` in `dir` with `stdin` piped in (empty if `None`).
fn toka_with(dir: &Path, args: &[&str], env: &[(&str, &str)], stdin: Option<&[u8]>) -> Output {
    let mut child = command(dir, args, env)
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

fn toka(dir: &Path, args: &[&str]) -> Output {
    toka_with(dir, args, &[], None)
}

/// Starts `toka` for a crash test, its output discarded.
fn spawn(dir: &Path, args: &[&str], env: &[(&str, &str)], stdin: &[u8]) -> Child {
    let mut child = command(dir, args, env)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn toka");
    let mut pipe = child.stdin.take().unwrap();
    // Small enough for the pipe buffer; a child already gone is fine.
    let _ = pipe.write_all(stdin);
    child
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[track_caller]
fn ok(out: &Output) -> &Output {
    assert_eq!(out.status.code(), Some(0), "{}", text(out));
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&ok(out).stdout).into_owned()
}

/// A config in `dir` with a store, a key file and a vault, all inside `dir`.
fn write_config(dir: &Path) -> String {
    let path = dir.join("toka.toml");
    std::fs::write(
        &path,
        "[secrets]\npath = \"secrets.db\"\nkey_file = \"keys/master.key\"\n\n[vault]\npath = \"vault\"\n",
    )
    .unwrap();
    path.display().to_string()
}

fn key_file(dir: &Path) -> PathBuf {
    dir.join("keys/master.key")
}

fn pending_key_file(dir: &Path) -> PathBuf {
    dir.join("keys/master.key.new")
}

/// A valid master key that opens nothing here.
const OTHER_KEY: &str = "T3RoZXIta2V5LW9mLWV4YWN0bHktMzItYnl0ZXMhISE=";

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(path) = pending.pop() {
        if path.is_dir() {
            pending.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else {
            files.push(path);
        }
    }
    files
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// xorshift64: enough randomness for kill timings without a `rand` dependency.
struct Rng(u64);

impl Rng {
    fn from_time(what: &str) -> Self {
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            | 1;
        eprintln!("{what}: seed {seed}");
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn init(dir: &Path, cfg: &str) {
    ok(&toka(dir, &["secrets", "init", "--config", cfg]));
}

fn set(dir: &Path, cfg: &str, name: &str, value: &[u8]) {
    ok(&toka_with(
        dir,
        &["secrets", "set", name, "--config", cfg],
        &[],
        Some(value),
    ));
}

fn get(dir: &Path, cfg: &str, name: &str) -> Output {
    toka(dir, &["secrets", "get", name, "--config", cfg])
}

#[test]
fn secrets_round_trip_and_the_value_never_leaks() {
    const VALUE: &[u8] = b"PLAINTEXT-canary-5be1c0d2-hunter2";
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cfg = write_config(dir);
    let mut outputs = Vec::new();

    let out = toka(dir, &["secrets", "init", "--config", &cfg]);
    let shown = stdout(&out);
    assert!(
        shown.contains("master.key") && shown.contains("secrets.db"),
        "{shown}"
    );
    let key = std::fs::read_to_string(key_file(dir)).unwrap();
    assert!(!text(&out).contains(key.trim()), "init printed the key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(key_file(dir))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "key file mode {mode:o}");
    }
    let again = toka(dir, &["secrets", "init", "--config", &cfg]);
    assert_eq!(again.status.code(), Some(2), "{}", text(&again));
    assert_eq!(std::fs::read_to_string(key_file(dir)).unwrap(), key);
    outputs.push(out);

    // One trailing newline is the shell's, not the value's.
    let value_line = [VALUE, b"\n"].concat();
    let out = toka_with(
        dir,
        &["secrets", "set", "api/token", "--config", &cfg],
        &[],
        Some(&value_line),
    );
    ok(&out);
    outputs.push(out);
    set(dir, &cfg, "two-newlines", b"x\n\n");
    set(dir, &cfg, "empty", b"");

    let out = get(dir, &cfg, "api/token");
    assert_eq!(ok(&out).stdout, VALUE, "raw value, nothing added");
    outputs.push(out);
    assert_eq!(ok(&get(dir, &cfg, "two-newlines")).stdout, b"x\n");
    assert_eq!(ok(&get(dir, &cfg, "empty")).stdout, b"");

    let out = toka(dir, &["secrets", "list", "--config", &cfg]);
    assert_eq!(stdout(&out), "api/token\nempty\ntwo-newlines\n");
    outputs.push(out);

    let out = toka_with(
        dir,
        &["secrets", "get", "api/token", "--config", &cfg],
        &[("TOKA_MASTER_KEY", OTHER_KEY)],
        None,
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(out.stdout.is_empty(), "no garbage on stdout");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("wrong key") && err.contains("TOKA_MASTER_KEY"),
        "{err}"
    );
    outputs.push(out);

    let out = toka(dir, &["secrets", "rm", "two-newlines", "--config", &cfg]);
    ok(&out);
    let out = get(dir, &cfg, "two-newlines");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("no secret named two-newlines"));
    let out = toka(dir, &["secrets", "rm", "two-newlines", "--config", &cfg]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert_eq!(
        stdout(&toka(dir, &["secrets", "list", "--config", &cfg])),
        "api/token\nempty\n"
    );

    let out = toka(dir, &["secrets", "set", "../bad", "--config", &cfg]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("invalid secret name"), "{}", text(&out));

    for out in &outputs {
        assert!(!contains(&out.stderr, VALUE), "{}", text(out));
    }
    let db_files = files_under(&dir.join("secrets.db"));
    assert!(!db_files.is_empty());
    for file in db_files {
        let bytes = std::fs::read(&file).unwrap();
        assert!(!contains(&bytes, VALUE), "plaintext in {}", file.display());
    }
}

#[test]
fn secrets_commands_explain_missing_configuration() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cfg = dir.join("bare.toml");
    std::fs::write(&cfg, "").unwrap();
    let cfg = cfg.display().to_string();
    let out = toka(dir, &["secrets", "list", "--config", &cfg]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("no secret store configured: set [secrets] path"),
        "{}",
        text(&out)
    );

    // Configured but never initialised.
    let cfg = write_config(dir);
    let out = toka(dir, &["secrets", "list", "--config", &cfg]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("toka secrets init"), "{}", text(&out));

    // Without a key_file, the default lives under XDG_CONFIG_HOME.
    std::fs::write(dir.join("default.toml"), "[secrets]\npath = \"d.db\"\n").unwrap();
    ok(&toka(dir, &["secrets", "init", "--config", "default.toml"]));
    assert!(dir.join("xdg/toka/master.key").is_file());
}

#[test]
fn rotate_key_switches_keys_and_keeps_values() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cfg = write_config(dir);
    init(dir, &cfg);
    for i in 0..5 {
        set(
            dir,
            &cfg,
            &format!("s/{i}"),
            format!("value-{i}").as_bytes(),
        );
    }
    let old = std::fs::read_to_string(key_file(dir)).unwrap();

    let out = toka(dir, &["secrets", "rotate-key", "--config", &cfg]);
    let new = std::fs::read_to_string(key_file(dir)).unwrap();
    assert_ne!(old, new);
    assert!(
        !text(&out).contains(new.trim()),
        "a key file's key is not printed"
    );
    assert!(stdout(&out).contains("rotated 5 secret(s)"));
    assert!(!pending_key_file(dir).exists());

    let with_old = toka_with(
        dir,
        &["secrets", "list", "--config", &cfg],
        &[("TOKA_MASTER_KEY", old.trim())],
        None,
    );
    assert_eq!(with_old.status.code(), Some(2), "{}", text(&with_old));
    assert!(text(&with_old).contains("wrong key"));
    for i in 0..5 {
        let out = get(dir, &cfg, &format!("s/{i}"));
        assert_eq!(ok(&out).stdout, format!("value-{i}").as_bytes());
    }
}

#[test]
fn rotate_key_from_the_environment_prints_the_new_key_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cfg = write_config(dir);
    let env = [("TOKA_MASTER_KEY", OTHER_KEY)];
    ok(&toka_with(
        dir,
        &["secrets", "init", "--config", &cfg],
        &env,
        None,
    ));
    assert!(!key_file(dir).exists(), "the env key needs no file");
    ok(&toka_with(
        dir,
        &["secrets", "set", "a", "--config", &cfg],
        &env,
        Some(b"alpha"),
    ));

    let out = toka_with(
        dir,
        &["secrets", "rotate-key", "--config", &cfg],
        &env,
        None,
    );
    let new = stdout(&out);
    let new = new.trim();
    assert_eq!(new.len(), 44, "one base64 key on stdout: {new}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("must replace TOKA_MASTER_KEY"),
        "{}",
        text(&out)
    );
    let get_with = |key: &str| {
        toka_with(
            dir,
            &["secrets", "get", "a", "--config", &cfg],
            &[("TOKA_MASTER_KEY", key)],
            None,
        )
    };
    assert_eq!(get_with(OTHER_KEY).status.code(), Some(2));
    assert_eq!(ok(&get_with(new)).stdout, b"alpha");
}

#[test]
fn rotate_key_refuses_to_strand_vault_blobs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cfg = write_config(dir);
    init(dir, &cfg);
    set(dir, &cfg, "a", b"alpha");
    ok(&toka_with(
        dir,
        &["vault", "put", "ns", "x", "--config", &cfg],
        &[],
        Some(b"data"),
    ));
    let key = std::fs::read_to_string(key_file(dir)).unwrap();
    let out = toka(dir, &["secrets", "rotate-key", "--config", &cfg]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("cannot be re-keyed"), "{}", text(&out));
    assert_eq!(std::fs::read_to_string(key_file(dir)).unwrap(), key);
    assert!(!pending_key_file(dir).exists());

    // Once the vault is empty, rotation goes ahead and the vault follows.
    ok(&toka(dir, &["vault", "rm", "ns", "x", "--config", &cfg]));
    ok(&toka(dir, &["secrets", "rotate-key", "--config", &cfg]));
    ok(&toka_with(
        dir,
        &["vault", "put", "ns", "y", "--config", &cfg],
        &[],
        Some(b"data"),
    ));
    assert_eq!(
        ok(&toka(dir, &["vault", "get", "ns", "y", "--config", &cfg])).stdout,
        b"data"
    );
    assert_eq!(ok(&get(dir, &cfg, "a")).stdout, b"alpha");
}

/// The two states a killed `rotate-key` can leave a `.new` key in, made by
/// hand: each is settled by the next command, keeping the key that works.
#[test]
fn interrupted_rotation_is_settled_by_the_next_command() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cfg = write_config(dir);
    init(dir, &cfg);
    set(dir, &cfg, "a", b"alpha");
    let old = std::fs::read(key_file(dir)).unwrap();

    // Killed before the store changed: the new key is stale (here truncated).
    std::fs::write(pending_key_file(dir), b"dHJ1bmNh").unwrap();
    assert_eq!(ok(&get(dir, &cfg, "a")).stdout, b"alpha");
    assert!(!pending_key_file(dir).exists());
    assert_eq!(std::fs::read(key_file(dir)).unwrap(), old);

    // Killed after the store changed, before the rename.
    ok(&toka(dir, &["secrets", "rotate-key", "--config", &cfg]));
    let new = std::fs::read(key_file(dir)).unwrap();
    std::fs::write(pending_key_file(dir), &new).unwrap();
    std::fs::write(key_file(dir), &old).unwrap();
    let out = toka(dir, &["secrets", "list", "--config", &cfg]);
    assert_eq!(stdout(&out), "a\n");
    assert!(
        text(&out).contains("completed an interrupted"),
        "{}",
        text(&out)
    );
    assert!(!pending_key_file(dir).exists());
    assert_eq!(std::fs::read(key_file(dir)).unwrap(), new);
    assert_eq!(ok(&get(dir, &cfg, "a")).stdout, b"alpha");
}

#[test]
fn secrets_set_survives_sigkill() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cfg = write_config(dir);
    init(dir, &cfg);
    let mut rng = Rng::from_time("secrets_set_survives_sigkill");
    let mut done: Vec<(String, Vec<u8>)> = Vec::new();
    let mut current: Option<Vec<u8>> = None;
    // rounds that ended with the old value, with the new one
    let mut seen = [0; 2];

    for round in 0..24 {
        let value = format!("crash-round-{round}-").repeat(40).into_bytes();
        let mut child = spawn(
            dir,
            &["secrets", "set", "crash", "--config", &cfg],
            &[],
            &value,
        );
        std::thread::sleep(Duration::from_millis(rng.below(30)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();

        let names = stdout(&toka(dir, &["secrets", "list", "--config", &cfg]));
        let out = get(dir, &cfg, "crash");
        if out.status.code() == Some(0) {
            assert!(
                Some(&out.stdout) == current.as_ref() || out.stdout == value,
                "round {round}: neither the old nor the new value"
            );
            assert!(names.lines().any(|n| n == "crash"), "round {round}");
            seen[usize::from(out.stdout == value)] += 1;
            current = Some(out.stdout);
        } else {
            assert!(current.is_none(), "round {round}: lost: {}", text(&out));
            assert!(
                text(&out).contains("no secret named crash"),
                "{}",
                text(&out)
            );
            seen[0] += 1;
        }
        for (name, value) in &done {
            assert!(names.lines().any(|n| n == name), "round {round}: {name}");
            let out = get(dir, &cfg, name);
            assert_eq!(&ok(&out).stdout, value, "round {round}: {name}");
        }
        let name = format!("done/{round}");
        let value = format!("done-{round}-").repeat(20).into_bytes();
        set(dir, &cfg, &name, &value);
        done.push((name, value));
    }
    eprintln!("old value kept {}, new value stored {}", seen[0], seen[1]);
}

/// Deterministic 2 MiB of content for one round.
fn blob(round: u64) -> Vec<u8> {
    let mut rng = Rng(round.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    (0..(2 << 20) / 8)
        .flat_map(|_| rng.next().to_le_bytes())
        .collect()
}

#[test]
fn vault_put_survives_sigkill() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cfg = write_config(dir);
    init(dir, &cfg);
    let mut rng = Rng::from_time("vault_put_survives_sigkill");
    let put = |name: &str, file: &Path| {
        ok(&toka(
            dir,
            &[
                "vault",
                "put",
                "ns",
                name,
                "--file",
                file.to_str().unwrap(),
                "--config",
                &cfg,
            ],
        ));
    };
    let vault_get = |name: &str| toka(dir, &["vault", "get", "ns", name, "--config", &cfg]);

    let mut done: Vec<(String, Vec<u8>)> = Vec::new();
    let mut current: Option<Vec<u8>> = None;
    // rounds that ended with the old blob, with the new one
    let mut seen = [0; 2];
    let file = dir.join("blob.bin");
    for round in 0..24 {
        let content = blob(round);
        std::fs::write(&file, &content).unwrap();
        let mut child = spawn(
            dir,
            &[
                "vault",
                "put",
                "ns",
                "big",
                "--file",
                file.to_str().unwrap(),
                "--config",
                &cfg,
            ],
            &[],
            b"",
        );
        std::thread::sleep(Duration::from_millis(rng.below(30)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();

        if round == 0 && !dir.join("vault/manifest").exists() {
            // Killed before the vault existed: nothing to check yet.
            assert!(current.is_none());
        } else {
            let listing = stdout(&toka(dir, &["vault", "ls", "ns", "--config", &cfg]));
            let out = vault_get("big");
            if out.status.code() == Some(0) {
                assert!(
                    Some(&out.stdout) == current.as_ref() || out.stdout == content,
                    "round {round}: neither the old nor the new blob"
                );
                assert!(listing.contains("big"), "{listing}");
                seen[usize::from(out.stdout == content)] += 1;
                current = Some(out.stdout);
            } else {
                assert!(current.is_none(), "round {round}: lost: {}", text(&out));
                assert!(text(&out).contains("no blob big"), "{}", text(&out));
                seen[0] += 1;
            }
            for (name, content) in &done {
                assert!(listing.contains(name.as_str()), "round {round}: {name}");
                assert_eq!(&ok(&vault_get(name)).stdout, content, "round {round}");
            }
        }
        let name = format!("done-{round}");
        let small = blob(1000 + round)[..64 << 10].to_vec();
        let small_file = dir.join("small.bin");
        std::fs::write(&small_file, &small).unwrap();
        put(&name, &small_file);
        done.push((name, small));
    }
    eprintln!("old blob kept {}, new blob stored {}", seen[0], seen[1]);
    // Killed writes leave nothing behind once the vault is reopened.
    let leftovers: Vec<_> = files_under(&dir.join("vault/blobs"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn rotate_key_survives_sigkill() {
    const SECRETS: usize = 16;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cfg = write_config(dir);
    init(dir, &cfg);
    let value = |i: usize| format!("secret-{i}-").repeat(60).into_bytes();
    for i in 0..SECRETS {
        set(dir, &cfg, &format!("s/{i}"), &value(i));
    }
    let opens = |key: &[u8]| {
        let Ok(key) = std::str::from_utf8(key) else {
            return false;
        };
        let out = toka_with(
            dir,
            &["secrets", "list", "--config", &cfg],
            &[("TOKA_MASTER_KEY", key.trim())],
            None,
        );
        out.status.code() == Some(0)
    };

    // How long a whole rotation takes here, so kills spread over all of it.
    let started = std::time::Instant::now();
    ok(&toka(dir, &["secrets", "rotate-key", "--config", &cfg]));
    let span = (started.elapsed().as_millis() as u64 * 3 / 2).max(30);
    let mut rng = Rng::from_time("rotate_key_survives_sigkill");
    eprintln!("a rotation takes about {}ms", span * 2 / 3);

    // not rotated, rotated, stale `.new`, committed `.new`
    let mut seen = [0; 4];
    for round in 0..24 {
        let old = std::fs::read(key_file(dir)).unwrap();
        let mut child = spawn(dir, &["secrets", "rotate-key", "--config", &cfg], &[], b"");
        std::thread::sleep(Duration::from_millis(rng.below(span)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();

        let current = std::fs::read(key_file(dir)).unwrap();
        match std::fs::read(pending_key_file(dir)) {
            Err(_) => {
                assert!(
                    opens(&current),
                    "round {round}: the key file opens the store"
                );
                seen[usize::from(current != old)] += 1;
            }
            Ok(pending) => {
                assert_eq!(current, old, "round {round}: renamed yet still pending");
                let (with_old, with_new) = (opens(&current), opens(&pending));
                assert!(
                    with_old != with_new,
                    "round {round}: exactly one key opens the store \
                     (old: {with_old}, new: {with_new})"
                );
                seen[if with_old { 2 } else { 3 }] += 1;
            }
        }
        // The next command settles any `.new`; then every value is intact.
        let names = stdout(&toka(dir, &["secrets", "list", "--config", &cfg]));
        assert_eq!(names.lines().count(), SECRETS, "round {round}");
        assert!(!pending_key_file(dir).exists(), "round {round}");
        for i in 0..SECRETS {
            let out = get(dir, &cfg, &format!("s/{i}"));
            assert_eq!(ok(&out).stdout, value(i), "round {round}: s/{i}");
        }
    }
    eprintln!(
        "not rotated {}, rotated {}, stale new key {}, committed new key {}",
        seen[0], seen[1], seen[2], seen[3]
    );
}

#[test]
fn vault_round_trip_and_tampering_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cfg = write_config(dir);
    init(dir, &cfg);

    let out = toka(dir, &["vault", "ls", "--config", &cfg]);
    assert_eq!(out.status.code(), Some(2), "no vault yet: {}", text(&out));

    let data = b"{\"report\": 42}".repeat(100);
    let file = dir.join("report.json");
    std::fs::write(&file, &data).unwrap();
    let f = file.to_str().unwrap();
    ok(&toka(
        dir,
        &[
            "vault",
            "put",
            "agent-a",
            "reports/today.json",
            "--file",
            f,
            "--content-type",
            "application/json",
            "--config",
            &cfg,
        ],
    ));
    ok(&toka_with(
        dir,
        &["vault", "put", "agent-b", "note.txt", "--config", &cfg],
        &[],
        Some(b"hello"),
    ));

    assert_eq!(
        stdout(&toka(dir, &["vault", "ls", "--config", &cfg])),
        "agent-a\nagent-b\n"
    );
    let listing = stdout(&toka(dir, &["vault", "ls", "agent-a", "--config", &cfg]));
    let row = listing.lines().nth(1).unwrap_or_default();
    assert!(
        row.contains("reports/today.json")
            && row.contains(&data.len().to_string())
            && row.contains("application/json"),
        "{listing}"
    );
    let sha = row.split_whitespace().last().unwrap();
    assert_eq!(sha.len(), 12, "{listing}");
    let updated = row.split_whitespace().nth(3).unwrap();
    assert!(humantime::parse_rfc3339(updated).is_ok(), "{listing}");

    let get = |ns: &str, name: &str| toka(dir, &["vault", "get", ns, name, "--config", &cfg]);
    assert_eq!(ok(&get("agent-a", "reports/today.json")).stdout, data);
    assert_eq!(ok(&get("agent-b", "note.txt")).stdout, b"hello");

    ok(&toka(
        dir,
        &["vault", "rm", "agent-b", "note.txt", "--config", &cfg],
    ));
    let out = get("agent-b", "note.txt");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert_eq!(
        stdout(&toka(dir, &["vault", "ls", "--config", &cfg])),
        "agent-a\n"
    );

    let wrong = toka_with(
        dir,
        &[
            "vault",
            "get",
            "agent-a",
            "reports/today.json",
            "--config",
            &cfg,
        ],
        &[("TOKA_MASTER_KEY", OTHER_KEY)],
        None,
    );
    assert_eq!(wrong.status.code(), Some(2), "{}", text(&wrong));
    assert!(text(&wrong).contains("wrong key"), "{}", text(&wrong));
    assert!(wrong.stdout.is_empty());

    let blobs = files_under(&dir.join("vault/blobs"));
    assert_eq!(blobs.len(), 1, "{blobs:?}");
    let mut bytes = std::fs::read(&blobs[0]).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&blobs[0], bytes).unwrap();
    let out = get("agent-a", "reports/today.json");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(out.stdout.is_empty(), "no data from a corrupt blob");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("corrupt"),
        "{}",
        text(&out)
    );
}

#[test]
fn keygen_sign_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let wasm = dir.join("logger.wasm");
    std::fs::copy(root().join("target/modules/logger.wasm"), &wasm).unwrap();
    let w = wasm.to_str().unwrap();

    let out = toka(dir, &["keygen"]);
    let shown = stdout(&out);
    let public = std::fs::read_to_string(dir.join("toka-signing.pub")).unwrap();
    assert!(public.starts_with("toka-ed25519-public:"), "{public}");
    assert!(shown.contains(public.trim()), "{shown}");
    let secret = std::fs::read_to_string(dir.join("toka-signing.key")).unwrap();
    assert!(secret.starts_with("toka-ed25519-secret:"));
    assert!(
        !shown.contains(secret.trim()),
        "keygen printed the secret key"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("toka-signing.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
    }
    let again = toka(dir, &["keygen"]);
    assert_eq!(again.status.code(), Some(2), "{}", text(&again));
    assert_eq!(
        std::fs::read_to_string(dir.join("toka-signing.key")).unwrap(),
        secret
    );
    ok(&toka(dir, &["keygen", "--out", "other"]));

    ok(&toka(dir, &["sign", "--key", "toka-signing.key", w]));
    assert!(dir.join("logger.wasm.sig").is_file());

    let out = toka(dir, &["verify", "--key", "toka-signing.pub", w]);
    let shown = stdout(&out);
    assert!(shown.starts_with(&format!("ok {w} signed by ")), "{shown}");
    // The key as text, and through a config's [trust] trusted_keys.
    ok(&toka(dir, &["verify", "--key", public.trim(), w]));
    std::fs::write(
        dir.join("trust.toml"),
        "[trust]\ntrusted_keys = [\"toka-signing.pub\"]\n",
    )
    .unwrap();
    ok(&toka(dir, &["verify", "--config", "trust.toml", w]));

    let out = toka(dir, &["verify", "--key", "other.pub", w]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains(w) && text(&out).contains("untrusted"),
        "{}",
        text(&out)
    );

    let unsigned = dir.join("unsigned.wasm");
    std::fs::copy(&wasm, &unsigned).unwrap();
    let u = unsigned.to_str().unwrap();
    let out = toka(dir, &["verify", "--key", "toka-signing.pub", w, u]);
    assert_eq!(out.status.code(), Some(1), "one failure fails the run");
    assert!(text(&out).contains(&format!("ok {w}")), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(u) && err.contains("unsigned"), "{err}");

    let mut bytes = std::fs::read(&wasm).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&wasm, bytes).unwrap();
    let out = toka(dir, &["verify", "--key", "toka-signing.pub", w]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(w) && err.contains("tampered"), "{err}");

    let out = toka(dir, &["verify", w]);
    assert_eq!(out.status.code(), Some(2), "no keys is bad usage");
}
