//! SchedulerAgent: keeps the latest index the IndexerAgent published and,
//! on its own `every` period, stores it as an object through the default
//! driver (`s3.put`), retrying failures with exponential backoff.
//!
//! # Config (the agent's `[[agents]]` table)
//! - `default_driver` (default `s3`): the driver's request prefix; the put
//!   is the request `<default_driver>.put`, so the agent needs
//!   `request = ["s3.put"]` (or `["s3.>"]`);
//! - `object_key` (default `index/latest.json`): the key the index is
//!   stored under (overwritten by each new index);
//! - `retries` (default 3, at most 16): attempts after the first before a
//!   job is given up;
//! - `request_timeout_ms` (default 5000): how long one put may take. It must
//!   fit in the agent's `timeout_ms` (a guest call's deadline), so raise
//!   that too, e.g. `timeout_ms = 15000`.
//!
//! # Events
//! Subscribe it to `index.done` and give it `every`. It handles:
//! - `index.done` with a `files` list: the whole payload becomes the latest
//!   index, to be stored on the next tick (a newer one replaces one still
//!   waiting or being retried, and its attempts start again from zero);
//! - `toka.tick`: when an index is waiting and its backoff has passed, one
//!   put attempt. On success it publishes `scheduler.job.done` `{"key",
//!   "bytes", "etag", "size", "driver", "attempts"}`. On failure it waits
//!   1, 2, 4, ... ticks (doubling, at most 64) before the next attempt and
//!   publishes `scheduler.job.retry` `{"key", "attempt", "error",
//!   "retry_in_ticks"}`; when the last retry fails too it publishes `scheduler.job.failed` `{"key",
//!   "bytes", "driver", "attempts", "error", "errors"}` (`error` the last,
//!   `errors` every attempt's) and drops that index.
//!
//! The backoff counts ticks instead of sleeping: a guest call is bounded by
//! `timeout_ms`, and a sleeping instance would hold its worker and miss its
//! events. Nothing is stored when no new index arrived since the last put,
//! nor when the new one lists the same files (paths, sizes and hashes) as
//! the last one stored: an indexer scanning every second must not become a
//! billed PUT every second. Such an index is answered with
//! `scheduler.job.unchanged` `{"key", "count"}` instead.
//! The waiting index lives in the instance: a restart forgets it until the
//! indexer's next `index.done` (which a restarted indexer sends in full).

wit_bindgen::generate!({ world: "agent", path: "../../wit", generate_all });

use std::cell::RefCell;

use exports::toka::runtime::handler::Guest;
use serde_json::{Value, json};
use toka::runtime::bus::publish;
use toka::runtime::log::{Field, Level, log};
use toka::runtime::request::{RequestError, request};
use toka::runtime::types::Event;

/// Longest backoff, in ticks.
const MAX_BACKOFF_TICKS: u64 = 64;

#[derive(Debug)]
struct Settings {
    driver: String,
    key: String,
    retries: u32,
    timeout_ms: u32,
}

/// An index waiting to be stored.
#[derive(Debug)]
struct Job {
    body: Vec<u8>,
    /// Attempts made so far.
    attempts: u32,
    /// The tick (of this instance's count) the next attempt waits for.
    next_tick: u64,
    errors: Vec<String>,
}

#[derive(Debug)]
struct State {
    settings: Settings,
    job: Option<Job>,
    ticks: u64,
    /// The `files` list of the last index stored.
    stored: Option<Value>,
}

thread_local! {
    static STATE: RefCell<Option<State>> = const { RefCell::new(None) };
}

struct Scheduler;

fn describe(err: &RequestError) -> String {
    match err {
        RequestError::AccessDenied => "access-denied".into(),
        RequestError::NoResponders => "no-responders".into(),
        RequestError::Timeout => "timeout".into(),
        RequestError::TooLarge(n) => format!("too-large (limit {n})"),
        RequestError::Busy => "busy".into(),
        RequestError::Loop => "loop".into(),
        RequestError::Remote(msg) => format!("remote: {msg}"),
        RequestError::Invalid(msg) => format!("invalid: {msg}"),
        RequestError::Unavailable => "unavailable".into(),
    }
}

fn send(kind: &str, payload: &Value) -> Result<(), String> {
    publish(kind, payload.to_string().as_bytes())
        .map(drop)
        .map_err(|e| format!("publish {kind}: {e:?}"))
}

