//! End-to-end tests of the operator commands for the capabilities:
//! `toka secrets`, `toka vault`, `toka keygen` / `sign` / `verify`.
//!
//! Every command runs with `RUST_LOG=debug`, `HOME` and `XDG_CONFIG_HOME`
//! inside a temp dir and `TOKA_MASTER_KEY` unset unless a test sets it, so
//! nothing touches the real home directory. The crash tests SIGKILL a command
//! at a random moment (some at a random moment after a step they recognise in
//! its log) and check that the stores are still whole.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, Output, Stdio};
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

/// Starts `toka` for a crash test and, given a `marker`, returns once a line
/// of its log contains it (or the log ended): to kill it just after that
/// step. The log pipe is returned too, to be held until the kill, so the
/// child never writes to a closed pipe.
fn spawn_logged(
    dir: &Path,
    args: &[&str],
    marker: Option<&str>,
) -> (Child, BufReader<ChildStderr>) {
    let mut child = command(dir, args, &[])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn toka");
    let mut log = BufReader::new(child.stderr.take().unwrap());
    if let Some(marker) = marker {
        let mut line = String::new();
        while log.read_line(&mut line).is_ok_and(|n| n > 0) && !line.contains(marker) {
            line.clear();
        }
    }
    (child, log)
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

fn vault_put(dir: &Path, cfg: &str, namespace: &str, name: &str, data: &[u8]) {
    ok(&toka_with(
        dir,
        &["vault", "put", namespace, name, "--config", cfg],
        &[],
        Some(data),
    ));
}

fn vault_get(dir: &Path, cfg: &str, namespace: &str, name: &str) -> Output {
    toka(dir, &["vault", "get", namespace, name, "--config", cfg])
}

/// Secrets and vault blobs for the rotation tests, in two namespaces.
struct Contents {
    secrets: Vec<(String, Vec<u8>)>,
    blobs: Vec<(&'static str, String, Vec<u8>)>,
}

impl Contents {
    /// `secrets` secrets and `blobs` blobs of `blob_len` bytes each.
    fn new(secrets: usize, blobs: usize, blob_len: usize) -> Self {
        let mut rng = Rng(0x5EED);
        Contents {
            secrets: (0..secrets)
                .map(|i| {
                    (
                        format!("s/{i}"),
                        format!("secret-{i}-").repeat(30).into_bytes(),
                    )
                })
                .collect(),
            blobs: (0..blobs)
                .map(|i| {
                    let data = (0..blob_len / 8 + 1)
                        .flat_map(|_| rng.next().to_le_bytes())
                        .take(blob_len)
                        .collect();
                    (["agent-a", "reports"][i % 2], format!("blob/{i}"), data)
                })
                .collect(),
        }
    }

    /// Stores everything through the CLI.
    fn store(&self, dir: &Path, cfg: &str) {
        for (name, value) in &self.secrets {
            set(dir, cfg, name, value);
        }
        for (namespace, name, data) in &self.blobs {
            vault_put(dir, cfg, namespace, name, data);
        }
    }

    /// Checks that every secret and blob reads back with the key file.
    #[track_caller]
    fn assert_intact(&self, dir: &Path, cfg: &str, when: &str) {
        let names = stdout(&toka(dir, &["secrets", "list", "--config", cfg]));
        assert_eq!(names.lines().count(), self.secrets.len(), "{when}: {names}");
        for (name, value) in &self.secrets {
            assert_eq!(&ok(&get(dir, cfg, name)).stdout, value, "{when}: {name}");
        }
        for (namespace, name, data) in &self.blobs {
            let out = vault_get(dir, cfg, namespace, name);
            assert!(&ok(&out).stdout == data, "{when}: {namespace}/{name}");
        }
    }
}

/// Whether `key` (a key file's contents) opens the secret store and the
/// vault. Given through `TOKA_MASTER_KEY`, so no interrupted rotation is
/// settled on the way.
fn opens(dir: &Path, cfg: &str, key: &[u8]) -> (bool, bool) {
    // A key file torn by a kill opens nothing.
    let Some(key) = std::str::from_utf8(key)
        .ok()
        .map(str::trim)
        .filter(|k| k.len() == 44)
    else {
        return (false, false);
    };
    let try_with = |args: &[&str]| {
        let out = toka_with(dir, args, &[("TOKA_MASTER_KEY", key)], None);
        // Opens, or "wrong key": anything else is a failure of its own.
        match out.status.code() {
            Some(0) => true,
            Some(2) if text(&out).contains("wrong key") => false,
            _ => panic!("{args:?}: {}", text(&out)),
        }
    };
    (
        try_with(&["secrets", "list", "--config", cfg]),
        try_with(&["vault", "ls", "--config", cfg]),
    )
}

/// Copies the directory tree `from` to `to` (which must not exist).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), &dest).unwrap();
        }
    }
}

