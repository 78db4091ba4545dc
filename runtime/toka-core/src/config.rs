//! Loading the operator's `toka.toml` into typed, validated settings.
//!
//! The loader understands four top-level keys — `modules_dir`, `[event_bus]`,
//! `[limits]` and `[[agents]]` — and reports everything else back to the caller
//! (as [`RuntimeConfig::ignored_sections`] and [`RuntimeConfig::unknown_keys`])
//! rather than logging, so the CLI decides how loudly to warn.
//!
//! Every error names the file, the 1-based line and column, and the dotted key
//! it is about (`event_bus.buffer_size`, `agents[2].subscribe`; agent indices
//! are 0-based, in file order), so an operator can jump straight to it.
//!
//! # Interpolation
//!
//! Strings in the understood parts (and in sections a capability crate declares
//! via [`RuntimeConfig::load_with`]) may use:
//! - `${VAR}`: the environment variable `VAR`, which must be set;
//! - `${VAR:-default}`: `VAR`, or `default` when it is unset or empty (the
//!   default is taken literally up to the first `}`);
//! - `$$`: a literal `$`.
//!
//! A `$` followed by anything else is kept as is. Interpolation happens before
//! type checking and only ever produces strings, so `buffer_size = "${N}"` is a
//! type error whatever `N` holds. Ignored sections are never interpolated, so a
//! file carrying `[drivers.s3]` credentials for another build still loads when
//! those variables are absent.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::event::kinds::RUNTIME_SOURCE;
use crate::topic::{Pattern, PatternSet, SYSTEM_PREFIX, is_system_kind};

/// Result type of the loader.
pub type Result<T, E = ConfigError> = std::result::Result<T, E>;

/// Largest accepted `event_bus.buffer_size` (and per-agent `mailbox`).
pub const MAX_BUFFER_SIZE: usize = 1_000_000;
/// Largest accepted `memory_mb`.
pub const MAX_MEMORY_MB: u64 = 4096;
/// Longest accepted agent name, in characters.
pub const MAX_AGENT_NAME_LEN: usize = 64;

const KNOWN_TOP_LEVEL: [&str; 8] = [
    "modules_dir",
    "modules",
    "event_bus",
    "limits",
    "agents",
    "secrets",
    "vault",
    "trust",
];

/// The operations `auth = [...]` may grant, each on its own.
pub const AUTH_GRANTS: [&str; 3] = ["password", "issue-token", "verify-token"];

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Could not read the file.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file that could not be read.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// Anything wrong with the content: syntax, types, ranges, names, patterns,
    /// unset environment variables.
    ///
    /// Displays as `{file}:{line}:{column}: {key}: {message}`, or
    /// `{file}:{line}:{column}: {message}` when there is no key (syntax errors).
    #[error("{}:{line}:{column}: {}{message}", .file.display(), key_prefix(.key))]
    Invalid {
        /// The configuration file (or the name given to [`RuntimeConfig::parse_str`]).
        file: PathBuf,
        /// 1-based line of the offending value.
        line: usize,
        /// 1-based column (in characters) of the offending value.
        column: usize,
        /// Dotted path of the offending key, e.g. `event_bus.buffer_size` or
        /// `agents[0].subscribe` (agent indices are 0-based).
        key: Option<String>,
        /// What is wrong, in one line.
        message: String,
    },
}

fn key_prefix(key: &Option<String>) -> String {
    key.as_ref().map(|k| format!("{k}: ")).unwrap_or_default()
}

impl ConfigError {
    /// 1-based line of the problem, if it is about the content.
    pub fn line(&self) -> Option<usize> {
        match self {
            ConfigError::Invalid { line, .. } => Some(*line),
            ConfigError::Io { .. } => None,
        }
    }

    /// 1-based column of the problem, if it is about the content.
    pub fn column(&self) -> Option<usize> {
        match self {
            ConfigError::Invalid { column, .. } => Some(*column),
            ConfigError::Io { .. } => None,
        }
    }

    /// Dotted key the problem is about, if any.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. } => key.as_deref(),
            ConfigError::Io { .. } => None,
        }
    }
}

/// The whole runtime configuration, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct RuntimeConfig {
    /// The file this was loaded from (as given).
    pub source: PathBuf,
    /// Directory holding agent modules. Top-level key `modules_dir`, resolved
    /// relative to the config file's directory; default `<config dir>/modules`.
    pub modules_dir: PathBuf,
    /// `[event_bus]`: bus and scheduler settings.
    pub event_bus: EventBusConfig,
    /// `[limits]`: defaults applied to every agent unless the agent overrides them.
    pub limits: Limits,
    /// `[[agents]]`, in file order.
    pub agents: Vec<AgentConfig>,
    /// `[secrets]` (and the seed's `[event_bus] secret_store`).
    pub secrets: SecretsConfig,
    /// `[vault]`.
    pub vault: VaultConfig,
    /// `[trust]`: module signature policy.
    pub trust: TrustConfig,
    /// `[modules]`: bounds on reading and compiling module files.
    pub modules: ModulesConfig,
    /// Top-level sections (or keys) this build does not understand, sorted, e.g.
    /// `["drivers", "providers", "vault"]`. Not interpolated, not validated.
    pub ignored_sections: Vec<String>,
    /// Unknown keys inside known sections, in file order, as dotted paths with
    /// their location, e.g. `"event_bus.bufer_size (config/x.toml:3:1)"`.
    /// Free-form keys in `[[agents]]` are settings, not unknown keys.
    pub unknown_keys: Vec<String>,
    /// Extra sections the caller declared as known (see [`RuntimeConfig::load_with`]),
    /// interpolated. Declared sections absent from the file are absent here.
    pub sections: BTreeMap<String, toml::Table>,
}

/// `[event_bus]`: the bus and the global scheduler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventBusConfig {
    /// Per-agent mailbox capacity (events). Key `buffer_size`, default 1024,
    /// must be `1..=1_000_000`.
    pub buffer_size: usize,
    /// Global tick period. Key `scheduler_tick_ms`, default 100, must be >= 1.
    pub scheduler_tick: Duration,
    /// Key `secret_store` (path to the sled secrets db, used by the `secrets`
    /// feature); resolved relative to the config dir. Default `None`.
    pub secret_store: Option<PathBuf>,
    /// Key `drain_timeout` (humantime string, e.g. `"5s"`), default 5s: how long
    /// shutdown waits for mailboxes to drain.
    pub drain_timeout: Duration,
    /// Key `workers`: threads running wasm agents; default `None` (= number of
    /// CPUs). Must be >= 1.
    pub workers: Option<usize>,
}

impl Default for EventBusConfig {
    fn default() -> Self {
        EventBusConfig {
            buffer_size: 1024,
            scheduler_tick: Duration::from_millis(100),
            secret_store: None,
            drain_timeout: Duration::from_secs(5),
            workers: None,
        }
    }
}

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

