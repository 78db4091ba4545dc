//! Test guest built against a frozen copy of the `toka:runtime@0.1.0`
//! contract (`wit/` beside this crate): proves that hosts serving later
//! `0.1.x` versions keep loading agents built for `0.1.0`. It echoes every
//! event as `legacy.echo` with the same payload.

wit_bindgen::generate!({ world: "agent", path: "wit" });

use exports::toka::runtime::handler::Guest;
use toka::runtime::bus::publish;
use toka::runtime::types::Event;

struct Legacy;

impl Guest for Legacy {
    fn init(_config: Vec<(String, String)>) -> Result<(), String> {
        Ok(())
    }

    fn handle(event: Event) -> Result<(), String> {
        publish("legacy.echo", &event.payload).map_err(|e| format!("{e:?}"))?;
        Ok(())
    }
}

export!(Legacy);