/// Puts the secret store back as it was in `snapshot` (a [`copy_dir`] of it).
fn restore_store(dir: &Path, snapshot: &Path) {
    std::fs::remove_dir_all(dir.join("secrets.db")).unwrap();
    copy_dir(snapshot, &dir.join("secrets.db"));
}

/// Names of the vault's blob files.
fn vault_blob_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join("vault/blobs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
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
fn rotate_key_reencrypts_the_vault_too() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cfg = write_config(dir);
    init(dir, &cfg);
    let contents = Contents::new(4, 3, 5000);
    contents.store(dir, &cfg);
    vault_put(dir, &cfg, "agent-a", "empty", b"");
    let old = std::fs::read(key_file(dir)).unwrap();
    let old_files = vault_blob_files(dir);

    let out = toka(dir, &["secrets", "rotate-key", "--config", &cfg]);
    assert!(
        stdout(&out).contains("rotated 4 secret(s) and 4 vault blob(s)"),
        "{}",
        text(&out)
    );
    let new = std::fs::read(key_file(dir)).unwrap();
    assert_ne!(old, new);
    assert!(!pending_key_file(dir).exists());
    for key in [&old, &new] {
        let key = String::from_utf8_lossy(key);
        assert!(
            !text(&out).contains(key.trim()),
            "a key was printed or logged"
        );
    }

    contents.assert_intact(dir, &cfg, "after rotate-key");
    assert_eq!(ok(&vault_get(dir, &cfg, "agent-a", "empty")).stdout, b"");
    assert_eq!(opens(dir, &cfg, &new), (true, true));
    assert_eq!(
        opens(dir, &cfg, &old),
        (false, false),
        "the old key opens nothing"
    );
    let new_files = vault_blob_files(dir);
    assert_eq!(new_files.len(), old_files.len(), "one file per blob");
    assert!(
        new_files.iter().all(|f| !old_files.contains(f)),
        "every blob was rewritten to a new file"
    );
}

