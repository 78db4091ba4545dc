//! The durable counter: counts events and keeps the count in the agent's
//! own key-value bucket (`wasi:keyvalue/atomics.increment`), so the count
//! continues after a fault restart and after the process restarts.
//!
//! Counts `toka.tick` and `counter.inc` events and publishes the new count
//! as `counter.value` (decimal text). A `counter.fault` event traps, to show
//! a fault restart picking up where the count was. A key-value error (such
//! as `access-denied` without the `kv` grant) is published as
//! `counter.error` and fails the event.
//!
//! Config: `step` (default 1); `bucket` (default `""`, the agent's own);
//! `key` (default `count`).

wit_bindgen::generate!({ world: "agent", path: "../../wit", generate_all });

use std::cell::RefCell;

use exports::toka::runtime::handler::Guest;
use toka::runtime::bus::publish;
use toka::runtime::types::Event;
use wasi::keyvalue::{atomics, store};

struct Settings {
    step: u64,
    bucket: String,
    key: String,
}

thread_local! {
    static SETTINGS: RefCell<Settings> = RefCell::new(Settings {
        step: 1,
        bucket: String::new(),
        key: "count".into(),
    });
    /// Opened on first use, kept for the instance's life.
    static BUCKET: RefCell<Option<store::Bucket>> = const { RefCell::new(None) };
}

fn describe(e: store::Error) -> String {
    match e {
        store::Error::NoSuchStore => "no-such-store".into(),
        store::Error::AccessDenied => "access-denied".into(),
        store::Error::Other(m) => format!("other: {m}"),
    }
}

/// Add `step` to the stored count; the new count.
fn count() -> Result<u64, String> {
    SETTINGS.with_borrow(|s| {
        BUCKET.with_borrow_mut(|bucket| {
            if bucket.is_none() {
                let opened =
                    store::open(&s.bucket).map_err(|e| format!("open: {}", describe(e)))?;
                *bucket = Some(opened);
            }
            let bucket = bucket.as_ref().expect("opened above");
            atomics::increment(bucket, &s.key, s.step)
                .map_err(|e| format!("increment: {}", describe(e)))
        })
    })
}

struct Counter;

impl Guest for Counter {
    fn init(config: Vec<(String, String)>) -> Result<(), String> {
        SETTINGS.with_borrow_mut(|s| {
            for (key, value) in config {
                match key.as_str() {
                    "step" => s.step = value.parse().map_err(|e| format!("step `{value}`: {e}"))?,
                    "bucket" => s.bucket = value,
                    "key" => s.key = value,
                    _ => {}
                }
            }
            Ok(())
        })
    }

    fn handle(event: Event) -> Result<(), String> {
        match event.kind.as_str() {
            "toka.tick" | "counter.inc" => {}
            "counter.fault" => unreachable!("asked to fault"),
            _ => return Ok(()),
        }
        match count() {
            Ok(n) => publish("counter.value", n.to_string().as_bytes())
                .map(drop)
                .map_err(|e| format!("publish counter.value: {e:?}")),
            Err(e) => {
                let _ = publish("counter.error", e.as_bytes());
                Err(e)
            }
        }
    }
}

export!(Counter);
