//! Reacts to another agent's events: watches `counter.value` and publishes
//! `counter.milestone` whenever the count reaches a multiple of `every_n`
//! (config key, default 5), so the demo shows agents talking.

wit_bindgen::generate!({ world: "agent", path: "../../wit", generate_all });

use std::cell::Cell;

use exports::toka::runtime::handler::Guest;
use toka::runtime::bus::publish;
use toka::runtime::log::{Field, Level, log};
use toka::runtime::types::Event;

thread_local! {
    static EVERY_N: Cell<u64> = const { Cell::new(5) };
}

struct Milestone;

impl Guest for Milestone {
    fn init(config: Vec<(String, String)>) -> Result<(), String> {
        for (key, value) in config {
            if key == "every_n" {
                let n: u64 = value
                    .parse()
                    .map_err(|e| format!("every_n `{value}`: {e}"))?;
                if n == 0 {
                    return Err("every_n must be at least 1".into());
                }
                EVERY_N.set(n);
            }
        }
        Ok(())
    }

    fn handle(event: Event) -> Result<(), String> {
        let text = String::from_utf8(event.payload).map_err(|_| "payload is not UTF-8")?;
        let count: u64 = text
            .trim()
            .parse()
            .map_err(|e| format!("count `{text}`: {e}"))?;
        if count % EVERY_N.get() == 0 {
            let message = format!("{} reached {count}", event.source);
            log(
                Level::Info,
                "milestone",
                &[Field {
                    key: "count".into(),
                    value: count.to_string(),
                }],
            );
            publish("counter.milestone", message.as_bytes())
                .map_err(|e| format!("publish counter.milestone: {e:?}"))?;
        }
        Ok(())
    }
}

export!(Milestone);