/// One put of `body` under the configured key; the driver's reply header.
fn put(settings: &Settings, body: &[u8]) -> Result<Value, String> {
    let header = json!({ "key": settings.key, "content_type": "application/json" });
    let mut payload = header.to_string().into_bytes();
    payload.push(b'\n');
    payload.extend_from_slice(body);
    let kind = format!("{}.put", settings.driver);
    let reply = request(&kind, &payload, settings.timeout_ms).map_err(|e| describe(&e))?;
    let line = reply.split(|&b| b == b'\n').next().unwrap_or_default();
    serde_json::from_slice(line).map_err(|e| format!("the driver's reply is not JSON: {e}"))
}

fn tick(state: &mut State) -> Result<(), String> {
    state.ticks += 1;
    let now = state.ticks;
    let settings = &state.settings;
    let Some(job) = state.job.as_mut() else {
        return Ok(());
    };
    if now < job.next_tick {
        return Ok(());
    }
    job.attempts += 1;
    match put(settings, &job.body) {
        Ok(reply) => {
            let done = json!({
                "key": settings.key,
                "bytes": job.body.len(),
                "etag": reply.get("etag").cloned().unwrap_or(Value::Null),
                "size": reply.get("size").cloned().unwrap_or(Value::Null),
                "driver": settings.driver,
                "attempts": job.attempts,
            });
            let body = std::mem::take(&mut job.body);
            state.job = None;
            state.stored = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|mut v| v.get_mut("files").map(Value::take));
            send("scheduler.job.done", &done)
        }
        Err(error) => {
            log(
                Level::Warn,
                "storing the index failed",
                &[
                    Field {
                        key: "attempt".into(),
                        value: job.attempts.to_string(),
                    },
                    Field {
                        key: "error".into(),
                        value: error.clone(),
                    },
                ],
            );
            job.errors.push(error.clone());
            if job.attempts > settings.retries {
                let failed = json!({
                    "key": settings.key,
                    "bytes": job.body.len(),
                    "driver": settings.driver,
                    "attempts": job.attempts,
                    "error": error,
                    "errors": job.errors,
                });
                state.job = None;
                return send("scheduler.job.failed", &failed);
            }
            // 1, 2, 4, ... ticks after this one.
            let wait = (1u64 << (job.attempts - 1).min(6)).min(MAX_BACKOFF_TICKS);
            job.next_tick = now + wait;
            let retry = json!({
                "key": settings.key,
                "attempt": job.attempts,
                "error": error,
                "retry_in_ticks": wait,
            });
            send("scheduler.job.retry", &retry)
        }
    }
}

fn index_done(state: &mut State, payload: &[u8]) -> Result<(), String> {
    let index: Value =
        serde_json::from_slice(payload).map_err(|e| format!("index.done is not JSON: {e}"))?;
    if !index.get("files").is_some_and(Value::is_array) {
        // Sent without its list (too large for the indexer's payload limit):
        // nothing to store.
        log(
            Level::Warn,
            "index.done without a file list; nothing to store",
            &[],
        );
        return Ok(());
    }
    if state.job.is_none() && state.stored.as_ref() == index.get("files") {
        let count = index.get("files").and_then(Value::as_array).map_or(0, Vec::len);
        return send(
            "scheduler.job.unchanged",
            &json!({ "key": state.settings.key, "count": count }),
        );
    }
    state.job = Some(Job {
        body: payload.to_vec(),
        attempts: 0,
        next_tick: 0,
        errors: Vec::new(),
    });
    Ok(())
}

impl Guest for Scheduler {
    fn init(config: Vec<(String, String)>) -> Result<(), String> {
        let get = |key: &str| {
            config
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
        };
        let number = |key: &str, default: u32, max: u32| -> Result<u32, String> {
            match get(key) {
                None => Ok(default),
                Some(v) => match v.parse::<u32>() {
                    Ok(n) if n <= max => Ok(n),
                    _ => Err(format!("{key} `{v}`: expected an integer in 0..={max}")),
                },
            }
        };
        let settings = Settings {
            driver: get("default_driver").unwrap_or_else(|| "s3".into()),
            key: get("object_key").unwrap_or_else(|| "index/latest.json".into()),
            retries: number("retries", 3, 16)?,
            timeout_ms: number("request_timeout_ms", 5000, 600_000)?.max(1),
        };
        if settings.driver.is_empty() || settings.key.is_empty() {
            return Err("default_driver and object_key must not be empty".into());
        }
        STATE.set(Some(State {
            settings,
            job: None,
            ticks: 0,
            stored: None,
        }));
        Ok(())
    }

    fn handle(event: Event) -> Result<(), String> {
        STATE.with_borrow_mut(|state| {
            let state = state.as_mut().ok_or("not initialised")?;
            match event.kind.as_str() {
                "toka.tick" => tick(state),
                "index.done" => index_done(state, &event.payload),
                _ => Ok(()),
            }
        })
    }
}

export!(Scheduler);