#[test]
fn rotate_key_from_the_environment_refuses_a_vault_with_blobs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cfg = write_config(dir);
    let env = [("TOKA_MASTER_KEY", OTHER_KEY)];
    let with_env = |args: &[&str], stdin: Option<&[u8]>| toka_with(dir, args, &env, stdin);
    ok(&with_env(&["secrets", "init", "--config", &cfg], None));
    ok(&with_env(
        &["secrets", "set", "a", "--config", &cfg],
        Some(b"alpha"),
    ));
    ok(&with_env(
        &["vault", "put", "ns", "x", "--config", &cfg],
        Some(b"data"),
    ));

    let out = with_env(&["secrets", "rotate-key", "--config", &cfg], None);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(out.stdout.is_empty(), "no new key shown: {}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("holds blobs") && err.contains("key_file"),
        "{err}"
    );
    assert_eq!(opens(dir, &cfg, OTHER_KEY.as_bytes()), (true, true));

    // An empty vault has nothing to strand: it is reset and follows the key.
    ok(&with_env(
        &["vault", "rm", "ns", "x", "--config", &cfg],
        None,
    ));
    let out = with_env(&["secrets", "rotate-key", "--config", &cfg], None);
    let new = stdout(&out);
    let new = new.trim();
    assert_eq!(new.len(), 44, "one base64 key on stdout: {new}");
    let with_new = [("TOKA_MASTER_KEY", new)];
    ok(&toka_with(
        dir,
        &["vault", "put", "ns", "y", "--config", &cfg],
        &with_new,
        Some(b"data"),
    ));
    assert_eq!(opens(dir, &cfg, new.as_bytes()), (true, true));
    assert_eq!(opens(dir, &cfg, OTHER_KEY.as_bytes()), (false, false));
    let out = toka_with(
        dir,
        &["secrets", "get", "a", "--config", &cfg],
        &with_new,
        None,
    );
    assert_eq!(ok(&out).stdout, b"alpha");
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

    // `toka check` (as `toka run`) settles it too before opening anything.
    ok(&toka(dir, &["secrets", "rotate-key", "--config", &cfg]));
    let newer = std::fs::read(key_file(dir)).unwrap();
    std::fs::write(pending_key_file(dir), &newer).unwrap();
    std::fs::write(key_file(dir), &new).unwrap();
    let out = toka(dir, &["check", &cfg]);
    assert!(
        text(&out).contains("completed an interrupted"),
        "{}",
        text(&out)
    );
    assert!(!pending_key_file(dir).exists());
    assert_eq!(std::fs::read(key_file(dir)).unwrap(), newer);
    assert_eq!(ok(&get(dir, &cfg, "a")).stdout, b"alpha");
}

