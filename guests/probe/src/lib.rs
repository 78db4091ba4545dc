//! Test guest driven by commands, used by the integration tests to exercise
//! every host path from inside a real component.
//!
//! - On `init` it publishes `probe.init` whose payload is its config as
//!   `key=value` lines (proves `init` receives the agent's table); with the
//!   config key `fail_init` it fails `init` with that message instead.
//! - On every event it publishes `probe.seen` with `kind|source|payload`
//!   (proves filtering and ordering).
//! - On events whose kind ends in `.cmd` it runs the payload as a command and
//!   publishes the outcome as `probe.result` (`ok...` or `err:...`):
//!   `publish KIND TEXT`, `publish-size KIND BYTES`, `log LEVEL TEXT`,
//!   `print TEXT`, `eprint TEXT`, `print-flood BYTES`, `env`, `read PATH`,
//!   `connect ADDR`, `trap`, `panic`, `spin`, `alloc MIB`, `recurse`,
//!   `busy MS`, `storm N`, `oob`, `count`; waits in host calls: `sleep MS`
//!   (`std::thread::sleep`), `poll MS` (`subscribe-duration` + `wasi:io/poll`),
//!   `block MS` (`pollable.block`), `nap-loop MS` (1 ms sleeps until MS have
//!   passed); guest strings: `log-flood N BYTES`, `log-fields KEY VALUE`,
//!   `fail TEXT`, `fail-size BYTES`, `publish-kind-size BYTES`.
//! - Files (the `dirs` grant): `preopens` (the guest paths, sorted, `,`
//!   separated), `ls DIR` (entry names, sorted), `cat PATH` (the text),
//!   `write PATH TEXT` (create or truncate), `mkdir PATH`, `rm PATH`,
//!   `rmdir PATH`, `rename FROM TO`; errors are the `std::io::ErrorKind`.
//! - Requests: `request KIND TEXT` (reply or error as the result),
//!   `request-timeout KIND MS TEXT`, `request-size KIND BYTES`,
//!   `request-loop N KIND` (N requests of 64 bytes, `:N` when all replied),
//!   `request-body KIND SIZE HEADER` (payload `HEADER\n` then SIZE bytes of
//!   [`pattern`]; the result is `:LINE|len=N|fnv=HEX`: the reply's first
//!   line, then the length and FNV-1a 64 of the bytes after it).
//! - It is a server too (world `service`): `serve` echoes the payload, except
//!   `who` (replies `kind|source|deadline_ms`) and `cmd:COMMAND` (runs the
//!   command and replies with its outcome; an `err:` outcome is returned as
//!   the server's error, a trap faults the server).
//! - Config key `fail_init_size` fails `init` with an error of that many
//!   bytes (an oversized guest string the host must not copy whole).
//! - Config key `init_command` runs one command during `init`, and `command`
//!   runs on every event whatever its kind: how a config file (no test
//!   harness) makes a probe hostile, e.g. `command = "spin"` on `toka.tick`.

wit_bindgen::generate!({ world: "service", path: "../../wit", generate_all });

use std::cell::Cell;
use std::io::Write;

use exports::toka::runtime::handler::Guest;
use toka::runtime::bus::publish;
use toka::runtime::log::{Level, log};
use toka::runtime::request::{RequestError, request};
use toka::runtime::types::{Error, Event};

