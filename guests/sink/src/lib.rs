//! The benchmark guest: `handle` does as little as an agent can (it counts
//! the event and touches its payload's length), so `toka bench` measures the
//! runtime's cost per event rather than the guest's. `init` always succeeds.

wit_bindgen::generate!({ world: "agent", path: "../../wit", generate_all });

use std::cell::Cell;

use exports::toka::runtime::handler::Guest;
use toka::runtime::types::Event;

thread_local! {
    static HANDLED: Cell<u64> = const { Cell::new(0) };
    static BYTES: Cell<u64> = const { Cell::new(0) };
}

struct Sink;

impl Guest for Sink {
    fn init(_config: Vec<(String, String)>) -> Result<(), String> {
        Ok(())
    }

    fn handle(event: Event) -> Result<(), String> {
        HANDLED.set(HANDLED.get() + 1);
        BYTES.set(BYTES.get() + event.payload.len() as u64);
        Ok(())
    }
}

export!(Sink);
