//! The event record carried by the bus, and the runtime's own event kinds.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::topic::Kind;

/// The runtime's own event kinds. Agents may subscribe to them but never
/// publish them (nor any kind whose first segment is `toka` in another case).
/// Guest text in their payloads (`reason`, `message`) is bounded by
/// [`crate::text::bounded`] to [`crate::text::MAX_ERROR`] bytes plus a marker.
pub mod kinds {
    /// Scheduler tick; payload is the tick number as 8 little-endian bytes.
    pub const TICK: &str = "toka.tick";
    /// An agent instance finished `init`; payload is the agent name.
    pub const AGENT_STARTED: &str = "toka.agent.started";
    /// An agent instance was stopped by a fault; payload is JSON
    /// `{"agent":..,"reason":..}`.
    pub const AGENT_FAILED: &str = "toka.agent.failed";
    /// An agent was quarantined after repeated faults; payload is JSON
    /// `{"agent":..,"failures":..,"reason":..}`.
    pub const AGENT_QUARANTINED: &str = "toka.agent.quarantined";
    /// An event whose handling faulted; payload is JSON
    /// `{"agent":..,"event_id":..,"kind":..,"reason":..,"message":..}`.
    pub const DEAD_LETTER: &str = "toka.dead-letter";
    /// Source name the runtime uses for its own events.
    pub const RUNTIME_SOURCE: &str = "toka";
}

/// One event on the bus. Shared between subscribers behind an `Arc`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Unique within one run, increasing in publish order.
    pub id: u64,
    /// The event's kind.
    pub kind: Kind,
    /// Publishing agent's name, or `toka` for the runtime's own events.
    pub source: Arc<str>,
    /// Publication time, milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// Opaque payload.
    pub payload: Bytes,
}

impl Event {
    /// The payload as UTF-8 text, if it is.
    pub fn payload_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.payload).ok()
    }
}

/// Milliseconds since the Unix epoch, saturating at 0 for clocks set before it.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
