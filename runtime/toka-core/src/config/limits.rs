//! [`Limits`]: the per-agent resource limits, read from `[limits]` (the
//! defaults for every agent) and from the same keys in an `[[agents]]` table
//! (that agent's overrides).

use std::time::Duration;

use super::error::{Result, child};
use super::located::{Doc, Item, Unknown};

/// Largest accepted `event_bus.buffer_size` (and per-agent `mailbox`).
pub const MAX_BUFFER_SIZE: usize = 1_000_000;
/// Largest accepted `memory_mb`.
pub const MAX_MEMORY_MB: u64 = 4096;

/// Resource limits for one agent.
///
/// Appears as `[limits]` (defaults for all agents); each field may be
/// overridden per agent by the same key directly in its `[[agents]]` table.
/// Durations are humantime strings (`"60s"`, `"250ms"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Key `memory_mb`: linear memory cap per instance, in MiB. Default 64;
    /// must be `1..=4096`.
    pub memory_mb: u64,
    /// Key `timeout_ms`: wall-clock deadline per `init`/`handle` call. Default
    /// 1000; must be >= 1.
    pub timeout_ms: u64,
    /// Key `fuel`: fuel granted per call. Default `None` (no fuel metering);
    /// when given, must be >= 1.
    pub fuel: Option<u64>,
    /// Key `max_payload_bytes`: largest payload an agent may publish. Default 65536.
    pub max_payload_bytes: u64,
    /// Key `mailbox`: this agent's mailbox capacity. Default `None`, meaning
    /// `event_bus.buffer_size`; when given, must be `1..=1_000_000`.
    pub mailbox: Option<usize>,
    /// Key `publish_rate`: sustained publishes per second (token bucket refill).
    /// Default 1000; must be >= 1.
    pub publish_rate: u32,
    /// Key `publish_burst`: token bucket size. Default 1000; must be >= 1.
    pub publish_burst: u32,
    /// Key `stdout_bytes`: guest stdout+stderr bytes logged per instance; the
    /// rest is dropped. Default 1 MiB.
    pub stdout_bytes: u64,
    /// Key `log_records_per_sec`: `log` records an instance may emit per
    /// second (a token bucket holding one second's worth); the excess is
    /// dropped and counted. Default 200; must be >= 1.
    pub log_records_per_sec: u32,
    /// Key `log_bytes_per_sec`: `log` bytes (message plus fields, after
    /// truncation) an instance may emit per second, bucketed the same way.
    /// Default 65536; must be >= 1.
    pub log_bytes_per_sec: u64,
    /// Key `max_restarts`: faults within `restart_window` before the agent is
    /// quarantined, whether consecutive or spread between successes.
    /// Default 5.
    pub max_restarts: u32,
    /// Key `restart_window` (humantime). Default 60s.
    pub restart_window: Duration,
    /// Key `backoff` (humantime): first restart delay, doubled on each further
    /// restart. Default 100ms.
    pub backoff: Duration,
    /// Key `backoff_max` (humantime): cap on the restart delay. Default 10s.
    pub backoff_max: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_mb: 64,
            timeout_ms: 1000,
            fuel: None,
            max_payload_bytes: 65536,
            mailbox: None,
            publish_rate: 1000,
            publish_burst: 1000,
            stdout_bytes: 1024 * 1024,
            log_records_per_sec: 200,
            log_bytes_per_sec: 64 * 1024,
            max_restarts: 5,
            restart_window: Duration::from_secs(60),
            backoff: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
        }
    }
}

/// `[limits]`: the defaults every agent starts from.
pub(super) fn parse(doc: &Doc, item: &Item, unknown: &mut Unknown) -> Result<Limits> {
    let mut limits = Limits::default();
    for entry in doc.table(item, "limits")? {
        let path = child("limits", &entry.key);
        if !apply_limit(doc, &mut limits, &entry.key, &entry.item, &path)? {
            unknown.push(doc.unknown(entry, path));
        }
    }
    Ok(limits)
}

/// Applies `name` if it is a limit key; `Ok(false)` if it is not one.
pub(super) fn apply_limit(
    doc: &Doc,
    limits: &mut Limits,
    name: &str,
    value: &Item,
    path: &str,
) -> Result<bool> {
    const ANY: u64 = i64::MAX as u64;
    match name {
        "memory_mb" => limits.memory_mb = doc.uint(value, path, 1, MAX_MEMORY_MB)?,
        "timeout_ms" => limits.timeout_ms = doc.uint(value, path, 1, ANY)?,
        // Zero fuel would trap every call before it starts; omitting the key is how
        // metering is turned off.
        "fuel" => limits.fuel = Some(doc.uint(value, path, 1, ANY)?),
        "max_payload_bytes" => limits.max_payload_bytes = doc.uint(value, path, 0, ANY)?,
        "mailbox" => limits.mailbox = Some(doc.usize(value, path, 1, MAX_BUFFER_SIZE)?),
        "publish_rate" => limits.publish_rate = doc.u32(value, path, 1)?,
        "publish_burst" => limits.publish_burst = doc.u32(value, path, 1)?,
        "stdout_bytes" => limits.stdout_bytes = doc.uint(value, path, 0, ANY)?,
        "log_records_per_sec" => limits.log_records_per_sec = doc.u32(value, path, 1)?,
        "log_bytes_per_sec" => limits.log_bytes_per_sec = doc.uint(value, path, 1, ANY)?,
        "max_restarts" => limits.max_restarts = doc.u32(value, path, 0)?,
        "restart_window" => limits.restart_window = doc.duration(value, path, Duration::ZERO)?,
        "backoff" => limits.backoff = doc.duration(value, path, Duration::ZERO)?,
        "backoff_max" => limits.backoff_max = doc.duration(value, path, Duration::ZERO)?,
        _ => return Ok(false),
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::config::testing::parse;

    #[test]
    fn agent_limits_override_defaults_and_inherit_the_rest() {
        let cfg = parse(
            r#"
[limits]
memory_mb = 128
timeout_ms = 500
restart_window = "2m"

[[agents]]
name = "Fast"
timeout_ms = 50
fuel = 1000000

[[agents]]
name = "Plain"
"#,
        )
        .unwrap();
        assert_eq!(cfg.limits.timeout_ms, 500);
        let fast = &cfg.agents[0].limits;
        assert_eq!(fast.timeout_ms, 50);
        assert_eq!(fast.fuel, Some(1_000_000));
        assert_eq!(fast.memory_mb, 128);
        assert_eq!(fast.restart_window, Duration::from_secs(120));
        assert_eq!(fast.backoff, Duration::from_millis(100));
        assert!(cfg.agents[0].settings.is_empty());
        assert_eq!(cfg.agents[1].limits, cfg.limits);
    }
}