/// The states a `rotate-key` killed in the middle of the vault and store
/// steps leaves, made from real runs by putting back files saved before
/// them: each is rolled forward or back by the next command, so that one
/// key, the key file's, opens both the store and the vault.
#[test]
fn interrupted_rotation_with_a_vault_rolls_forward_or_back() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cfg = write_config(dir);
    init(dir, &cfg);
    let contents = Contents::new(3, 4, 3000);
    contents.store(dir, &cfg);
    let rotate = || {
        ok(&toka(dir, &["secrets", "rotate-key", "--config", &cfg]));
    };
    let read_key = || std::fs::read(key_file(dir)).unwrap();
    let snapshot = |name: &str| {
        let to = dir.join("snapshots").join(name);
        copy_dir(&dir.join("secrets.db"), &to.join("store"));
        copy_dir(&dir.join("vault"), &to.join("vault"));
        to
    };
    // Copies the vault's blob files from `snapshot` back (old files beside
    // the current ones), and its manifest if `manifest`.
    let put_back_vault = |snapshot: &Path, manifest: bool| {
        if manifest {
            std::fs::copy(snapshot.join("vault/manifest"), dir.join("vault/manifest")).unwrap();
        }
        for file in std::fs::read_dir(snapshot.join("vault/blobs")).unwrap() {
            let file = file.unwrap();
            std::fs::copy(file.path(), dir.join("vault/blobs").join(file.file_name())).unwrap();
        }
    };
    // After settling, the key file opens both and `other` opens neither.
    let assert_settled = |when: &str, out: &Output, expect_log: &str, other: &[u8]| {
        assert!(text(out).contains(expect_log), "{when}: {}", text(out));
        assert!(!pending_key_file(dir).exists(), "{when}");
        contents.assert_intact(dir, &cfg, when);
        assert_eq!(opens(dir, &cfg, &read_key()), (true, true), "{when}");
        assert_eq!(opens(dir, &cfg, other), (false, false), "{when}");
        assert_eq!(vault_blob_files(dir).len(), contents.blobs.len(), "{when}");
    };
    let k1 = read_key();

    // 1. Killed right after writing the new key: nothing is under it.
    std::fs::write(pending_key_file(dir), format!("{OTHER_KEY}\n")).unwrap();
    let out = toka(dir, &["vault", "ls", "--config", &cfg]);
    ok(&out);
    assert_settled("unused new key", &out, "rolled back", OTHER_KEY.as_bytes());
    assert_eq!(read_key(), k1);

    // 2. Killed inside the vault's re-key, before its manifest's commit: the
    // new blob files are written, nothing else changed.
    let before = snapshot("before-2");
    rotate();
    let k2 = read_key();
    restore_store(dir, &before.join("store"));
    put_back_vault(&before, true);
    std::fs::write(pending_key_file(dir), &k2).unwrap();
    std::fs::write(key_file(dir), &k1).unwrap();
    assert_eq!(vault_blob_files(dir).len(), 2 * contents.blobs.len());
    let out = toka(dir, &["secrets", "list", "--config", &cfg]);
    ok(&out);
    assert_settled("inside the vault's re-key", &out, "rolled back", &k2);
    assert_eq!(read_key(), k1);

    // 3. Killed after the vault's commit (its old blob files not yet
    // removed), before the store's rotation: rolled forward.
    let before = snapshot("before-3");
    rotate();
    let k3 = read_key();
    restore_store(dir, &before.join("store"));
    put_back_vault(&before, false);
    std::fs::write(pending_key_file(dir), &k3).unwrap();
    std::fs::write(key_file(dir), &k1).unwrap();
    assert_eq!(opens(dir, &cfg, &k1), (true, false), "a vault-only state");
    let out = toka(dir, &["secrets", "get", "s/0", "--config", &cfg]);
    ok(&out);
    assert_settled(
        "vault re-keyed, store not",
        &out,
        "completed an interrupted",
        &k1,
    );
    assert_eq!(read_key(), k3);

    // 4. Killed after both, before the rename.
    rotate();
    let k4 = read_key();
    std::fs::write(pending_key_file(dir), &k4).unwrap();
    std::fs::write(key_file(dir), &k3).unwrap();
    let out = toka(dir, &["vault", "ls", "--config", &cfg]);
    ok(&out);
    assert_settled("both re-keyed", &out, "completed an interrupted", &k3);
    assert_eq!(read_key(), k4);

    // Neither key opens anything: the `.new`, provably unused, goes; the key
    // file's mismatch is reported, and the vault is left alone.
    std::fs::write(pending_key_file(dir), format!("{OTHER_KEY}\n")).unwrap();
    let vault_manifest = std::fs::read(dir.join("vault/manifest")).unwrap();
    std::fs::write(key_file(dir), &k3).unwrap();
    let out = toka(dir, &["vault", "ls", "--config", &cfg]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("wrong key"), "{}", text(&out));
    assert!(!pending_key_file(dir).exists());
    assert_eq!(
        std::fs::read(dir.join("vault/manifest")).unwrap(),
        vault_manifest
    );
    assert_eq!(opens(dir, &cfg, &k4), (true, true));
}

/// A command that finds a `.new` waits for the rotation lock, held by a
/// running `rotate-key` (here by the test), before it settles anything.
#[test]
fn settling_waits_for_a_running_rotation() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cfg = write_config(dir);
    init(dir, &cfg);
    set(dir, &cfg, "a", b"alpha");
    let lock = std::fs::File::create(dir.join("keys/master.key.lock")).unwrap();
    lock.lock().unwrap();
    std::fs::write(pending_key_file(dir), format!("{OTHER_KEY}\n")).unwrap();

    let args = ["secrets", "get", "a", "--config", &cfg];
    let (mut child, log) = spawn_logged(dir, &args, Some("waiting for a running"));
    assert!(
        pending_key_file(dir).exists(),
        "settled under a running rotation"
    );
    lock.unlock().unwrap();
    let rest: Vec<String> = log.lines().map_while(Result::ok).collect();
    assert!(child.wait().unwrap().success(), "{rest:?}");
    assert!(
        !pending_key_file(dir).exists(),
        "settled once the lock was free"
    );
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

