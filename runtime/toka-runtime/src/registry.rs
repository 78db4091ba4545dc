//! What the runtime will run: the plan `toka check` prints, and the report a
//! run returns.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use toka_core::PatternSet;
use toka_core::config::Limits;

use crate::bus::BusStats;
use crate::host::ModuleError;

/// How an agent is implemented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentKind {
    /// A wasm component loaded from this file.
    Wasm(PathBuf),
    /// A native Rust agent registered by the embedder.
    Native,
}

/// One agent in the plan.
#[derive(Debug, Clone)]
pub struct PlannedAgent {
    /// Its name.
    pub name: String,
    /// Wasm or native.
    pub kind: AgentKind,
    /// Kinds it receives.
    pub subscribe: PatternSet,
    /// Kinds it may publish (`None`: any non-runtime kind, for native agents).
    pub publish: Option<PatternSet>,
    /// Its own tick period, if any.
    pub every: Option<Duration>,
    /// Its effective limits (wasm agents).
    pub limits: Option<Limits>,
    /// Names of its free-form `init` keys.
    pub settings: Vec<String>,
    /// One line per capability it holds (each capability describes its own
    /// grant); empty: it holds none.
    pub grants: Vec<String>,
}

/// Everything a configuration resolves to, before anything runs.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Agents that will run.
    pub agents: Vec<PlannedAgent>,
    /// Agents whose module failed to load: `(agent, error)`.
    pub failed: Vec<(String, ModuleError)>,
    /// Global tick period.
    pub tick: Duration,
    /// Mailbox capacity.
    pub buffer_size: usize,
    /// Config sections this build ignores.
    pub ignored_sections: Vec<String>,
}

fn patterns(p: &PatternSet) -> String {
    if p.is_empty() {
        return "(nothing)".into();
    }
    p.patterns()
        .iter()
        .map(|p| p.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "bus: mailbox {} events per agent, toka.tick every {}",
            self.buffer_size,
            humantime::format_duration(self.tick)
        )?;
        writeln!(
            f,
            "agents: {} ready, {} failed",
            self.agents.len(),
            self.failed.len()
        )?;
        for a in &self.agents {
            match &a.kind {
                AgentKind::Wasm(path) => writeln!(f, "  {} (wasm: {})", a.name, path.display())?,
                AgentKind::Native => writeln!(f, "  {} (native)", a.name)?,
            }
            writeln!(f, "    subscribe: {}", patterns(&a.subscribe))?;
            match &a.publish {
                Some(p) => writeln!(f, "    publish:   {}", patterns(p))?,
                None => writeln!(f, "    publish:   any non-runtime kind")?,
            }
            if let Some(every) = a.every {
                writeln!(
                    f,
                    "    ticks:     own, every {}",
                    humantime::format_duration(every)
                )?;
            }
            if let Some(l) = &a.limits {
                writeln!(
                    f,
                    "    limits:    memory {} MiB, {} ms per call, fuel {}, payload {} B, {} publishes/s (burst {})",
                    l.memory_mb,
                    l.timeout_ms,
                    l.fuel.map_or("off".to_string(), |n| n.to_string()),
                    l.max_payload_bytes,
                    l.publish_rate,
                    l.publish_burst
                )?;
            }
            if !a.settings.is_empty() {
                writeln!(f, "    init keys: {}", a.settings.join(", "))?;
            }
            if let AgentKind::Wasm(_) = a.kind {
                if a.grants.is_empty() {
                    writeln!(f, "    grants:    none")?;
                }
                for grant in &a.grants {
                    writeln!(f, "    grants:    {grant}")?;
                }
            }
        }
        for (agent, err) in &self.failed {
            writeln!(f, "  {agent} FAILED: {err}")?;
        }
        if !self.ignored_sections.is_empty() {
            writeln!(f, "ignored sections: {}", self.ignored_sections.join(", "))?;
        }
        Ok(())
    }
}

/// What one agent did during a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentReport {
    /// Its name.
    pub name: String,
    /// Events it handled.
    pub handled: u64,
    /// Handler calls that returned an error value.
    pub errors: u64,
    /// Faults (traps, deadlines, limits, failed starts).
    pub faults: u64,
    /// Instances started.
    pub starts: u64,
    /// Events dropped because its mailbox was full (or it was quarantined).
    pub dropped: u64,
    /// Events it published.
    pub published: u64,
    /// Publishes refused (grant, size, rate).
    pub refused: u64,
    /// Guest output bytes passed to the log.
    pub output_logged: u64,
    /// Guest output bytes discarded past the `stdout_bytes` cap.
    pub output_discarded: u64,
    /// Guest `log` records passed to the log.
    pub log_records: u64,
    /// Guest `log` bytes passed to the log (after truncation).
    pub log_bytes: u64,
    /// Guest `log` records dropped over the `log_records_per_sec` /
    /// `log_bytes_per_sec` budget.
    pub log_records_dropped: u64,
    /// Bytes of those dropped records, as the guest sent them.
    pub log_bytes_dropped: u64,
    /// Whether it ended quarantined.
    pub quarantined: bool,
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct Report {
    /// Per agent, in configuration order (native agents last).
    pub agents: Vec<AgentReport>,
    /// Bus totals.
    pub bus: BusStats,
    /// Events still queued when the drain deadline passed.
    pub abandoned: u64,
    /// Modules that failed to load.
    pub failed: Vec<(String, ModuleError)>,
}

impl Report {
    /// The report for agent `name`.
    pub fn agent(&self, name: &str) -> Option<&AgentReport> {
        self.agents.iter().find(|a| a.name == name)
    }
}
