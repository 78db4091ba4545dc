//! The key-value benchmark guest: an event whose kind ends in `.set`
//! (`kv.set`, `kv0.set`) stores its payload under the key `k` of the agent's
//! own bucket (a durable set); one ending in `.get` reads it back and fails
//! unless it is there with the same length as the last set. Nothing is published, so `toka bench` measures the store
//! through a guest, not the bus.

wit_bindgen::generate!({ world: "agent", path: "../../wit", generate_all });

use std::cell::{Cell, RefCell};

use exports::toka::runtime::handler::Guest;
use toka::runtime::types::Event;
use wasi::keyvalue::store;

thread_local! {
    static BUCKET: RefCell<Option<store::Bucket>> = const { RefCell::new(None) };
    static LEN: Cell<usize> = const { Cell::new(0) };
}

fn err(what: &str, e: store::Error) -> String {
    match e {
        store::Error::NoSuchStore => format!("{what}: no-such-store"),
        store::Error::AccessDenied => format!("{what}: access-denied"),
        store::Error::Other(m) => format!("{what}: other: {m}"),
    }
}

struct Bench;

impl Guest for Bench {
    fn init(_config: Vec<(String, String)>) -> Result<(), String> {
        let bucket = store::open("").map_err(|e| err("open", e))?;
        BUCKET.set(Some(bucket));
        Ok(())
    }

    fn handle(event: Event) -> Result<(), String> {
        BUCKET.with_borrow(|bucket| {
            let bucket = bucket.as_ref().ok_or("no bucket")?;
            match event.kind.rsplit('.').next() {
                Some("set") => {
                    bucket.set("k", &event.payload).map_err(|e| err("set", e))?;
                    LEN.set(event.payload.len());
                    Ok(())
                }
                Some("get") => match bucket.get("k").map_err(|e| err("get", e))? {
                    Some(v) if v.len() == LEN.get() => Ok(()),
                    Some(v) => Err(format!(
                        "get: {} bytes, the last set wrote {}",
                        v.len(),
                        LEN.get()
                    )),
                    None => Err("get: none".into()),
                },
                _ => Ok(()),
            }
        })
    }
}

export!(Bench);