/// `[secrets]`: where the encrypted secret store and its master key live.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretsConfig {
    /// Key `[secrets] path`, or the seed's `[event_bus] secret_store` (the
    /// former wins when both are given): the sled database. Relative to the
    /// config file. `None` = no store configured.
    pub path: Option<PathBuf>,
    /// Key `[secrets] key_file`: the master key file that `toka secrets init`
    /// creates (mode 0600). `None` = `$TOKA_MASTER_KEY` only, or the default
    /// `~/.config/toka/master.key` chosen by the CLI.
    pub key_file: Option<PathBuf>,
}

/// `[vault]`: the encrypted blob store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultConfig {
    /// Key `path` (the seed's key): the vault directory. `None` = no vault.
    pub path: Option<PathBuf>,
    /// Key `max_blob_mb`: largest blob an agent may put. Default 16.
    pub max_blob_mb: u64,
}

impl Default for VaultConfig {
    fn default() -> Self {
        VaultConfig {
            path: None,
            max_blob_mb: 16,
        }
    }
}

/// `[modules]`: what the host accepts as a module file and how much it may
/// spend compiling one. Module files are untrusted input: these bound the
/// memory and time one bad file can cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModulesConfig {
    /// Key `max_module_mb`: largest module file read, in MiB. Default 64
    /// (a Python component is about 40); must be `1..=4096`.
    pub max_module_mb: u64,
    /// Key `compile_timeout` (humantime): wall-clock budget for compiling one
    /// module. Default `"60s"`; must be > 0.
    pub compile_timeout: Duration,
    /// Key `compile_memory_mb`: address-space limit of the process compiling
    /// one module, in MiB. Default 2048; must be `64..=65536`.
    pub compile_memory_mb: u64,
}

impl Default for ModulesConfig {
    fn default() -> Self {
        ModulesConfig {
            max_module_mb: 64,
            compile_timeout: Duration::from_secs(60),
            compile_memory_mb: 2048,
        }
    }
}

/// `[trust]`: which module signatures the operator trusts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustConfig {
    /// Key `require_signatures`: refuse modules without a valid signature by
    /// one of `trusted_keys`. Default `false`.
    pub require_signatures: bool,
    /// Key `trusted_keys`: public keys as printed by `toka keygen`
    /// (`toka-ed25519-public:...`), or paths to `.pub` files (relative to
    /// the config file).
    pub trusted_keys: Vec<String>,
}

/// Capabilities granted to one agent; everything is denied by default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    /// Key `secrets`: secret-name patterns the agent may read (`"stripe/*"`,
    /// `"db/password"`, `"team/**"`). Empty = none.
    pub secrets: Vec<String>,
    /// Key `vault = true`: the agent may use its own vault namespace (named
    /// after the agent).
    pub vault: bool,
    /// Key `vault_shared`: further vault namespaces the agent may use.
    pub vault_shared: Vec<String>,
    /// Key `vault_quota_mb`: total size of the agent's own namespace. Default 64.
    pub vault_quota_mb: u64,
    /// Key `auth`: any of [`AUTH_GRANTS`].
    pub auth: Vec<String>,
}

/// One `[[agents]]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentConfig {
    /// Key `name` (required). 1-64 characters of `A-Z a-z 0-9 _ -`; unique
    /// across agents; `toka` is reserved for the runtime.
    pub name: String,
    /// Key `module` if given (a relative path is resolved against
    /// `modules_dir`; an absolute one is used as is); else
    /// `<modules_dir>/<name>.wasm` if that file exists, else
    /// `<modules_dir>/<snake_case(name)>.wasm` (`Logger` -> `logger.wasm`,
    /// `IndexerAgent` -> `indexer_agent.wasm`, `my-agent` stays `my-agent.wasm`).
    pub module: PathBuf,
    /// True when `module` was given explicitly.
    pub module_explicit: bool,
    /// Key `subscribe`: array of patterns (see [`crate::topic`]). Default empty
    /// = receives nothing.
    pub subscribe: PatternSet,
    /// Key `publish`: array of patterns. Default empty = may publish nothing.
    /// Patterns starting with the literal segment `toka` are rejected.
    pub publish: PatternSet,
    /// Key `every` (humantime, e.g. `"5s"`, >= 1ms): the agent's own tick
    /// period. Default `None`.
    pub every: Option<Duration>,
    /// Effective limits: `[limits]` overridden by the agent's own limit keys.
    pub limits: Limits,
    /// Keys `secrets`, `vault`, `vault_shared`, `vault_quota_mb`, `auth`.
    pub grants: Grants,
    /// Every other key of the agent's table, in file order, rendered as
    /// strings: strings as is (after interpolation), other values in their TOML
    /// spelling (`42`, `true`, `[1, 2]`, `{ a = 1 }`).
    pub settings: Vec<(String, String)>,
    /// Where this agent's table starts, for later error messages:
    /// `"config/x.toml:7:1"`.
    pub location: String,
}

