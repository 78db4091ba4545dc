//! IndexerAgent: walks `scan_path` (a directory the operator granted with
//! `dirs`, read-only is enough) and publishes what is in it and, later, only
//! what changed.
//!
//! # Config (the agent's `[[agents]]` table)
//! - `scan_path` (required): a guest path inside a granted directory, e.g.
//!   `/content` for `dirs = [{ host = "content", guest = "/content" }]`;
//! - `max_files` (default 10,000): the most files one scan indexes; the rest
//!   are left out and the scan's `index.done` says `"truncated": true`;
//! - `max_file_mb` (default 64): files larger than this are indexed with
//!   their size and `"sha256": null`, without being read.
//!
//! # Events
//! A scan runs on every tick (`toka.tick`: the agent's own `every`, or the
//! global tick if it subscribes to it) and on `index.scan`. It walks the tree
//! in name order, regular files only (symlinks are neither followed nor
//! indexed), reads each file in 64 KiB chunks and publishes:
//! - `index.file` `{"path", "size", "sha256"}` for each file that is new or
//!   changed (size or content) since the last scan; `path` is relative to
//!   `scan_path`, `/`-separated;
//! - `index.removed` `{"path"}` for each file gone since the last scan;
//! - `index.done` `{"files": [{"path", "size", "sha256"}, ...], "count",
//!   "bytes", "changed", "removed", "truncated", "scan"}`: the whole current
//!   index (sorted by path), its file count and total size, and this scan's
//!   counts. When that payload is larger than the agent's
//!   `max_payload_bytes` (64 KiB unless raised), `index.done` is sent
//!   without the list (`"files": null`) and `"too_large": true`: raise
//!   `max_payload_bytes` for big trees.
//!
//! The first scan reports every file. The index lives in the instance only:
//! a restart (a fault, or the runtime's) re-indexes everything, so a
//! consumer must treat `index.file` as "is now", never as "has just changed".
//! A file whose `index.file` could not be published (rate limit, payload
//! limit) is not recorded, so the next scan reports it again.
//!
//! A scan is one guest call, bounded by the agent's `timeout_ms` (1 s by
//! default): give a big tree a longer `timeout_ms`, or a smaller
//! `max_file_mb`.

wit_bindgen::generate!({ world: "agent", path: "../../wit", generate_all });

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use exports::toka::runtime::handler::Guest;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use toka::runtime::bus::publish;
use toka::runtime::log::{Field, Level, log};
use toka::runtime::types::{Error, Event};

/// Bytes read from a file at a time.
const CHUNK: usize = 64 * 1024;

/// What one file was at the last scan.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    size: u64,
    sha256: Option<String>,
}

#[derive(Debug)]
struct Settings {
    scan_path: String,
    max_files: usize,
    max_file_bytes: u64,
}

#[derive(Debug, Default)]
struct State {
    settings: Option<Settings>,
    /// The index as last published, by relative path.
    index: BTreeMap<String, Entry>,
    scans: u64,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State::default());
}

struct Indexer;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn warn(message: &str, path: &str, error: &str) {
    log(
        Level::Warn,
        message,
        &[
            Field {
                key: "path".into(),
                value: path.into(),
            },
            Field {
                key: "error".into(),
                value: error.into(),
            },
        ],
    );
}

/// SHA-256 of the file at `path`, read in [`CHUNK`]s.
fn hash(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

/// Everything under `root`: relative path -> entry, at most `max_files`
/// (the bool is true when some were left out).
fn walk(settings: &Settings) -> (BTreeMap<String, Entry>, bool) {
    let mut found = BTreeMap::new();
    let mut truncated = false;
    // Depth first, in name order; directories still to read, as (host-side
    // guest path, relative path).
    let mut stack = vec![(Path::new(&settings.scan_path).to_path_buf(), String::new())];
    while let Some((dir, rel)) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) => {
                warn(
                    "cannot read directory",
                    &dir.display().to_string(),
                    &e.to_string(),
                );
                continue;
            }
        };
        let mut names: Vec<(String, std::fs::FileType)> = Vec::new();
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            names.push((entry.file_name().to_string_lossy().into_owned(), kind));
        }
        names.sort_by(|a, b| a.0.cmp(&b.0));
        let mut subdirs = Vec::new();
        for (name, kind) in names {
            let rel_path = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            let path = dir.join(&name);
            if kind.is_dir() {
                subdirs.push((path, rel_path));
            } else if kind.is_file() {
                if found.len() >= settings.max_files {
                    truncated = true;
                    continue;
                }
                let size = match std::fs::symlink_metadata(&path) {
                    Ok(meta) => meta.len(),
                    Err(e) => {
                        warn("cannot stat file", &rel_path, &e.to_string());
                        continue;
                    }
                };
                let sha256 = if size > settings.max_file_bytes {
                    None
                } else {
                    match hash(&path) {
                        Ok(h) => Some(h),
                        Err(e) => {
                            warn("cannot read file", &rel_path, &e.to_string());
                            continue;
                        }
                    }
                };
                found.insert(rel_path, Entry { size, sha256 });
            }
            // Symlinks and anything else: not indexed.
        }
        // Reversed so the stack pops them in name order.
        stack.extend(subdirs.into_iter().rev());
    }
    (found, truncated)
}

