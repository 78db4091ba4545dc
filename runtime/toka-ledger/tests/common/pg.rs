//! A real PostgreSQL for the tests: one throwaway server per test binary on
//! a free loopback port, and a fresh database per test.
//!
//! The server is found under `/usr/lib/postgresql/*/bin` (the newest), or
//! in `$TOKA_TEST_PG_BIN`, or on `PATH`. Without it the tests FAIL, saying
//! `apt-get install postgresql`: they are never skipped silently.
//!
//! As root (CI), `initdb` refuses to run, so the cluster directory is
//! handed to user `postgres` and the tools run through `runuser`. The
//! server runs with `fsync=off`: a crash of the test machine loses nothing
//! a test needs, and it makes each commit cheap.
//!
//! Stopping: the server lives in a `static` (one per test binary), and
//! statics are never dropped, so a watcher shell holds the read end of a
//! pipe whose write end only this process has. When the test binary exits,
//! however it exits (passing, panicking, killed), the kernel closes the
//! pipe, the watcher's `read` returns, and it runs `pg_ctl -m immediate
//! stop` and removes the directory.

use std::net::TcpListener;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

/// The binary's server.
pub struct Server {
    pub port: u16,
    /// An admin connection (database `postgres`), for `CREATE DATABASE`,
    /// one at a time.
    admin: Mutex<postgres::Client>,
    /// The watcher's stdin: closing it (at exit) stops the server.
    _stop: ChildStdin,
    /// The watcher; never waited for: it outlives this process, to stop
    /// the server after it (init reaps it).
    _watcher: Child,
}

static SERVER: OnceLock<Server> = OnceLock::new();
static DATABASES: AtomicUsize = AtomicUsize::new(0);

/// The connection string of a new, empty database on the binary's server.
pub fn fresh_database() -> String {
    let server = server();
    let name = format!("t_{}", DATABASES.fetch_add(1, Ordering::Relaxed));
    server
        .admin
        .lock()
        .unwrap()
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .unwrap();
    server.url(&name)
}

impl Server {
    /// The connection string of database `name`.
    pub fn url(&self, name: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname={name}",
            self.port
        )
    }
}

/// The server, started on first use.
pub fn server() -> &'static Server {
    SERVER.get_or_init(start)
}

fn find_bin() -> PathBuf {
    if let Some(dir) = std::env::var_os("TOKA_TEST_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut found: Vec<(Vec<u64>, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let bin = e.path().join("bin");
            let version = e
                .file_name()
                .to_str()?
                .split('.')
                .map(|p| p.parse().ok())
                .collect::<Option<Vec<u64>>>()?;
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    if let Some((_, bin)) = found.pop() {
        return bin;
    }
    if let Some(dir) = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .find(|d| d.join("initdb").exists() && d.join("pg_ctl").exists())
    {
        return dir;
    }
    panic!(
        "PostgreSQL is not installed: no initdb under /usr/lib/postgresql/*/bin, in \
         $TOKA_TEST_PG_BIN or on PATH. The ledger's PostgreSQL tests start a real server: \
         install it with `apt-get install postgresql` (Debian/Ubuntu; CI's .ci/run does)"
    );
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// `tool args...`, as user `postgres` when we are root.
fn pg_command(bin: &Path, tool: &str) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin.join(tool));
        c
    } else {
        Command::new(bin.join(tool))
    }
}

fn run(mut c: Command, what: &str) {
    let out = c
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn free_port() -> u16 {
    // The kernel's pick; closed again before the server binds it. Another
    // process could take it in between: then the start fails and retries.
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Whether user `postgres` can reach `dir` (every ancestor searchable by
/// others): a `$TMPDIR` under `/root` is not, so the cluster goes to `/tmp`.
fn reachable(dir: &Path) -> bool {
    dir.ancestors()
        .skip(1)
        .all(|a| std::fs::metadata(a).is_ok_and(|m| m.mode() & 0o001 != 0))
}

fn start() -> Server {
    let bin = find_bin();
    let mut base = std::env::temp_dir();
    if is_root() && !reachable(&base.join("x")) {
        base = PathBuf::from("/tmp");
    }
    let dir = tempfile::Builder::new()
        .prefix("toka-ledger-pg.")
        .tempdir_in(&base)
        .unwrap()
        .keep();
    if is_root() {
        run(
            {
                let mut c = Command::new("chown");
                c.arg("postgres:postgres").arg(&dir);
                c
            },
            "chown postgres the test cluster's directory",
        );
    }
    let data = dir.join("data");
    let mut initdb = pg_command(&bin, "initdb");
    initdb
        .arg("-D")
        .arg(&data)
        .args(["-A", "trust", "-U", "postgres", "-E", "UTF8"])
        .args(["--no-locale", "--no-sync"]);
    run(initdb, "initdb (the ledger tests' PostgreSQL)");

    // The watcher first, so even a failed start below is cleaned up.
    let stop = format!(
        "read _; {pg_ctl} -D '{data}' -m immediate stop; rm -rf '{dir}'",
        pg_ctl = if is_root() {
            format!("runuser -u postgres -- '{}'", bin.join("pg_ctl").display())
        } else {
            format!("'{}'", bin.join("pg_ctl").display())
        },
        data = data.display(),
        dir = dir.display(),
    );
    let mut watcher = Command::new("sh")
        .args(["-c", &stop])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting the PostgreSQL watcher");
    let stop = watcher.stdin.take().unwrap();

    let log = dir.join("pg.log");
    let mut last = String::new();
    for _ in 0..5 {
        let port = free_port();
        let mut pg_ctl = pg_command(&bin, "pg_ctl");
        pg_ctl
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", "60", "-o"])
            .arg(format!(
                "-p {port} -k '{}' -c listen_addresses=127.0.0.1 -c fsync=off \
                 -c max_connections=300",
                dir.display()
            ))
            .arg("start")
            .stdin(Stdio::null());
        let out = pg_ctl.output().expect("running pg_ctl");
        if out.status.success() {
            let admin = postgres::Client::connect(
                &format!("host=127.0.0.1 port={port} user=postgres dbname=postgres"),
                postgres::NoTls,
            )
            .expect("connecting to the test PostgreSQL");
            return Server {
                port,
                admin: Mutex::new(admin),
                _stop: stop,
                _watcher: watcher,
            };
        }
        last = format!(
            "{}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
    // Let the watcher clean up before failing.
    drop(stop);
    let _ = watcher.wait();
    panic!("the test PostgreSQL did not start:\n{last}");
}