thread_local! {
    static HANDLED: Cell<u64> = const { Cell::new(0) };
    static COMMAND: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

struct Probe;

/// Run `command`: `fail...` commands return their error from `handle`,
/// every other outcome is reported as `probe.result`.
fn respond(command: &str) -> Result<(), String> {
    let outcome = run(command);
    if command.starts_with("fail") {
        return outcome.map(|_| ());
    }
    report(outcome);
    Ok(())
}

fn describe(err: &Error) -> String {
    match err {
        Error::AccessDenied => "access-denied".into(),
        Error::TooLarge(n) => format!("too-large:{n}"),
        Error::RateLimited => "rate-limited".into(),
        Error::Invalid(msg) => format!("invalid:{msg}"),
        Error::Unavailable => "unavailable".into(),
    }
}

fn describe_request(err: &RequestError) -> String {
    match err {
        RequestError::AccessDenied => "access-denied".into(),
        RequestError::NoResponders => "no-responders".into(),
        RequestError::Timeout => "timeout".into(),
        RequestError::TooLarge(n) => format!("too-large:{n}"),
        RequestError::Busy => "busy".into(),
        RequestError::Loop => "loop".into(),
        RequestError::Remote(msg) => format!("remote:{msg}"),
        RequestError::Invalid(msg) => format!("invalid:{msg}"),
        RequestError::Unavailable => "unavailable".into(),
    }
}

fn ask(kind: &str, payload: &[u8], timeout_ms: u32) -> Result<String, String> {
    request(kind, payload, timeout_ms)
        .map(|reply| format!(":{}", String::from_utf8_lossy(&reply)))
        .map_err(|e| describe_request(&e))
}

/// Byte `i` of the bodies `request-body` sends.
pub fn pattern(i: usize) -> u8 {
    (i % 251) as u8 ^ (i >> 12) as u8
}

/// FNV-1a 64 of `bytes`.
pub fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn report(outcome: Result<String, String>) {
    let text = match outcome {
        Ok(ok) => format!("ok{ok}"),
        Err(err) => format!("err:{err}"),
    };
    // The result channel itself may be denied in some tests; that is fine.
    let _ = publish("probe.result", text.as_bytes());
}

#[expect(unconditional_recursion, reason = "the stack-overflow probe")]
fn recurse(depth: u64) -> u64 {
    let buf = [depth; 64];
    recurse(std::hint::black_box(buf[7]) + 1) + buf[3]
}

fn io_kind(e: std::io::Error) -> String {
    format!("{:?}", e.kind())
}

fn millis(arg: &str) -> Result<u64, String> {
    arg.parse().map_err(|_| "bad duration".to_string())
}

fn rest_of(arg1: &str, rest: &str) -> String {
    if rest.is_empty() {
        arg1.to_string()
    } else {
        format!("{arg1} {rest}")
    }
}

fn run(command: &str) -> Result<String, String> {
    let mut words = command.splitn(3, ' ');
    let verb = words.next().unwrap_or_default();
    let arg1 = words.next().unwrap_or_default();
    let rest = words.next().unwrap_or_default();
    match verb {
        "publish" => publish(arg1, rest.as_bytes())
            .map(|id| format!(":{id}"))
            .map_err(|e| describe(&e)),
        "publish-size" => {
            let n: usize = rest.parse().map_err(|_| "bad size".to_string())?;
            publish(arg1, &vec![b'x'; n])
                .map(|id| format!(":{id}"))
                .map_err(|e| describe(&e))
        }
        "storm" => {
            let n: u64 = arg1.parse().map_err(|_| "bad count".to_string())?;
            let (mut ok, mut limited) = (0u64, 0u64);
            for i in 0..n {
                match publish("probe.storm", i.to_string().as_bytes()) {
                    Ok(_) => ok += 1,
                    Err(Error::RateLimited) => limited += 1,
                    Err(e) => return Err(describe(&e)),
                }
            }
            Ok(format!(":{ok}:{limited}"))
        }
        "log" => {
            let level = match arg1 {
                "trace" => Level::Trace,
                "debug" => Level::Debug,
                "info" => Level::Info,
                "warn" => Level::Warn,
                _ => Level::Error,
            };
            log(level, rest, &[]);
            Ok(String::new())
        }
        "print" => {
            println!("{arg1} {rest}");
            Ok(String::new())
        }
        "eprint" => {
            eprintln!("{arg1} {rest}");
            Ok(String::new())
        }
        "print-flood" => {
            let n: usize = arg1.parse().map_err(|_| "bad size".to_string())?;
            let line = [b'y'; 1023];
            let mut out = std::io::stdout();
            let mut written = 0;
            while written < n {
                // A capped stream reports an error; keep going like a hostile guest would.
                let _ = out.write_all(&line);
                let _ = out.write_all(b"\n");
                written += 1024;
            }
            Ok(format!(":{written}"))
        }
        "env" => {
            let vars: Vec<_> = std::env::vars().collect();
            let args: Vec<_> = std::env::args().collect();
            Ok(format!(":{}:{}", vars.len(), args.len()))
        }
        "read" => std::fs::read(arg1)
            .map(|b| format!(":{}", b.len()))
            .map_err(|e| format!("{:?}", e.kind())),
        "preopens" => {
            let mut paths: Vec<String> = ::wasi::filesystem::preopens::get_directories()
                .into_iter()
                .map(|(_, path)| path)
                .collect();
            paths.sort();
            Ok(format!(":{}", paths.join(",")))
        }
        "ls" => {
            let mut names = Vec::new();
            for entry in std::fs::read_dir(arg1).map_err(io_kind)? {
                names.push(
                    entry
                        .map_err(io_kind)?
                        .file_name()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
            names.sort();
            Ok(format!(":{}", names.join(",")))
        }
        "cat" => std::fs::read_to_string(arg1)
            .map(|text| format!(":{text}"))
            .map_err(io_kind),
        "write" => std::fs::write(arg1, rest)
            .map(|()| String::new())
            .map_err(io_kind),
        "mkdir" => std::fs::create_dir(arg1)
            .map(|()| String::new())
            .map_err(io_kind),
        "rm" => std::fs::remove_file(arg1)
            .map(|()| String::new())
            .map_err(io_kind),
        "rmdir" => std::fs::remove_dir(arg1)
            .map(|()| String::new())
            .map_err(io_kind),
        "rename" => std::fs::rename(arg1, rest)
            .map(|()| String::new())
            .map_err(io_kind),
        "connect" => std::net::TcpStream::connect(arg1)
            .map(|_| String::new())
            .map_err(|e| format!("{:?}", e.kind())),
        "trap" => std::process::abort(),
        "panic" => panic!("probe asked to panic"),
        "spin" => loop {
            std::hint::spin_loop();
        },
        "alloc" => {
            let mib: usize = arg1.parse().map_err(|_| "bad size".to_string())?;
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            for _ in 0..mib {
                hoard.push(vec![1u8; 1 << 20]);
            }
            Ok(format!(":{}", hoard.len()))
        }
        "busy" => {
            let ms: u64 = arg1.parse().map_err(|_| "bad duration".to_string())?;
            let start = std::time::Instant::now();
            while start.elapsed() < std::time::Duration::from_millis(ms) {
                std::hint::spin_loop();
            }
            Ok(String::new())
        }
        "recurse" => Ok(format!(":{}", recurse(0))),
        "oob" => {
            // Past the end of any 32-bit linear memory: an out-of-bounds trap.
            let far = std::hint::black_box(0xFFFF_FFF0usize) as *const u64;
            // SAFETY: deliberately invalid; wasm bounds checks turn it into a trap.
            Ok(format!(":{}", unsafe { std::ptr::read_volatile(far) }))
        }
        "count" => Ok(format!(":{}", HANDLED.get())),
        "request" => ask(arg1, rest.as_bytes(), 10_000),
        "request-timeout" => {
            let (ms, text) = rest.split_once(' ').unwrap_or((rest, ""));
            ask(arg1, text.as_bytes(), millis(ms)? as u32)
        }
        "request-size" => {
            let n: usize = rest.parse().map_err(|_| "bad size".to_string())?;
            ask(arg1, &vec![b'r'; n], 10_000)
        }
        "request-body" => {
            let (size, head) = rest.split_once(' ').unwrap_or((rest, ""));
            let n: usize = size.parse().map_err(|_| "bad size".to_string())?;
            let mut payload = head.as_bytes().to_vec();
            payload.push(b'\n');
            payload.extend((0..n).map(pattern));
            let reply = request(arg1, &payload, 20_000).map_err(|e| describe_request(&e))?;
            let (line, body) = match reply.iter().position(|&b| b == b'\n') {
                Some(i) => (&reply[..i], &reply[i + 1..]),
                None => (&reply[..], &[][..]),
            };
            Ok(format!(
                ":{}|len={}|fnv={:016x}",
                String::from_utf8_lossy(line),
                body.len(),
                fnv(body)
            ))
        }
        "request-loop" => {
            let n: u64 = arg1.parse().map_err(|_| "bad count".to_string())?;
            let payload = [b'q'; 64];
            for i in 0..n {
                let reply = request(rest, &payload, 10_000)
                    .map_err(|e| format!("request {i}: {}", describe_request(&e)))?;
                if reply.len() != payload.len() {
                    return Err(format!("request {i}: a reply of {} bytes", reply.len()));
                }
            }
            Ok(format!(":{n}"))
        }
        "sleep" => {
            std::thread::sleep(std::time::Duration::from_millis(millis(arg1)?));
            Ok(String::new())
        }
        "poll" => {
            let ns = millis(arg1)?.saturating_mul(1_000_000);
            let timer = ::wasi::clocks::monotonic_clock::subscribe_duration(ns);
            let ready = ::wasi::io::poll::poll(&[&timer]);
            Ok(format!(":{}", ready.len()))
        }
        "block" => {
            let ns = millis(arg1)?.saturating_mul(1_000_000);
            ::wasi::clocks::monotonic_clock::subscribe_duration(ns).block();
            Ok(String::new())
        }
        "nap-loop" => {
            let until = std::time::Instant::now() + std::time::Duration::from_millis(millis(arg1)?);
            let mut naps = 0u64;
            while std::time::Instant::now() < until {
                std::thread::sleep(std::time::Duration::from_millis(1));
                naps += 1;
            }
            Ok(format!(":{naps}"))
        }
        "log-flood" => {
            let n: u64 = arg1.parse().map_err(|_| "bad count".to_string())?;
            let size: usize = rest.parse().map_err(|_| "bad size".to_string())?;
            let line = "z".repeat(size);
            for _ in 0..n {
                log(Level::Info, &line, &[]);
            }
            Ok(format!(":{n}"))
        }
        "log-fields" => {
            let field = toka::runtime::log::Field {
                key: arg1.replace("\\n", "\n"),
                value: rest.replace("\\n", "\n"),
            };
            log(Level::Info, "fields", &[field]);
            Ok(String::new())
        }
        "fail" => Err(rest_of(arg1, rest)
            .replace("\\n", "\n")
            .replace("\\r", "\r")),
        "fail-size" => {
            let n: usize = arg1.parse().map_err(|_| "bad size".to_string())?;
            Err("e".repeat(n))
        }
        "publish-kind-size" => {
            let n: usize = arg1.parse().map_err(|_| "bad size".to_string())?;
            publish(&"k".repeat(n), b"x")
                .map(|id| format!(":{id}"))
                .map_err(|e| describe(&e))
        }
        other => Err(format!("unknown command `{other}`")),
    }
}

impl Guest for Probe {
    fn init(config: Vec<(String, String)>) -> Result<(), String> {
        if let Some((_, msg)) = config.iter().find(|(k, _)| k == "fail_init") {
            return Err(msg.clone());
        }
        if let Some((_, n)) = config.iter().find(|(k, _)| k == "fail_init_size") {
            return Err("i".repeat(n.parse().unwrap_or(0)));
        }
        let text: String = config.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
        let _ = publish("probe.init", text.as_bytes());
        let setting = |key: &str| {
            config
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
        };
        COMMAND.set(setting("command"));
        if let Some(command) = setting("init_command") {
            report(run(&command));
        }
        Ok(())
    }

    fn handle(event: Event) -> Result<(), String> {
        HANDLED.set(HANDLED.get() + 1);
        let payload = String::from_utf8_lossy(&event.payload).into_owned();
        let seen = format!("{}|{}|{}", event.kind, event.source, payload);
        let _ = publish("probe.seen", seen.as_bytes());
        if event.kind.ends_with(".cmd") {
            respond(&payload)?;
        }
        if let Some(command) = COMMAND.with_borrow(Clone::clone) {
            respond(&command)?;
        }
        Ok(())
    }
}

impl exports::toka::runtime::responder::Guest for Probe {
    fn serve(request: exports::toka::runtime::responder::Incoming) -> Result<Vec<u8>, String> {
        if request.payload == b"who" {
            return Ok(format!(
                "{}|{}|{}",
                request.kind, request.source, request.deadline_ms
            )
            .into_bytes());
        }
        match request.payload.strip_prefix(b"cmd:") {
            Some(command) => run(&String::from_utf8_lossy(command)).map(String::into_bytes),
            None => Ok(request.payload),
        }
    }
}

export!(Probe);
