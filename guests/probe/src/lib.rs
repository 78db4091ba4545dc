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
//!   `busy MS`, `storm N`, `oob`, `count`.
//! - Config key `init_command` runs one command during `init`, and `command`
//!   runs on every event whatever its kind: how a config file (no test
//!   harness) makes a probe hostile, e.g. `command = "spin"` on `toka.tick`.

wit_bindgen::generate!({ world: "agent", path: "../../wit" });

use std::cell::Cell;
use std::io::Write;

use exports::toka::runtime::handler::Guest;
use toka::runtime::bus::publish;
use toka::runtime::log::{Level, log};
use toka::runtime::types::{Error, Event};

thread_local! {
    static HANDLED: Cell<u64> = const { Cell::new(0) };
    static COMMAND: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

struct Probe;

fn describe(err: &Error) -> String {
    match err {
        Error::AccessDenied => "access-denied".into(),
        Error::TooLarge(n) => format!("too-large:{n}"),
        Error::RateLimited => "rate-limited".into(),
        Error::Invalid(msg) => format!("invalid:{msg}"),
        Error::Unavailable => "unavailable".into(),
    }
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
        other => Err(format!("unknown command `{other}`")),
    }
}

impl Guest for Probe {
    fn init(config: Vec<(String, String)>) -> Result<(), String> {
        if let Some((_, msg)) = config.iter().find(|(k, _)| k == "fail_init") {
            return Err(msg.clone());
        }
        let text: String = config.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
        let _ = publish("probe.init", text.as_bytes());
        let setting = |key: &str| config.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
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
            report(run(&payload));
        }
        if let Some(command) = COMMAND.with_borrow(Clone::clone) {
            report(run(&command));
        }
        Ok(())
    }
}

export!(Probe);