/// Kills `rotate-key` at random moments while it re-keys a vault of a few
/// hundred KiB and the store. Right after each kill the vault and the store
/// are each wholly under one key, the store never ahead of the vault; the
/// next command settles any `.new`, after which the key file alone opens
/// both and every secret and blob is intact.
#[test]
fn rotate_key_survives_sigkill() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cfg = write_config(dir);
    init(dir, &cfg);
    let contents = Contents::new(8, 6, 64 << 10);
    contents.store(dir, &cfg);

    // How long a whole rotation takes here, so kills spread over all of it.
    let started = std::time::Instant::now();
    ok(&toka(dir, &["secrets", "rotate-key", "--config", &cfg]));
    let span = (started.elapsed().as_millis() as u64 * 3 / 2).max(30);
    let mut rng = Rng::from_time("rotate_key_survives_sigkill");
    eprintln!("a rotation takes about {}ms", span * 2 / 3);

    // not rotated, rotated; with a `.new`: nothing, the vault, both re-keyed
    let mut seen = [0; 5];
    for round in 0..24 {
        let old = std::fs::read(key_file(dir)).unwrap();
        // Where the kill aims: anywhere, into the vault's re-key, or into the
        // short stretch between the vault's commit and the store's.
        let (marker, delay) = match round % 3 {
            0 => (None, Duration::from_millis(rng.below(span))),
            1 => (
                Some("wrote the new master key"),
                Duration::from_millis(rng.below(span / 2)),
            ),
            _ => (
                Some("re-keyed the vault"),
                Duration::from_micros(rng.below(3000)),
            ),
        };
        let args = ["secrets", "rotate-key", "--config", &cfg];
        let (mut child, log) = spawn_logged(dir, &args, marker);
        std::thread::sleep(delay);
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        drop(log);

        let current = std::fs::read(key_file(dir)).unwrap();
        let pending = std::fs::read(pending_key_file(dir)).ok();
        match &pending {
            None => {
                assert_eq!(
                    opens(dir, &cfg, &current),
                    (true, true),
                    "round {round}: the key file opens both"
                );
                seen[usize::from(current != old)] += 1;
            }
            Some(pending) => {
                assert_eq!(current, old, "round {round}: renamed yet still pending");
                let (store_old, vault_old) = opens(dir, &cfg, &old);
                let (store_new, vault_new) = opens(dir, &cfg, pending);
                assert!(
                    store_old != store_new && vault_old != vault_new,
                    "round {round}: each under exactly one key \
                     (store: {store_old}/{store_new}, vault: {vault_old}/{vault_new})"
                );
                assert!(
                    vault_new || !store_new,
                    "round {round}: the store was rotated before the vault"
                );
                seen[2 + usize::from(vault_new) + usize::from(store_new)] += 1;
            }
        }

        // The next command settles any `.new`; then one key opens everything.
        let names = stdout(&toka(dir, &["secrets", "list", "--config", &cfg]));
        assert_eq!(
            names.lines().count(),
            contents.secrets.len(),
            "round {round}"
        );
        assert!(!pending_key_file(dir).exists(), "round {round}");
        let settled = std::fs::read(key_file(dir)).unwrap();
        assert_eq!(opens(dir, &cfg, &settled), (true, true), "round {round}");
        let other = if settled == old { pending } else { Some(old) };
        if let Some(other) = other {
            assert_eq!(
                opens(dir, &cfg, &other),
                (false, false),
                "round {round}: the other key opens nothing"
            );
        }
        contents.assert_intact(dir, &cfg, &format!("round {round}"));
        assert_eq!(
            vault_blob_files(dir).len(),
            contents.blobs.len(),
            "round {round}: leftovers"
        );
    }
    eprintln!(
        "not rotated {}, rotated {}; killed with a new key: nothing re-keyed {}, \
         the vault {}, both {}",
        seen[0], seen[1], seen[2], seen[3], seen[4]
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
