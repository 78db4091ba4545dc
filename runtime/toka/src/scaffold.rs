//! `toka new agent`: scaffolding for a new agent crate.
//!
//! The generated crate is a complete, buildable starting point: a documented
//! Rust guest that implements the `agent` world, a copy of the WIT contract,
//! a `toka.toml` that runs it, and a README. It is self-contained: the WIT
//! files are embedded in the `toka` binary at build time and written out, so
//! the crate builds without a checkout of the Toka repository and keeps
//! targeting the contract version of the `toka` that created it.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// The contract the generated agent is compiled against; embedded so that a
/// scaffold always matches the host that produced it.
const TYPES_WIT: &str = include_str!("../../../wit/types.wit");
const WORLDS_WIT: &str = include_str!("../../../wit/worlds.wit");
const SECRETS_WIT: &str = include_str!("../../../wit/secrets.wit");
const VAULT_WIT: &str = include_str!("../../../wit/vault.wit");
const AUTH_WIT: &str = include_str!("../../../wit/auth.wit");
const REQUEST_WIT: &str = include_str!("../../../wit/request.wit");
const KV_WIT: &str = include_str!("../../../wit/kv.wit");
const LEDGER_WIT: &str = include_str!("../../../wit/ledger.wit");
/// `wasi:keyvalue@0.2.0-draft`, vendored beside the Toka package.
const KEYVALUE_WIT: [(&str, &str); 5] = [
    (
        "wit/deps/keyvalue/store.wit",
        include_str!("../../../wit/deps/keyvalue/store.wit"),
    ),
    (
        "wit/deps/keyvalue/atomic.wit",
        include_str!("../../../wit/deps/keyvalue/atomic.wit"),
    ),
    (
        "wit/deps/keyvalue/batch.wit",
        include_str!("../../../wit/deps/keyvalue/batch.wit"),
    ),
    (
        "wit/deps/keyvalue/watch.wit",
        include_str!("../../../wit/deps/keyvalue/watch.wit"),
    ),
    (
        "wit/deps/keyvalue/world.wit",
        include_str!("../../../wit/deps/keyvalue/world.wit"),
    ),
];

/// `wasi:http@0.2.12` and its WASI dependencies, vendored for the
/// `http-agent` world (the Toka package names them, so they must resolve).
const WASI_WIT: [(&str, &str); 7] = [
    (
        "wit/deps/cli.wit",
        include_str!("../../../wit/deps/cli.wit"),
    ),
    (
        "wit/deps/clocks.wit",
        include_str!("../../../wit/deps/clocks.wit"),
    ),
    (
        "wit/deps/filesystem.wit",
        include_str!("../../../wit/deps/filesystem.wit"),
    ),
    (
        "wit/deps/http.wit",
        include_str!("../../../wit/deps/http.wit"),
    ),
    ("wit/deps/io.wit", include_str!("../../../wit/deps/io.wit")),
    (
        "wit/deps/random.wit",
        include_str!("../../../wit/deps/random.wit"),
    ),
    (
        "wit/deps/sockets.wit",
        include_str!("../../../wit/deps/sockets.wit"),
    ),
];

/// Longest accepted agent name, in characters. Mirrors the runtime's own
/// limit on `[[agents]] name`, so the generated `toka.toml` always loads.
const MAX_NAME_LEN: usize = 64;

/// Longest event kind segment the bus accepts; the heartbeat kind's first
/// segment must fit.
const MAX_SEGMENT_LEN: usize = 64;

/// Names that pass the character rules but would still produce a crate or a
/// config that does not work: Rust keywords and sysroot crates cannot be
/// library names, `wit_bindgen` would shadow the one dependency, and `toka`
/// is the runtime's own agent name and event namespace.
const RESERVED: &[&str] = &[
    "abstract",
    "alloc",
    "as",
    "async",
    "await",
    "become",
    "box",
    "break",
    "const",
    "continue",
    "core",
    "crate",
    "do",
    "dyn",
    "else",
    "enum",
    "extern",
    "false",
    "final",
    "fn",
    "for",
    "gen",
    "if",
    "impl",
    "in",
    "let",
    "loop",
    "macro",
    "match",
    "mod",
    "move",
    "mut",
    "override",
    "priv",
    "proc_macro",
    "pub",
    "ref",
    "return",
    "self",
    "static",
    "std",
    "struct",
    "super",
    "test",
    "toka",
    "trait",
    "true",
    "try",
    "type",
    "typeof",
    "unsafe",
    "unsized",
    "use",
    "virtual",
    "where",
    "while",
    "wit_bindgen",
    "yield",
];

