//! Counts ticks and publishes the running count as `counter.value`
//! (payload: the count in decimal text). Config: `step` (default 1).

wit_bindgen::generate!({ world: "agent", path: "../../wit", generate_all });

use std::cell::Cell;

use exports::toka::runtime::handler::Guest;
use toka::runtime::bus::publish;
use toka::runtime::types::Event;

thread_local! {
    static COUNT: Cell<u64> = const { Cell::new(0) };
    static STEP: Cell<u64> = const { Cell::new(1) };
}

struct Counter;

impl Guest for Counter {
    fn init(config: Vec<(String, String)>) -> Result<(), String> {
        for (key, value) in config {
            if key == "step" {
                let step = value.parse().map_err(|e| format!("step `{value}`: {e}"))?;
                STEP.set(step);
            }
        }
        Ok(())
    }

    fn handle(event: Event) -> Result<(), String> {
        if event.kind != "toka.tick" {
            return Ok(());
        }
        let count = COUNT.get() + STEP.get();
        COUNT.set(count);
        publish("counter.value", count.to_string().as_bytes())
            .map(drop)
            .map_err(|e| format!("publish counter.value: {e:?}"))
    }
}

export!(Counter);