impl RuntimeConfig {
    /// Load and validate `path` with no extra known sections.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        Self::load_with(path, &[])
    }

    /// Same as [`load`](Self::load), but top-level tables named in
    /// `extra_known` are interpolated and returned in
    /// [`sections`](Self::sections) instead of being listed in
    /// [`ignored_sections`](Self::ignored_sections). Names of built-in sections
    /// are ignored here.
    pub fn load_with(path: impl AsRef<Path>, extra_known: &[&str]) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let base_dir = path.parent().unwrap_or(Path::new(""));
        Self::parse_str(&text, path, base_dir, extra_known)
    }

    /// Parse from a string (tests, embedders); `source` names it in errors.
    /// Relative paths resolve against `base_dir`. Reads the process environment.
    pub fn parse_str(
        text: &str,
        source: &Path,
        base_dir: &Path,
        extra_known: &[&str],
    ) -> Result<Self> {
        // A non-UTF-8 value cannot be spliced into a TOML string, so it counts as unset.
        let env = |name: &str| std::env::var_os(name).and_then(|v| v.into_string().ok());
        Self::parse_str_with_env(text, source, base_dir, extra_known, &env)
    }

    /// Same as [`parse_str`](Self::parse_str) with an injectable environment
    /// lookup (`None` = unset).
    pub fn parse_str_with_env(
        text: &str,
        source: &Path,
        base_dir: &Path,
        extra_known: &[&str],
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self> {
        let doc = Doc { text, source };
        let mut root = DeTable::parse(text).map_err(|e| doc.syntax_error(&e))?;
        let is_known = |k: &str| KNOWN_TOP_LEVEL.contains(&k) || extra_known.contains(&k);

        // All of it first, so a bad `${...}` is reported even where a type error follows.
        for (key, value) in root.get_mut().iter_mut() {
            if is_known(key.get_ref()) {
                doc.interpolate(value, &child("", key.get_ref()), env)?;
            }
        }
        let root = root.into_inner();

        let mut unknown: Vec<(usize, String)> = Vec::new();

        let modules_dir = match root.get("modules_dir") {
            Some(node) => base_dir.join(doc.path(node, "modules_dir")?),
            None => base_dir.join("modules"),
        };

        let event_bus = match root.get("event_bus") {
            Some(node) => doc.event_bus(node, base_dir, &mut unknown)?,
            None => EventBusConfig::default(),
        };

        let mut limits = Limits::default();
        if let Some(node) = root.get("limits") {
            for (key, value) in doc.table(node, "limits")? {
                let path = child("limits", key.get_ref());
                if !doc.apply_limit(&mut limits, key.get_ref(), value, &path)? {
                    unknown.push(doc.unknown(key, path));
                }
            }
        }

        let mut secrets = SecretsConfig {
            path: event_bus.secret_store.clone(),
            key_file: None,
        };
        if let Some(node) = root.get("secrets") {
            doc.secrets(node, base_dir, &mut secrets, &mut unknown)?;
        }
        let vault = match root.get("vault") {
            Some(node) => doc.vault(node, base_dir, &mut unknown)?,
            None => VaultConfig::default(),
        };
        let trust = match root.get("trust") {
            Some(node) => doc.trust(node, base_dir, &mut unknown)?,
            None => TrustConfig::default(),
        };

        let modules = match root.get("modules") {
            Some(node) => doc.modules(node, &mut unknown)?,
            None => ModulesConfig::default(),
        };

        let agents = match root.get("agents") {
            Some(node) => doc.agents(node, &modules_dir, &limits)?,
            None => Vec::new(),
        };

        let mut sections = BTreeMap::new();
        let mut ignored_sections = Vec::new();
        for (key, value) in &root {
            let name: &str = key.get_ref();
            if KNOWN_TOP_LEVEL.contains(&name) {
                continue;
            }
            if is_known(name) {
                let path = child("", name);
                let table = doc.to_table(doc.table(value, &path)?, &path)?;
                sections.insert(name.to_owned(), table);
            } else {
                ignored_sections.push(name.to_owned());
            }
        }
        ignored_sections.sort();

        unknown.sort_by_key(|(offset, _)| *offset);
        Ok(RuntimeConfig {
            source: source.to_path_buf(),
            modules_dir,
            event_bus,
            limits,
            agents,
            secrets,
            vault,
            trust,
            modules,
            ignored_sections,
            unknown_keys: unknown.into_iter().map(|(_, k)| k).collect(),
            sections,
        })
    }
}

type Node<'i> = Spanned<DeValue<'i>>;
type Key<'i> = Spanned<Cow<'i, str>>;

/// The text being parsed and its name, for turning spans into locations.
struct Doc<'a> {
    text: &'a str,
    source: &'a Path,
}