const CARGO_TOML: &str = r#"[package]
name = "{{name}}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
# Names the component file (`target/wasm32-wasip2/release/{{snake}}.wasm`);
# set explicitly so a mixed-case package name still gives a snake_case crate.
name = "{{snake}}"
# A component is a dynamic library as far as cargo is concerned.
crate-type = ["cdylib"]

[dependencies]
# Only the bindings macro and the allocator hook they call: the default
# features add async support and extra dependencies this agent never uses.
wit-bindgen = { version = "0.61", default-features = false, features = ["macros", "realloc"] }

# Keeps this crate standalone even when created inside another cargo
# workspace, which would otherwise claim it and refuse to build it.
[workspace]

# Small modules load and instantiate faster in the runtime.
[profile.release]
opt-level = "s"
lto = true
codegen-units = 1
strip = true
"#;

const LIB_RS: &str = r#"//! The `{{name}}` Toka agent.
//!
//! It logs every event it receives through the host's `log` interface and,
//! on each scheduler tick (`toka.tick`), publishes `{{snake}}.heartbeat`
//! with the tick number as its payload (decimal text, which is also valid
//! JSON).
//!
//! Configuration (free-form keys of this agent's `[[agents]]` table in
//! `toka.toml`):
//! - `greeting`: text logged at start-up and with every heartbeat
//!   (default `hello`).
//!
//! Build with `cargo build --release --target wasm32-wasip2`; see the README.

// `wit/` holds a copy of the Toka contract, so this crate builds on its own.
// `generate_all`: the world also names the `wasi:keyvalue` package in `wit/deps`.
wit_bindgen::generate!({ world: "agent", path: "wit", generate_all });

use std::cell::RefCell;

use exports::toka::runtime::handler::Guest;
use toka::runtime::bus::publish;
use toka::runtime::log::{Field, Level, log};
use toka::runtime::types::{Error, Event};

/// Kind published on every tick. Must stay inside the `publish` grant in
/// `toka.toml`, or the host answers `access-denied`.
const HEARTBEAT: &str = "{{snake}}.heartbeat";

thread_local! {
    // The runtime calls an instance one event at a time and keeps its memory
    // between calls, so plain thread-local state is all an agent needs.
    static GREETING: RefCell<String> = const { RefCell::new(String::new()) };
}

/// The agent; `export!` below wires its `Guest` impl to the component's
/// `handler` exports.
struct Component;

fn field(key: &str, value: impl Into<String>) -> Field {
    Field {
        key: key.into(),
        value: value.into(),
    }
}

impl Guest for Component {
    fn init(config: Vec<(String, String)>) -> Result<(), String> {
        let greeting = config
            .into_iter()
            .find_map(|(key, value)| (key == "greeting").then_some(value))
            .unwrap_or_else(|| "hello".to_owned());
        log(Level::Info, &greeting, &[]);
        GREETING.set(greeting);
        Ok(())
    }

    fn handle(event: Event) -> Result<(), String> {
        log(
            Level::Info,
            "event",
            &[
                field("kind", event.kind.as_str()),
                field("source", event.source.as_str()),
                field("id", event.id.to_string()),
            ],
        );
        if event.kind != "toka.tick" {
            return Ok(());
        }

        // Ticks carry their sequence number as 8 little-endian bytes.
        let tick = <[u8; 8]>::try_from(event.payload.as_slice())
            .map(u64::from_le_bytes)
            .map_err(|_| format!("toka.tick payload of {} bytes", event.payload.len()))?;

        match publish(HEARTBEAT, tick.to_string().as_bytes()) {
            Ok(id) => {
                let greeting = GREETING.with_borrow(Clone::clone);
                log(
                    Level::Info,
                    &greeting,
                    &[field("published", HEARTBEAT), field("id", id.to_string())],
                );
                Ok(())
            }
            // The operator narrowed the grant on purpose (the host already
            // logs the refusal), and a shutting-down runtime accepts nothing:
            // neither is this agent's failure.
            Err(err @ (Error::AccessDenied | Error::Unavailable)) => {
                log(
                    Level::Debug,
                    "heartbeat not published",
                    &[field("kind", HEARTBEAT), field("error", format!("{err:?}"))],
                );
                Ok(())
            }
            // Anything else is worth the operator's attention; returning it
            // makes the host log it while the agent keeps running.
            Err(err) => Err(format!("publish {HEARTBEAT}: {err:?}")),
        }
    }
}

