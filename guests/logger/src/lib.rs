//! The seed's Logger agent: logs every event it is given through the host's
//! `log` interface (so records carry the agent's name in the host's output).

wit_bindgen::generate!({ world: "agent", path: "../../wit", generate_all });

use exports::toka::runtime::handler::Guest;
use toka::runtime::log::{Field, Level, log};
use toka::runtime::types::Event;

struct Logger;

fn field(key: &str, value: String) -> Field {
    Field {
        key: key.into(),
        value,
    }
}

impl Guest for Logger {
    fn init(_config: Vec<(String, String)>) -> Result<(), String> {
        log(Level::Info, "logger ready", &[]);
        Ok(())
    }

    fn handle(event: Event) -> Result<(), String> {
        let payload = match std::str::from_utf8(&event.payload) {
            // Ticks carry a little-endian counter; show it as a number.
            _ if event.kind == "toka.tick" && event.payload.len() == 8 => {
                u64::from_le_bytes(event.payload[..8].try_into().unwrap()).to_string()
            }
            Ok(text) => text.to_string(),
            Err(_) => format!("<{} bytes>", event.payload.len()),
        };
        log(
            Level::Info,
            "event",
            &[
                field("kind", event.kind),
                field("source", event.source),
                field("id", event.id.to_string()),
                field("payload", payload),
            ],
        );
        Ok(())
    }
}

export!(Logger);