impl Doc<'_> {
    fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text.as_bytes()[..offset];
        let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
        let line_start = before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        // Editors count characters, not bytes.
        let column = match self.text.get(line_start..offset) {
            Some(s) => s.chars().count() + 1,
            None => offset - line_start + 1,
        };
        (line, column)
    }

    fn location(&self, offset: usize) -> String {
        let (line, column) = self.line_col(offset);
        format!("{}:{line}:{column}", self.source.display())
    }

    fn error(
        &self,
        span: Range<usize>,
        key: Option<&str>,
        message: impl Into<String>,
    ) -> ConfigError {
        let (line, column) = self.line_col(span.start);
        ConfigError::Invalid {
            file: self.source.to_path_buf(),
            line,
            column,
            key: key.map(str::to_owned),
            message: message.into(),
        }
    }

    fn invalid(&self, node: &Node<'_>, key: &str, message: impl Into<String>) -> ConfigError {
        self.error(node.span(), Some(key), message)
    }

    fn syntax_error(&self, e: &toml::de::Error) -> ConfigError {
        self.error(e.span().unwrap_or(0..0), None, e.message())
    }

    fn unknown(&self, key: &Key<'_>, path: String) -> (usize, String) {
        let offset = key.span().start;
        (offset, format!("{path} ({})", self.location(offset)))
    }

    fn interpolate(
        &self,
        node: &mut Node<'_>,
        path: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<()> {
        let span = node.span();
        match node.get_mut() {
            DeValue::String(s) => {
                if s.contains('$') {
                    let expanded = interpolate(s, env)
                        .map_err(|message| self.error(span, Some(path), message))?;
                    *s = Cow::Owned(expanded);
                }
            }
            DeValue::Array(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    self.interpolate(item, &format!("{path}[{i}]"), env)?;
                }
            }
            DeValue::Table(table) => {
                for (key, value) in table.iter_mut() {
                    self.interpolate(value, &child(path, key.get_ref()), env)?;
                }
            }
            DeValue::Integer(_)
            | DeValue::Float(_)
            | DeValue::Boolean(_)
            | DeValue::Datetime(_) => {}
        }
        Ok(())
    }

    fn type_error(&self, node: &Node<'_>, key: &str, expected: &str) -> ConfigError {
        self.invalid(
            node,
            key,
            format!("expected {expected}, found {}", a_type(node.get_ref())),
        )
    }

    fn table<'n, 'i>(&self, node: &'n Node<'i>, key: &str) -> Result<&'n DeTable<'i>> {
        node.get_ref()
            .as_table()
            .ok_or_else(|| self.type_error(node, key, "a table"))
    }

    fn str<'n>(&self, node: &'n Node<'_>, key: &str) -> Result<&'n str> {
        node.get_ref()
            .as_str()
            .ok_or_else(|| self.type_error(node, key, "a string"))
    }

    fn path(&self, node: &Node<'_>, key: &str) -> Result<PathBuf> {
        let s = self.str(node, key)?;
        if s.is_empty() {
            return Err(self.invalid(node, key, "path must not be empty"));
        }
        Ok(PathBuf::from(s))
    }

    /// An integer in `lo..=hi`.
    fn uint(&self, node: &Node<'_>, key: &str, lo: u64, hi: u64) -> Result<u64> {
        let DeValue::Integer(int) = node.get_ref() else {
            return Err(self.type_error(node, key, "an integer"));
        };
        let n = i64::from_str_radix(int.as_str(), int.radix())
            .map_err(|_| self.invalid(node, key, "integer out of range"))?;
        match u64::try_from(n) {
            Ok(v) if (lo..=hi).contains(&v) => Ok(v),
            _ if hi >= i64::MAX as u64 => {
                Err(self.invalid(node, key, format!("must be at least {lo}, got {n}")))
            }
            _ => Err(self.invalid(node, key, format!("must be between {lo} and {hi}, got {n}"))),
        }
    }

    fn u32(&self, node: &Node<'_>, key: &str, lo: u32) -> Result<u32> {
        let v = self.uint(node, key, lo.into(), u32::MAX.into())?;
        Ok(u32::try_from(v).unwrap_or(u32::MAX))
    }

    fn usize(&self, node: &Node<'_>, key: &str, lo: usize, hi: usize) -> Result<usize> {
        let hi = u64::try_from(hi).unwrap_or(u64::MAX);
        let v = self.uint(node, key, lo as u64, hi)?;
        Ok(usize::try_from(v).unwrap_or(usize::MAX))
    }

    fn duration(&self, node: &Node<'_>, key: &str, min: Duration) -> Result<Duration> {
        let s = self.str(node, key)?;
        let d = humantime::parse_duration(s).map_err(|e| {
            self.invalid(
                node,
                key,
                format!("invalid duration {s:?}: {e} (write e.g. \"5s\" or \"250ms\")"),
            )
        })?;
        if d < min {
            return Err(self.invalid(
                node,
                key,
                format!(
                    "must be at least {}, got {s:?}",
                    humantime::format_duration(min)
                ),
            ));
        }
        Ok(d)
    }

    fn event_bus(
        &self,
        node: &Node<'_>,
        base_dir: &Path,
        unknown: &mut Vec<(usize, String)>,
    ) -> Result<EventBusConfig> {
        let mut cfg = EventBusConfig::default();
        for (key, value) in self.table(node, "event_bus")? {
            let path = child("event_bus", key.get_ref());
            match &**key.get_ref() {
                "buffer_size" => cfg.buffer_size = self.usize(value, &path, 1, MAX_BUFFER_SIZE)?,
                "scheduler_tick_ms" => {
                    cfg.scheduler_tick =
                        Duration::from_millis(self.uint(value, &path, 1, i64::MAX as u64)?);
                }
                "secret_store" => cfg.secret_store = Some(base_dir.join(self.path(value, &path)?)),
                "drain_timeout" => {
                    cfg.drain_timeout = self.duration(value, &path, Duration::ZERO)?
                }
                "workers" => cfg.workers = Some(self.usize(value, &path, 1, usize::MAX)?),
                _ => unknown.push(self.unknown(key, path)),
            }
        }
        Ok(cfg)
    }

    /// Applies `name` if it is a limit key; `Ok(false)` if it is not one.
    fn apply_limit(
        &self,
        limits: &mut Limits,
        name: &str,
        value: &Node<'_>,
        path: &str,
    ) -> Result<bool> {
        const ANY: u64 = i64::MAX as u64;
        match name {
            "memory_mb" => limits.memory_mb = self.uint(value, path, 1, MAX_MEMORY_MB)?,
            "timeout_ms" => limits.timeout_ms = self.uint(value, path, 1, ANY)?,
            // Zero fuel would trap every call before it starts; omitting the key is how
            // metering is turned off.
            "fuel" => limits.fuel = Some(self.uint(value, path, 1, ANY)?),
            "max_payload_bytes" => limits.max_payload_bytes = self.uint(value, path, 0, ANY)?,
            "mailbox" => limits.mailbox = Some(self.usize(value, path, 1, MAX_BUFFER_SIZE)?),
            "publish_rate" => limits.publish_rate = self.u32(value, path, 1)?,
            "publish_burst" => limits.publish_burst = self.u32(value, path, 1)?,
            "stdout_bytes" => limits.stdout_bytes = self.uint(value, path, 0, ANY)?,
            "log_records_per_sec" => limits.log_records_per_sec = self.u32(value, path, 1)?,
            "log_bytes_per_sec" => limits.log_bytes_per_sec = self.uint(value, path, 1, ANY)?,
            "max_restarts" => limits.max_restarts = self.u32(value, path, 0)?,
            "restart_window" => {
                limits.restart_window = self.duration(value, path, Duration::ZERO)?
            }
            "backoff" => limits.backoff = self.duration(value, path, Duration::ZERO)?,
            "backoff_max" => limits.backoff_max = self.duration(value, path, Duration::ZERO)?,
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn agents(
        &self,
        node: &Node<'_>,
        modules_dir: &Path,
        defaults: &Limits,
    ) -> Result<Vec<AgentConfig>> {
        let Some(items) = node.get_ref().as_array() else {
            return Err(self.type_error(node, "agents", "an array of tables (`[[agents]]`)"));
        };
        let mut agents: Vec<AgentConfig> = Vec::with_capacity(items.len());
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (i, item) in items.iter().enumerate() {
            let agent = self.agent(i, item, modules_dir, defaults)?;
            if let Some(first) = seen.insert(agent.name.clone(), i) {
                let name_node = item.get_ref().get("name").unwrap_or(item);
                return Err(self.invalid(
                    name_node,
                    &format!("agents[{i}].name"),
                    format!(
                        "duplicate agent name {:?} (first used at {})",
                        agent.name, agents[first].location
                    ),
                ));
            }
            agents.push(agent);
        }
        Ok(agents)
    }

    fn agent(
        &self,
        index: usize,
        node: &Node<'_>,
        modules_dir: &Path,
        defaults: &Limits,
    ) -> Result<AgentConfig> {
        let prefix = format!("agents[{index}]");
        let table = self.table(node, &prefix)?;

        let name_key = format!("{prefix}.name");
        let Some(name_node) = table.get("name") else {
            return Err(self.invalid(node, &name_key, "missing required key `name`"));
        };
        let name = self.str(name_node, &name_key)?;
        if !valid_agent_name(name) {
            return Err(self.invalid(
                name_node,
                &name_key,
                format!(
                    "invalid agent name {name:?}: must be 1-{MAX_AGENT_NAME_LEN} characters of A-Z a-z 0-9 _ -"
                ),
            ));
        }
        if name == RUNTIME_SOURCE {
            return Err(self.invalid(
                name_node,
                &name_key,
                format!("agent name {name:?} is reserved for the runtime"),
            ));
        }

        let mut module = None;
        let mut subscribe = PatternSet::default();
        let mut publish = PatternSet::default();
        let mut every = None;
        let mut limits = *defaults;
        let mut grants = Grants {
            vault_quota_mb: 64,
            ..Grants::default()
        };
        let mut settings: Vec<(usize, String, String)> = Vec::new();
        for (key, value) in table {
            let k: &str = key.get_ref();
            let path = child(&prefix, k);
            match k {
                "name" => {}
                // Relative to modules_dir: `module` names a file among the
                // operator's modules, wherever the config itself lives.
                "module" => module = Some(modules_dir.join(self.path(value, &path)?)),
                "subscribe" => subscribe = self.patterns(value, &path, false)?,
                "publish" => publish = self.patterns(value, &path, true)?,
                "every" => every = Some(self.duration(value, &path, Duration::from_millis(1))?),
                "secrets" => grants.secrets = self.strings(value, &path)?,
                "vault" => grants.vault = self.bool(value, &path)?,
                "vault_shared" => grants.vault_shared = self.strings(value, &path)?,
                "vault_quota_mb" => grants.vault_quota_mb = self.uint(value, &path, 1, 1 << 20)?,
                "auth" => {
                    let ops = self.strings(value, &path)?;
                    if let Some(bad) = ops.iter().find(|op| !AUTH_GRANTS.contains(&op.as_str())) {
                        return Err(self.invalid(
                            value,
                            &path,
                            format!("unknown auth grant {bad:?}; expected any of {AUTH_GRANTS:?}"),
                        ));
                    }
                    grants.auth = ops;
                }
                _ => {
                    if !self.apply_limit(&mut limits, k, value, &path)? {
                        let rendered = self.render(value, &path)?;
                        settings.push((key.span().start, k.to_owned(), rendered));
                    }
                }
            }
        }
        // The table is keyed alphabetically; operators expect their own order back.
        settings.sort_by_key(|(offset, _, _)| *offset);

        let module_explicit = module.is_some();
        let module = module.unwrap_or_else(|| default_module(modules_dir, name));
        Ok(AgentConfig {
            name: name.to_owned(),
            module,
            module_explicit,
            subscribe,
            publish,
            every,
            limits,
            grants,
            settings: settings.into_iter().map(|(_, k, v)| (k, v)).collect(),
            location: self.location(node.span().start),
        })
    }

    fn patterns(&self, node: &Node<'_>, key: &str, publish: bool) -> Result<PatternSet> {
        let Some(items) = node.get_ref().as_array() else {
            return Err(self.type_error(node, key, "an array of patterns"));
        };
        let mut patterns = Vec::with_capacity(items.len());
        for item in items {
            let text = self.str(item, key)?;
            let pattern = Pattern::parse(text)
                .map_err(|e| self.invalid(item, key, format!("pattern {text:?} {e}")))?;
            // `TOKA.x` too: the reserved first segment is matched in any case.
            if publish && is_system_kind(text) {
                return Err(self.invalid(
                    item,
                    key,
                    format!(
                        "pattern {text:?} grants publishing `{SYSTEM_PREFIX}.*` kinds, which only the runtime may publish"
                    ),
                ));
            }
            patterns.push(pattern);
        }
        Ok(PatternSet::new(patterns))
    }

    fn strings(&self, node: &Node<'_>, key: &str) -> Result<Vec<String>> {
        let Some(items) = node.get_ref().as_array() else {
            return Err(self.type_error(node, key, "an array of strings"));
        };
        items
            .iter()
            .map(|item| self.str(item, key).map(str::to_owned))
            .collect()
    }

    fn bool(&self, node: &Node<'_>, key: &str) -> Result<bool> {
        match node.get_ref() {
            DeValue::Boolean(b) => Ok(*b),
            _ => Err(self.type_error(node, key, "a boolean")),
        }
    }

    fn secrets(
        &self,
        node: &Node<'_>,
        base_dir: &Path,
        cfg: &mut SecretsConfig,
        unknown: &mut Vec<(usize, String)>,
    ) -> Result<()> {
        for (key, value) in self.table(node, "secrets")? {
            let path = child("secrets", key.get_ref());
            match key.get_ref().as_ref() {
                "path" => cfg.path = Some(base_dir.join(self.path(value, &path)?)),
                "key_file" => cfg.key_file = Some(base_dir.join(self.path(value, &path)?)),
                _ => unknown.push(self.unknown(key, path)),
            }
        }
        Ok(())
    }

    fn modules(
        &self,
        node: &Node<'_>,
        unknown: &mut Vec<(usize, String)>,
    ) -> Result<ModulesConfig> {
        let mut cfg = ModulesConfig::default();
        for (key, value) in self.table(node, "modules")? {
            let path = child("modules", key.get_ref());
            match key.get_ref().as_ref() {
                "max_module_mb" => cfg.max_module_mb = self.uint(value, &path, 1, 4096)?,
                "compile_timeout" => {
                    cfg.compile_timeout = self.duration(value, &path, Duration::from_millis(1))?
                }
                "compile_memory_mb" => {
                    cfg.compile_memory_mb = self.uint(value, &path, 64, 65536)?
                }
                _ => unknown.push(self.unknown(key, path)),
            }
        }
        Ok(cfg)
    }

    fn vault(
        &self,
        node: &Node<'_>,
        base_dir: &Path,
        unknown: &mut Vec<(usize, String)>,
    ) -> Result<VaultConfig> {
        let mut cfg = VaultConfig::default();
        for (key, value) in self.table(node, "vault")? {
            let path = child("vault", key.get_ref());
            match key.get_ref().as_ref() {
                "path" => cfg.path = Some(base_dir.join(self.path(value, &path)?)),
                "max_blob_mb" => cfg.max_blob_mb = self.uint(value, &path, 1, 1 << 20)?,
                _ => unknown.push(self.unknown(key, path)),
            }
        }
        Ok(cfg)
    }

    fn trust(
        &self,
        node: &Node<'_>,
        base_dir: &Path,
        unknown: &mut Vec<(usize, String)>,
    ) -> Result<TrustConfig> {
        let mut cfg = TrustConfig::default();
        for (key, value) in self.table(node, "trust")? {
            let path = child("trust", key.get_ref());
            match key.get_ref().as_ref() {
                "require_signatures" => cfg.require_signatures = self.bool(value, &path)?,
                "trusted_keys" => {
                    cfg.trusted_keys = self
                        .strings(value, &path)?
                        .into_iter()
                        .map(|k| {
                            if k.starts_with("toka-ed25519-public:") {
                                k
                            } else {
                                base_dir.join(k).display().to_string()
                            }
                        })
                        .collect();
                }
                _ => unknown.push(self.unknown(key, path)),
            }
        }
        Ok(cfg)
    }

    fn render(&self, node: &Node<'_>, path: &str) -> Result<String> {
        match node.get_ref() {
            DeValue::String(s) => Ok(s.to_string()),
            _ => Ok(self.to_value(node, path)?.to_string()),
        }
    }

    fn to_value(&self, node: &Node<'_>, path: &str) -> Result<toml::Value> {
        Ok(match node.get_ref() {
            DeValue::String(s) => toml::Value::String(s.to_string()),
            DeValue::Integer(int) => toml::Value::Integer(
                i64::from_str_radix(int.as_str(), int.radix())
                    .map_err(|_| self.invalid(node, path, "integer out of range"))?,
            ),
            DeValue::Float(float) => toml::Value::Float(
                float
                    .as_str()
                    .parse()
                    .map_err(|_| self.invalid(node, path, "invalid float"))?,
            ),
            DeValue::Boolean(b) => toml::Value::Boolean(*b),
            DeValue::Datetime(d) => toml::Value::Datetime(*d),
            DeValue::Array(items) => toml::Value::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| self.to_value(item, &format!("{path}[{i}]")))
                    .collect::<Result<_>>()?,
            ),
            DeValue::Table(table) => toml::Value::Table(self.to_table(table, path)?),
        })
    }

    fn to_table(&self, table: &DeTable<'_>, path: &str) -> Result<toml::Table> {
        table
            .iter()
            .map(|(key, value)| {
                let k: &str = key.get_ref();
                Ok((k.to_owned(), self.to_value(value, &child(path, k))?))
            })
            .collect()
    }
}