export!(Component);
"#;

const TOKA_TOML: &str = r#"# Runs the `{{name}}` agent straight from cargo's output:
#   cargo build --release --target wasm32-wasip2
#   toka run toka.toml --for 5s

# Where agent modules are looked up (relative to this file).
modules_dir = "target/wasm32-wasip2/release"

[event_bus]
# Events each agent's mailbox holds before further copies are dropped.
buffer_size = 1024
# Period of the runtime's `toka.tick` events, in milliseconds.
scheduler_tick_ms = 500

[[agents]]
# The agent's name in logs and as the `source` of the events it publishes.
name = "{{name}}"
# The component cargo builds (named by `[lib] name` in Cargo.toml),
# relative to `modules_dir`.
module = "{{snake}}.wasm"
# Event kinds delivered to this agent: only the scheduler's ticks.
subscribe = ["toka.tick"]
# Event kinds this agent may publish: anything under `{{snake}}.`.
publish = ["{{snake}}.>"]
# Free-form setting passed to the agent's `init` (read as `greeting`).
greeting = "hello"
"#;

const README_MD: &str = r#"# {{name}}

A Toka agent: a Rust crate compiled to a WebAssembly component that
implements the `agent` world of `toka:runtime@0.1.4`.

On every scheduler tick it logs the event and publishes
`{{snake}}.heartbeat` with the tick number as payload.

## Build

```sh
rustup target add wasm32-wasip2   # once, if the target is missing
cargo build --release --target wasm32-wasip2
```

The component is
`target/wasm32-wasip2/release/{{snake}}.wasm`.

## Run

```sh
toka run toka.toml --for 5s
```

## Grants

An agent can do only what its `[[agents]]` table in `toka.toml` grants:

- `subscribe = ["toka.tick"]`: the kinds of events delivered to the agent's
  `handle`. Here only the runtime's ticks; an empty list delivers nothing.
- `publish = ["{{snake}}.>"]`: the kinds the agent may publish. `>` matches
  one or more trailing segments, so `{{snake}}.heartbeat` is allowed. A
  publish outside the grant is not a crash: the host logs it and the agent
  gets `access-denied`, which this agent logs at debug level and ignores.
  Kinds starting with `toka.` belong to the runtime and can never be
  published by agents.
- Every other key (here `greeting`) is free-form configuration handed to
  `init`.

Patterns use NATS subject syntax: `*` matches exactly one segment, `>` one
or more trailing segments.

## Contract

`wit/` is a copy of the Toka WIT contract at the version of the `toka` that
created this crate. Within `0.1.x` the contract only grows, so this agent
keeps loading on newer `0.1` hosts.
"#;

const GITIGNORE: &str = "/target\n";