fn file_json(path: &str, entry: &Entry) -> Value {
    json!({ "path": path, "size": entry.size, "sha256": entry.sha256 })
}

fn send(kind: &str, payload: &Value) -> Result<(), Error> {
    publish(kind, payload.to_string().as_bytes()).map(drop)
}

fn describe(e: &Error) -> String {
    match e {
        Error::AccessDenied => "access-denied".into(),
        Error::TooLarge(n) => format!("too-large (limit {n})"),
        Error::RateLimited => "rate-limited".into(),
        Error::Invalid(msg) => format!("invalid: {msg}"),
        Error::Unavailable => "unavailable".into(),
    }
}

/// One scan: walk, publish the differences, then the summary.
fn scan(state: &mut State) -> Result<(), String> {
    let settings = state.settings.as_ref().ok_or("not initialised")?;
    let (found, truncated) = walk(settings);
    state.scans += 1;
    let (mut changed, mut removed) = (0u64, 0u64);
    let mut first_error: Option<String> = None;
    for (path, entry) in &found {
        if state.index.get(path) == Some(entry) {
            continue;
        }
        match send("index.file", &file_json(path, entry)) {
            Ok(()) => {
                state.index.insert(path.clone(), entry.clone());
                changed += 1;
            }
            Err(e) => {
                // Not recorded: the next scan reports it again.
                first_error.get_or_insert_with(|| format!("index.file {path}: {}", describe(&e)));
            }
        }
    }
    let gone: Vec<String> = state
        .index
        .keys()
        .filter(|p| !found.contains_key(*p))
        .cloned()
        .collect();
    for path in gone {
        match send("index.removed", &json!({ "path": path })) {
            Ok(()) => {
                state.index.remove(&path);
                removed += 1;
            }
            Err(e) => {
                first_error
                    .get_or_insert_with(|| format!("index.removed {path}: {}", describe(&e)));
            }
        }
    }
    let files: Vec<Value> = state
        .index
        .iter()
        .map(|(path, entry)| file_json(path, entry))
        .collect();
    let count = state.index.len();
    let bytes: u64 = state.index.values().map(|e| e.size).sum();
    let mut done = json!({
        "files": files,
        "count": count,
        "bytes": bytes,
        "changed": changed,
        "removed": removed,
        "truncated": truncated,
        "scan": state.scans,
    });
    match send("index.done", &done) {
        Ok(()) => {}
        Err(Error::TooLarge(_)) => {
            done["files"] = Value::Null;
            done["too_large"] = Value::Bool(true);
            send("index.done", &done).map_err(|e| format!("index.done: {}", describe(&e)))?;
        }
        Err(e) => return Err(format!("index.done: {}", describe(&e))),
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

impl Guest for Indexer {
    fn init(config: Vec<(String, String)>) -> Result<(), String> {
        let get = |key: &str| {
            config
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        };
        let scan_path = get("scan_path")
            .ok_or("missing setting `scan_path` (a guest path granted with `dirs`)")?
            .trim_end_matches('/')
            .to_owned();
        if !scan_path.starts_with('/') {
            return Err(format!(
                "scan_path {scan_path:?} must be an absolute guest path"
            ));
        }
        let number = |key: &str, default: u64| -> Result<u64, String> {
            match get(key) {
                None => Ok(default),
                Some(v) => v.parse().map_err(|e| format!("{key} `{v}`: {e}")),
            }
        };
        let max_files = usize::try_from(number("max_files", 10_000)?).unwrap_or(usize::MAX);
        let max_file_bytes = number("max_file_mb", 64)?.saturating_mul(1 << 20);
        STATE.with_borrow_mut(|s| {
            s.settings = Some(Settings {
                scan_path,
                max_files,
                max_file_bytes,
            });
        });
        Ok(())
    }

    fn handle(event: Event) -> Result<(), String> {
        match event.kind.as_str() {
            "toka.tick" | "index.scan" => STATE.with_borrow_mut(scan),
            _ => Ok(()),
        }
    }
}

export!(Indexer);