/// `prefix.key`, quoting `key` the way TOML would need it if it is not bare.
fn child(prefix: &str, key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let key = if bare {
        Cow::Borrowed(key)
    } else {
        Cow::Owned(format!("{key:?}"))
    };
    if prefix.is_empty() {
        key.into_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

fn a_type(value: &DeValue<'_>) -> &'static str {
    match value {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a datetime",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

fn valid_agent_name(name: &str) -> bool {
    (1..=MAX_AGENT_NAME_LEN).contains(&name.chars().count())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn valid_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Expands `${VAR}`, `${VAR:-default}` and `$$`; the error is the message.
fn interpolate(
    s: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> std::result::Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(tail) = after.strip_prefix('{') {
            let Some(end) = tail.find('}') else {
                return Err(format!(
                    "unterminated `${{` in {s:?} (write `$$` for a literal `$`)"
                ));
            };
            let inner = &tail[..end];
            let (name, default) = match inner.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (inner, None),
            };
            if !valid_var_name(name) {
                return Err(format!(
                    "invalid variable name {name:?} in `${{{inner}}}` (expected [A-Za-z_][A-Za-z0-9_]*; write `$$` for a literal `$`)"
                ));
            }
            match (env(name), default) {
                (Some(v), Some(d)) if v.is_empty() => out.push_str(d),
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => {
                    return Err(format!(
                        "environment variable `{name}` is not set (use ${{{name}:-default}} to give a default)"
                    ));
                }
            }
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn default_module(modules_dir: &Path, name: &str) -> PathBuf {
    let exact = modules_dir.join(format!("{name}.wasm"));
    if exact.exists() {
        exact
    } else {
        modules_dir.join(format!("{}.wasm", snake_case(name)))
    }
}

/// `IndexerAgent` -> `indexer_agent`, `HTTPServer` -> `http_server`; names
/// without upper-case letters are returned unchanged.
/// The file name an agent's module gets when `module` is not given:
/// `Logger` -> `logger`, `IndexerAgent` -> `indexer_agent`, `HTTPServer` ->
/// `http_server`, `agent2Go` -> `agent2_go`; `-` and `_` are kept.
pub fn snake_case(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut out = String::with_capacity(name.len() + 4);
    for (i, &c) in chars.iter().enumerate() {
        if c.is_ascii_uppercase() {
            let prev = i.checked_sub(1).map(|p| chars[p]);
            let next = chars.get(i + 1);
            let boundary = match prev {
                Some(p) if p.is_ascii_lowercase() || p.is_ascii_digit() => true,
                Some(p) if p.is_ascii_uppercase() => next.is_some_and(|n| n.is_ascii_lowercase()),
                _ => false,
            };
            if boundary {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn parse(text: &str) -> Result<RuntimeConfig> {
        parse_env(text, &no_env)
    }

    fn parse_env(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<RuntimeConfig> {
        RuntimeConfig::parse_str_with_env(
            text,
            Path::new("config/x.toml"),
            Path::new("/etc/toka"),
            &[],
            env,
        )
    }

    fn parse_err(text: &str) -> ConfigError {
        parse(text).expect_err("config should be rejected")
    }

    /// A fresh directory under the system temp dir, unique per test and process.
    fn scratch_dir(test: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("toka-core-config-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("modules")).unwrap();
        dir
    }

    const MINIMAL: &str = r#"
[event_bus]
buffer_size = 1024
scheduler_tick_ms = 100
secret_store = "secrets.db"

[[agents]]
name = "Logger"
subscribe = ["*"]
"#;

    const PORTABLE: &str = r#"[event_bus]
buffer_size = 4096
scheduler_tick_ms = 100
secret_store = "secrets.db"

[vault]
path = "/Users/me/TokaVault"   # requires vault-core feature

[drivers.s3]
access_key = "${AWS_KEY}"
secret_key = "${AWS_SECRET}"
bucket     = "my-assets"

[providers.stripe]
secret_key = "${STRIPE_SK}"
webhook_secret = "${STRIPE_WEBHOOK}"

[[agents]]
name = "IndexerAgent"
scan_path = "/Users/me/Content"

[[agents]]
name = "SchedulerAgent"
default_driver = "s3"
"#;

    #[test]
    fn minimal_seed_loads_from_file_with_snake_case_module() {
        let dir = scratch_dir("minimal");
        let file = dir.join("toka.toml");
        std::fs::write(&file, MINIMAL).unwrap();

        let cfg = RuntimeConfig::load(&file).unwrap();
        assert_eq!(cfg.source, file);
        assert_eq!(cfg.modules_dir, dir.join("modules"));
        assert_eq!(cfg.event_bus.buffer_size, 1024);
        assert_eq!(cfg.event_bus.scheduler_tick, Duration::from_millis(100));
        assert_eq!(cfg.event_bus.secret_store, Some(dir.join("secrets.db")));
        assert_eq!(cfg.event_bus.drain_timeout, Duration::from_secs(5));
        assert_eq!(cfg.agents.len(), 1);
        let logger = &cfg.agents[0];
        assert_eq!(logger.name, "Logger");
        assert_eq!(logger.module, dir.join("modules").join("logger.wasm"));
        assert!(!logger.module_explicit);
        assert!(logger.subscribe.matches("orders.created"));
        assert!(logger.publish.is_empty());
        assert_eq!(logger.limits, Limits::default());
        assert_eq!(logger.location, format!("{}:7:1", file.display()));
        assert!(cfg.ignored_sections.is_empty() && cfg.unknown_keys.is_empty());

        // A module spelled exactly like the agent wins over the snake-case guess.
        std::fs::write(dir.join("modules").join("Logger.wasm"), b"").unwrap();
        let cfg = RuntimeConfig::load(&file).unwrap();
        assert_eq!(
            cfg.agents[0].module,
            dir.join("modules").join("Logger.wasm")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn missing_file_is_an_io_error_naming_it() {
        let err = RuntimeConfig::load("/nonexistent/toka.toml").unwrap_err();
        assert!(matches!(err, ConfigError::Io { .. }));
        assert!(err.to_string().starts_with("/nonexistent/toka.toml: "));
        assert_eq!(err.line(), None);
    }

    #[test]
    fn snake_case_names() {
        assert_eq!(snake_case("Logger"), "logger");
        assert_eq!(snake_case("IndexerAgent"), "indexer_agent");
        assert_eq!(snake_case("my-agent"), "my-agent");
        assert_eq!(snake_case("HTTPServer"), "http_server");
        assert_eq!(snake_case("agent2Go"), "agent2_go");
    }

    #[test]
    fn portable_seed_loads_without_env() {
        let cfg = parse(PORTABLE).unwrap();
        assert_eq!(cfg.ignored_sections, ["drivers", "providers"]);
        assert_eq!(cfg.vault.path, Some(PathBuf::from("/Users/me/TokaVault")));
        assert_eq!(
            cfg.secrets.path, cfg.event_bus.secret_store,
            "the seed's key names the secret store"
        );
        assert_eq!(cfg.event_bus.buffer_size, 4096);
        assert_eq!(
            cfg.event_bus.secret_store,
            Some(PathBuf::from("/etc/toka/secrets.db"))
        );
        assert_eq!(cfg.agents.len(), 2);
        assert_eq!(
            cfg.agents[0].settings,
            [("scan_path".to_owned(), "/Users/me/Content".to_owned())]
        );
        assert_eq!(
            cfg.agents[0].module,
            PathBuf::from("/etc/toka/modules/indexer_agent.wasm")
        );
        assert_eq!(
            cfg.agents[1].settings,
            [("default_driver".to_owned(), "s3".to_owned())]
        );
        assert!(cfg.sections.is_empty());
    }

    #[test]
    fn extra_known_sections_are_interpolated_and_returned() {
        let env = |k: &str| (k == "AWS_KEY").then(|| "AKIA".to_owned());
        let text = PORTABLE.replace("${AWS_SECRET}", "${AWS_SECRET:-none}");
        let cfg = RuntimeConfig::parse_str_with_env(
            &text,
            Path::new("p.toml"),
            Path::new("."),
            &["drivers"],
            &env,
        )
        .unwrap();
        assert_eq!(cfg.ignored_sections, ["providers"]);
        let s3 = cfg.sections["drivers"]["s3"].as_table().unwrap();
        assert_eq!(s3["access_key"].as_str(), Some("AKIA"));
        assert_eq!(s3["secret_key"].as_str(), Some("none"));

        // Declared sections are checked, so an unset variable there is an error.
        let err = RuntimeConfig::parse_str_with_env(
            PORTABLE,
            Path::new("p.toml"),
            Path::new("."),
            &["providers"],
            &env,
        )
        .unwrap_err();
        assert_eq!(err.key(), Some("providers.stripe.secret_key"));
        assert_eq!(err.line(), Some(15));
    }

    #[test]
    fn syntax_error_reports_line_and_column() {
        let err = parse_err("[event_bus]\nbuffer_size = 10\nscheduler_tick_ms = = 5\n");
        assert_eq!(err.line(), Some(3));
        assert_eq!(err.column(), Some(21));
        assert_eq!(err.key(), None);
        let shown = err.to_string();
        assert!(shown.starts_with("config/x.toml:3:21: "), "{shown}");
        assert!(!shown.contains('\n'), "{shown}");
    }

    #[test]
    fn type_error_names_key_and_position() {
        let err = parse_err("# comment\n[event_bus]\nbuffer_size = \"x\"\n");
        assert_eq!(err.key(), Some("event_bus.buffer_size"));
        assert_eq!((err.line(), err.column()), (Some(3), Some(15)));
        assert_eq!(
            err.to_string(),
            "config/x.toml:3:15: event_bus.buffer_size: expected an integer, found a string"
        );
    }

    #[test]
    fn out_of_range_numbers_are_rejected() {
        let err = parse_err("[event_bus]\nbuffer_size = 0\n");
        assert_eq!(err.key(), Some("event_bus.buffer_size"));
        assert!(err.to_string().contains("between 1 and 1000000"), "{err}");
        let err = parse_err("[limits]\nmemory_mb = 5000\n");
        assert_eq!(err.key(), Some("limits.memory_mb"));
        let err = parse_err("[event_bus]\nworkers = -2\n");
        assert_eq!(err.key(), Some("event_bus.workers"));
        assert!(
            err.to_string().ends_with("must be at least 1, got -2"),
            "{err}"
        );
    }

    #[test]
    fn interpolation_expands_defaults_and_escapes() {
        let env = |k: &str| match k {
            "HOME_DIR" => Some("/home/me".to_owned()),
            "EMPTY" => Some(String::new()),
            _ => None,
        };
        let cfg = parse_env(
            r#"
modules_dir = "${HOME_DIR}/mods"
[[agents]]
name = "A"
price = "$$5 ${MISSING:-dflt} ${EMPTY:-fallback} [${EMPTY}] $x"
list = ["${HOME_DIR}", 1]
"#,
            &env,
        )
        .unwrap();
        assert_eq!(cfg.modules_dir, PathBuf::from("/home/me/mods"));
        assert_eq!(cfg.agents[0].settings[0].1, "$5 dflt fallback [] $x");
        assert_eq!(cfg.agents[0].settings[1].1, r#"["/home/me", 1]"#);
    }

    #[test]
    fn unset_variable_names_it_with_key_and_line() {
        let err = parse_err("[[agents]]\nname = \"A\"\n\ntoken = \"Bearer ${API_TOKEN}\"\n");
        assert_eq!(err.key(), Some("agents[0].token"));
        assert_eq!((err.line(), err.column()), (Some(4), Some(9)));
        let shown = err.to_string();
        assert!(shown.contains("`API_TOKEN` is not set"), "{shown}");
        assert!(shown.contains("${API_TOKEN:-default}"), "{shown}");
    }

    #[test]
    fn malformed_placeholders_are_errors() {
        let err = parse_err("[[agents]]\nname = \"A\"\nx = \"${OPEN\"\n");
        assert_eq!(err.key(), Some("agents[0].x"));
        assert!(err.to_string().contains("unterminated"), "{err}");
        let err = parse_err("[[agents]]\nname = \"A\"\nx = [\"ok\", \"${1BAD}\"]\n");
        assert_eq!(err.key(), Some("agents[0].x[1]"));
        assert!(err.to_string().contains("invalid variable name"), "{err}");
    }

    #[test]
    fn interpolation_never_changes_types() {
        let env = |_: &str| Some("42".to_owned());
        let err = parse_env("[event_bus]\nbuffer_size = \"${N}\"\n", &env).unwrap_err();
        assert_eq!(err.key(), Some("event_bus.buffer_size"));
        assert!(err.to_string().contains("found a string"), "{err}");
    }

    #[test]
    fn bad_subscribe_pattern_names_agent_and_line() {
        let err = parse_err(
            "[[agents]]\nname = \"A\"\n\n[[agents]]\nname = \"B\"\nsubscribe = [\"ok.*\", \"a..b\"]\n",
        );
        assert_eq!(err.key(), Some("agents[1].subscribe"));
        assert_eq!((err.line(), err.column()), (Some(6), Some(22)));
        assert!(err.to_string().contains("empty segment"), "{err}");
    }

    #[test]
    fn agent_names_are_unique_and_toka_is_reserved() {
        let err = parse_err("[[agents]]\nname = \"A\"\n[[agents]]\nname = \"A\"\n");
        assert_eq!(err.key(), Some("agents[1].name"));
        assert_eq!(err.line(), Some(4));
        assert!(err.to_string().contains("config/x.toml:1:1"), "{err}");

        let err = parse_err("[[agents]]\nname = \"toka\"\n");
        assert_eq!(err.key(), Some("agents[0].name"));
        assert!(err.to_string().contains("reserved"), "{err}");

        let err = parse_err("[[agents]]\nname = \"has space\"\n");
        assert_eq!(err.key(), Some("agents[0].name"));
    }

    #[test]
    fn missing_name_points_at_agent_header() {
        let err = parse_err("[event_bus]\n\n[[agents]]\nmodule = \"x.wasm\"\n");
        assert_eq!(err.key(), Some("agents[0].name"));
        assert_eq!((err.line(), err.column()), (Some(3), Some(1)));
    }

    #[test]
    fn runtime_kinds_cannot_be_granted_for_publishing() {
        let err = parse_err("[[agents]]\nname = \"A\"\npublish = [\"orders.*\", \"toka.tick\"]\n");
        assert_eq!(err.key(), Some("agents[0].publish"));
        assert_eq!(err.line(), Some(3));
        let err = parse_err("[[agents]]\nname = \"A\"\npublish = [\"TOKA.x\"]\n");
        assert_eq!(err.key(), Some("agents[0].publish"));
        let err = parse_err("[[agents]]\nname = \"A\"\npublish = [\"Toka.>\"]\n");
        assert_eq!(err.key(), Some("agents[0].publish"));

        let cfg =
            parse("[[agents]]\nname = \"A\"\npublish = [\"*.created\", \"tokamak.x\"]\n").unwrap();
        assert!(cfg.agents[0].publish.matches("orders.created"));
        assert!(cfg.agents[0].publish.matches("tokamak.x"));
    }

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

    #[test]
    fn free_form_settings_render_in_file_order() {
        let cfg = parse(
            r#"
[[agents]]
name = "A"
zeta = "text"
count = 42
enabled = true
ids = [1, 2]
opts = { a = 1 }
ratio = 0.5
"#,
        )
        .unwrap();
        let settings: Vec<(&str, &str)> = cfg.agents[0]
            .settings
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            settings,
            [
                ("zeta", "text"),
                ("count", "42"),
                ("enabled", "true"),
                ("ids", "[1, 2]"),
                ("opts", "{ a = 1 }"),
                ("ratio", "0.5"),
            ]
        );
    }

    #[test]
    fn unknown_keys_in_known_sections_are_reported_with_location() {
        let cfg =
            parse("[event_bus]\nbuffer_size = 8\nbufer_size = 9\n\n[limits]\nmemroy_mb = 1\n")
                .unwrap();
        assert_eq!(
            cfg.unknown_keys,
            [
                "event_bus.bufer_size (config/x.toml:3:1)",
                "limits.memroy_mb (config/x.toml:6:1)",
            ]
        );
        assert_eq!(cfg.event_bus.buffer_size, 8);
    }

    #[test]
    fn every_is_a_humantime_duration() {
        let cfg = parse("[[agents]]\nname = \"A\"\nevery = \"5s\"\n").unwrap();
        assert_eq!(cfg.agents[0].every, Some(Duration::from_secs(5)));
        assert_eq!(parse(MINIMAL).unwrap().agents[0].every, None);

        let err = parse_err("[[agents]]\nname = \"A\"\nevery = \"soon\"\n");
        assert_eq!(err.key(), Some("agents[0].every"));
        assert_eq!((err.line(), err.column()), (Some(3), Some(9)));

        let err = parse_err("[[agents]]\nname = \"A\"\nevery = \"0s\"\n");
        assert_eq!(err.key(), Some("agents[0].every"));
    }

    #[test]
    fn explicit_module_resolves_against_modules_dir() {
        let cfg =
            parse("modules_dir = \"wasm\"\n[[agents]]\nname = \"A\"\nmodule = \"bin/a.wasm\"\n")
                .unwrap();
        assert_eq!(cfg.modules_dir, PathBuf::from("/etc/toka/wasm"));
        assert_eq!(
            cfg.agents[0].module,
            PathBuf::from("/etc/toka/wasm/bin/a.wasm")
        );
        assert!(cfg.agents[0].module_explicit);
    }

    #[test]
    fn agents_must_be_an_array_of_tables() {
        let err = parse_err("[agents]\nname = \"A\"\n");
        assert_eq!(err.key(), Some("agents"));
        assert_eq!(err.line(), Some(1));
    }

    #[test]
    fn grants_are_parsed_and_denied_by_default() {
        let cfg = parse(
            r#"
            [secrets]
            path = "s.db"
            key_file = "master.key"
            [trust]
            require_signatures = true
            trusted_keys = ["keys/ops.pub", "toka-ed25519-public:AAAA"]
            [[agents]]
            name = "plain"
            [[agents]]
            name = "payments"
            secrets = ["stripe/*"]
            vault = true
            vault_shared = ["reports"]
            vault_quota_mb = 8
            auth = ["password", "verify-token"]
            "#,
        )
        .unwrap();
        let plain = &cfg.agents[0].grants;
        assert!(plain.secrets.is_empty() && !plain.vault && plain.auth.is_empty());
        assert_eq!(plain.vault_quota_mb, 64);
        let pay = &cfg.agents[1].grants;
        assert_eq!(pay.secrets, ["stripe/*"]);
        assert!(pay.vault);
        assert_eq!(
            (pay.vault_shared.as_slice(), pay.vault_quota_mb),
            (&["reports".to_owned()][..], 8)
        );
        assert_eq!(pay.auth, ["password", "verify-token"]);
        assert!(
            cfg.agents[1].settings.is_empty(),
            "grant keys are not settings"
        );
        assert!(cfg.trust.require_signatures);
        assert!(cfg.trust.trusted_keys[0].ends_with("keys/ops.pub"));
        assert_eq!(cfg.trust.trusted_keys[1], "toka-ed25519-public:AAAA");
        assert!(cfg.secrets.path.unwrap().ends_with("s.db"));

        let err = parse("[[agents]]\nname = \"x\"\nauth = [\"root\"]\n").unwrap_err();
        assert!(
            err.to_string().contains("unknown auth grant \"root\""),
            "{err}"
        );
    }
}