/// Create a new agent crate named `name` inside `parent` (creates `parent/<name>/`).
///
/// Returns the created directory. An existing empty directory is filled in.
///
/// # Errors
///
/// Fails, with context naming the path, if the directory already exists and
/// is non-empty (or is not a directory), if a file cannot be written, or if
/// `name` is not a valid crate name: 1-64 characters of ASCII letters,
/// digits, `_` and `-`, starting with a letter. Rust keywords and a few names
/// that would break the build or the generated config (such as `std`,
/// `wit_bindgen` or `toka`) are refused too.
pub fn new_agent(parent: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let dir = parent.join(name);
    check_name(name).with_context(|| format!("cannot create agent at {}", dir.display()))?;
    prepare_dir(&dir)?;

    let snake = snake_name(name);
    let vars: &[(&str, &str)] = &[("name", name), ("snake", &snake)];

    let mut files: Vec<(&str, String)> = vec![
        ("Cargo.toml", render(CARGO_TOML, vars)),
        ("src/lib.rs", render(LIB_RS, vars)),
        ("wit/types.wit", TYPES_WIT.to_owned()),
        ("wit/worlds.wit", WORLDS_WIT.to_owned()),
        ("wit/secrets.wit", SECRETS_WIT.to_owned()),
        ("wit/vault.wit", VAULT_WIT.to_owned()),
        ("wit/auth.wit", AUTH_WIT.to_owned()),
        ("wit/request.wit", REQUEST_WIT.to_owned()),
        ("wit/kv.wit", KV_WIT.to_owned()),
        ("wit/ledger.wit", LEDGER_WIT.to_owned()),
        ("toka.toml", render(TOKA_TOML, vars)),
        ("README.md", render(README_MD, vars)),
        (".gitignore", GITIGNORE.to_owned()),
    ];
    files.extend(KEYVALUE_WIT.map(|(path, text)| (path, text.to_owned())));
    files.extend(WASI_WIT.map(|(path, text)| (path, text.to_owned())));
    for (relative, contents) in files {
        let path = dir.join(relative);
        if let Some(sub) = path.parent() {
            fs::create_dir_all(sub)
                .with_context(|| format!("cannot create directory {}", sub.display()))?;
        }
        fs::write(&path, contents).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(dir)
}

fn check_name(name: &str) -> anyhow::Result<()> {
    let Some(first) = name.chars().next() else {
        bail!("the agent name is empty");
    };
    if !first.is_ascii_alphabetic() {
        bail!("the agent name `{name}` must start with an ASCII letter");
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        bail!("the agent name `{name}` contains {bad:?} (allowed: A-Z a-z 0-9 _ -)");
    }
    // Checked after the characters, so bytes and characters are the same.
    if name.len() > MAX_NAME_LEN {
        bail!("the agent name `{name}` is longer than {MAX_NAME_LEN} characters");
    }
    // The snake form is what becomes the library name and the event
    // namespace, so that is what must not collide (`Toka` would otherwise
    // slip through as `toka.heartbeat`, `Self` as a crate named `self`).
    if RESERVED.contains(&snake_name(name).as_str()) {
        bail!("the agent name `{name}` is reserved (Rust keyword, standard crate or Toka's own)");
    }
    Ok(())
}

/// Refuses to scaffold over existing work, but accepts an empty directory
/// (or a link to one) because users often `mkdir` first.
fn prepare_dir(dir: &Path) -> anyhow::Result<()> {
    match fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => {
            let mut entries = fs::read_dir(dir)
                .with_context(|| format!("cannot read directory {}", dir.display()))?;
            if entries.next().is_some() {
                bail!(
                    "cannot create agent at {}: directory exists and is not empty",
                    dir.display()
                );
            }
            Ok(())
        }
        Ok(_) => bail!(
            "cannot create agent at {}: path exists and is not a directory",
            dir.display()
        ),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => fs::create_dir_all(dir)
            .with_context(|| format!("cannot create directory {}", dir.display())),
        Err(err) => Err(err).with_context(|| format!("cannot inspect {}", dir.display())),
    }
}

/// The `snake_case` form of the name (`MyAgent` and `my-agent` both give `my_agent`):
/// the generated library's name and the first segment of the agent's event
/// kinds. A library name rustc would warn about is avoided, and the kinds
/// read like the ones the runtime and the example agents use.
fn snake_name(name: &str) -> String {
    // The runtime's module-name rule (`HTTPServer` -> `http_server`), with `-`
    // as `_` so the result is also a valid Rust library name.
    let out = toka_core::config::snake_case(name).replace('-', "_");
    // Inserted underscores can push a 64-character name past the bus's
    // segment limit; the plain lowercase form always fits.
    if out.len() > MAX_SEGMENT_LEN {
        return name.replace('-', "_").to_ascii_lowercase();
    }
    out
}

/// Substitutes `{{key}}` placeholders in one pass: substituted text is never
/// rescanned, so no value can expand into another placeholder.
fn render(template: &str, vars: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let value = after.find("}}").and_then(|end| {
            let key = &after[..end];
            vars.iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| (*v, end + 2))
        });
        if let Some((value, consumed)) = value {
            out.push_str(value);
            rest = &after[consumed..];
        } else {
            // Not one of ours: keep the braces literally.
            out.push_str("{{");
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILES: [&str; 7] = [
        "Cargo.toml",
        "src/lib.rs",
        "wit/types.wit",
        "wit/worlds.wit",
        "toka.toml",
        "README.md",
        ".gitignore",
    ];

    #[test]
    fn creates_a_complete_crate() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = new_agent(tmp.path(), "my-agent").unwrap();
        assert_eq!(dir, tmp.path().join("my-agent"));
        for file in FILES {
            assert!(dir.join(file).is_file(), "missing {file}");
        }

        let cargo = fs::read_to_string(dir.join("Cargo.toml")).unwrap();
        assert!(cargo.contains(r#"name = "my-agent""#), "{cargo}");
        assert!(cargo.contains("[workspace]"), "{cargo}");

        let config = fs::read_to_string(dir.join("toka.toml")).unwrap();
        assert!(config.contains(r#"module = "my_agent.wasm""#), "{config}");
        assert!(config.contains(r#"publish = ["my_agent.>"]"#), "{config}");

        let lib = fs::read_to_string(dir.join("src/lib.rs")).unwrap();
        assert!(lib.contains(r#""my_agent.heartbeat""#), "{lib}");
        assert_eq!(
            fs::read_to_string(dir.join("wit/types.wit")).unwrap(),
            TYPES_WIT
        );
        assert_eq!(
            fs::read_to_string(dir.join("wit/worlds.wit")).unwrap(),
            WORLDS_WIT
        );

        for file in FILES {
            let text = fs::read_to_string(dir.join(file)).unwrap();
            for key in ["{{name}}", "{{snake}}"] {
                assert!(!text.contains(key), "{file} still contains {key}");
            }
        }
    }

    #[test]
    fn mixed_case_names_get_a_snake_case_library() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = new_agent(tmp.path(), "MyAgent").unwrap();
        let cargo = fs::read_to_string(dir.join("Cargo.toml")).unwrap();
        assert!(cargo.contains(r#"name = "MyAgent""#), "{cargo}");
        assert!(cargo.contains(r#"name = "my_agent""#), "{cargo}");
        let config = fs::read_to_string(dir.join("toka.toml")).unwrap();
        assert!(config.contains(r#"name = "MyAgent""#), "{config}");
        assert!(config.contains(r#"module = "my_agent.wasm""#), "{config}");
    }

    #[test]
    fn accepts_an_existing_empty_dir() {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir(tmp.path().join("empty")).unwrap();
        let dir = new_agent(tmp.path(), "empty").unwrap();
        assert!(dir.join("Cargo.toml").is_file());
    }

    #[test]
    fn rejects_bad_names() {
        let tmp = tempfile::tempdir().unwrap();
        let too_long = "a".repeat(MAX_NAME_LEN + 1);
        for name in [
            "",
            "né",
            "9lives",
            "has space",
            "_x",
            "a.b",
            "fn",
            "toka",
            "Toka",
            "Self",
            "WitBindgen",
            too_long.as_str(),
        ] {
            let err = new_agent(tmp.path(), name).unwrap_err();
            assert!(
                format!("{err:#}").contains(&tmp.path().display().to_string()),
                "{name:?}: {err:#}"
            );
        }
        // Nothing may be left behind by a refused name.
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 0);
    }

    #[test]
    fn refuses_an_existing_non_empty_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("taken");
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join("keep.txt"), "mine").unwrap();

        let err = new_agent(tmp.path(), "taken").unwrap_err();
        assert!(
            format!("{err:#}").contains(&dir.display().to_string()),
            "{err:#}"
        );
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
        assert_eq!(fs::read_to_string(dir.join("keep.txt")).unwrap(), "mine");
    }

    #[test]
    fn snake_names_are_snake_case_and_fit() {
        assert_eq!(snake_name("MyAgent"), "my_agent");
        assert_eq!(snake_name("my-agent"), "my_agent");
        assert_eq!(snake_name("HTTPServer"), "http_server");
        assert_eq!(snake_name("agent2Go"), "agent2_go");
        assert_eq!(snake_name("My_Agent"), "my_agent");
        let long: String = "aB".repeat(MAX_NAME_LEN / 2);
        assert!(snake_name(&long).len() <= MAX_SEGMENT_LEN);
    }

    #[test]
    fn render_is_single_pass() {
        let out = render("{{a}}-{{b}}-{{c}}", &[("a", "{{b}}"), ("b", "x")]);
        assert_eq!(out, "{{b}}-x-{{c}}");
    }
}
