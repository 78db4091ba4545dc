//! The built-in top-level sections other than `[limits]` and `[[agents]]`:
//! [`EventBusConfig`] (`[event_bus]`), [`SecretsConfig`] (`[secrets]`),
//! [`VaultConfig`] (`[vault]`), [`TrustConfig`] (`[trust]`) and
//! [`ModulesConfig`] (`[modules]`), with their defaults.

use std::path::PathBuf;
use std::time::Duration;

use super::error::{Result, child};
use super::limits::MAX_BUFFER_SIZE;
use super::located::{Doc, Item, Unknown};

/// Default `[vault] max_blob_mb`: the largest blob an agent may put, in MiB.
///
/// This is the runtime's default: `toka run` and `toka vault put` pass
/// `max_blob_mb << 20` to the vault on every call. (`toka-vault`'s own
/// `DEFAULT_MAX_BLOB_BYTES` is the same 16 MiB, for users of that crate alone.)
pub const DEFAULT_MAX_BLOB_MB: u64 = 16;
/// Largest accepted `[vault] max_blob_mb`, in MiB.
pub const MAX_VAULT_MB: u64 = 1 << 20;

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
    /// Key `max_blob_mb`: largest blob an agent may put. Default
    /// [`DEFAULT_MAX_BLOB_MB`] (16); must be `1..=`[`MAX_VAULT_MB`].
    pub max_blob_mb: u64,
}

impl Default for VaultConfig {
    fn default() -> Self {
        VaultConfig {
            path: None,
            max_blob_mb: DEFAULT_MAX_BLOB_MB,
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

/// `[requests]`: request/reply between agents. Every bound a requester
/// could otherwise stretch is set here, with a safe default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestsConfig {
    /// Key `max_timeout` (humantime): the longest any request waits for its
    /// reply, whatever `timeout-ms` the guest asks. Default `"30s"`; must be
    /// `1ms..=10min`.
    pub max_timeout: Duration,
    /// Key `queue`: requests that may wait for one serving agent at once;
    /// past it a request is answered `busy`. Default 64; must be `1..=65536`.
    pub queue: usize,
    /// Key `max_depth`: longest chain of requests in progress (A asks B,
    /// which asks C, ...); a request that would go deeper is answered
    /// `loop`. Default 8; must be `1..=32`.
    pub max_depth: u32,
}

impl Default for RequestsConfig {
    fn default() -> Self {
        RequestsConfig {
            max_timeout: Duration::from_secs(30),
            queue: 64,
            max_depth: 8,
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

pub(super) fn event_bus(doc: &Doc, item: &Item, unknown: &mut Unknown) -> Result<EventBusConfig> {
    let mut cfg = EventBusConfig::default();
    for entry in doc.table(item, "event_bus")? {
        let (path, value) = (child("event_bus", &entry.key), &entry.item);
        match entry.key.as_str() {
            "buffer_size" => cfg.buffer_size = doc.usize(value, &path, 1, MAX_BUFFER_SIZE)?,
            "scheduler_tick_ms" => {
                cfg.scheduler_tick =
                    Duration::from_millis(doc.uint(value, &path, 1, i64::MAX as u64)?);
            }
            "secret_store" => cfg.secret_store = Some(doc.resolved_path(value, &path)?),
            "drain_timeout" => cfg.drain_timeout = doc.duration(value, &path, Duration::ZERO)?,
            "workers" => cfg.workers = Some(doc.usize(value, &path, 1, usize::MAX)?),
            _ => unknown.push(doc.unknown(entry, path)),
        }
    }
    Ok(cfg)
}

/// `[secrets]` over `cfg`, which already holds the seed's `secret_store`.
pub(super) fn secrets(
    doc: &Doc,
    item: &Item,
    cfg: &mut SecretsConfig,
    unknown: &mut Unknown,
) -> Result<()> {
    for entry in doc.table(item, "secrets")? {
        let (path, value) = (child("secrets", &entry.key), &entry.item);
        match entry.key.as_str() {
            "path" => cfg.path = Some(doc.resolved_path(value, &path)?),
            "key_file" => cfg.key_file = Some(doc.resolved_path(value, &path)?),
            _ => unknown.push(doc.unknown(entry, path)),
        }
    }
    Ok(())
}

pub(super) fn modules(doc: &Doc, item: &Item, unknown: &mut Unknown) -> Result<ModulesConfig> {
    let mut cfg = ModulesConfig::default();
    for entry in doc.table(item, "modules")? {
        let (path, value) = (child("modules", &entry.key), &entry.item);
        match entry.key.as_str() {
            "max_module_mb" => cfg.max_module_mb = doc.uint(value, &path, 1, 4096)?,
            "compile_timeout" => {
                cfg.compile_timeout = doc.duration(value, &path, Duration::from_millis(1))?
            }
            "compile_memory_mb" => cfg.compile_memory_mb = doc.uint(value, &path, 64, 65536)?,
            _ => unknown.push(doc.unknown(entry, path)),
        }
    }
    Ok(cfg)
}

pub(super) fn requests(doc: &Doc, item: &Item, unknown: &mut Unknown) -> Result<RequestsConfig> {
    let mut cfg = RequestsConfig::default();
    for entry in doc.table(item, "requests")? {
        let (path, value) = (child("requests", &entry.key), &entry.item);
        match entry.key.as_str() {
            "max_timeout" => {
                let d = doc.duration(value, &path, Duration::from_millis(1))?;
                if d > Duration::from_secs(600) {
                    return Err(doc.invalid(value, &path, "must be at most 10min"));
                }
                cfg.max_timeout = d;
            }
            "queue" => cfg.queue = doc.usize(value, &path, 1, 65536)?,
            "max_depth" => cfg.max_depth = doc.uint(value, &path, 1, 32)? as u32,
            _ => unknown.push(doc.unknown(entry, path)),
        }
    }
    Ok(cfg)
}

pub(super) fn vault(doc: &Doc, item: &Item, unknown: &mut Unknown) -> Result<VaultConfig> {
    let mut cfg = VaultConfig::default();
    for entry in doc.table(item, "vault")? {
        let (path, value) = (child("vault", &entry.key), &entry.item);
        match entry.key.as_str() {
            "path" => cfg.path = Some(doc.resolved_path(value, &path)?),
            "max_blob_mb" => cfg.max_blob_mb = doc.uint(value, &path, 1, MAX_VAULT_MB)?,
            _ => unknown.push(doc.unknown(entry, path)),
        }
    }
    Ok(cfg)
}

pub(super) fn trust(doc: &Doc, item: &Item, unknown: &mut Unknown) -> Result<TrustConfig> {
    let mut cfg = TrustConfig::default();
    for entry in doc.table(item, "trust")? {
        let (path, value) = (child("trust", &entry.key), &entry.item);
        match entry.key.as_str() {
            "require_signatures" => cfg.require_signatures = doc.bool(value, &path)?,
            "trusted_keys" => {
                cfg.trusted_keys = doc
                    .strings(value, &path)?
                    .into_iter()
                    .map(|k| {
                        if k.starts_with("toka-ed25519-public:") {
                            k
                        } else {
                            doc.resolve_str(&k)
                        }
                    })
                    .collect();
            }
            _ => unknown.push(doc.unknown(entry, path)),
        }
    }
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::{parse, parse_err};

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
    fn trust_and_secrets_sections_are_parsed() {
        let cfg = parse(
            r#"
            [secrets]
            path = "s.db"
            key_file = "master.key"
            [trust]
            require_signatures = true
            trusted_keys = ["keys/ops.pub", "toka-ed25519-public:AAAA"]
            "#,
        )
        .unwrap();
        assert!(cfg.trust.require_signatures);
        assert!(cfg.trust.trusted_keys[0].ends_with("keys/ops.pub"));
        assert_eq!(cfg.trust.trusted_keys[1], "toka-ed25519-public:AAAA");
        assert!(cfg.secrets.path.unwrap().ends_with("s.db"));
        assert!(cfg.secrets.key_file.unwrap().ends_with("master.key"));
    }

    #[test]
    fn vault_blob_size_defaults_and_bounds_come_from_one_place() {
        let cfg = parse("[vault]\npath = \"v\"\n").unwrap();
        assert_eq!(cfg.vault.max_blob_mb, DEFAULT_MAX_BLOB_MB);
        assert_eq!(cfg.vault.path, Some(PathBuf::from("/etc/toka/v")));
        let err = parse_err(&format!("[vault]\nmax_blob_mb = {}\n", MAX_VAULT_MB + 1));
        assert_eq!(err.key(), Some("vault.max_blob_mb"));
        assert!(
            err.to_string()
                .contains(&format!("between 1 and {MAX_VAULT_MB}"))
        );
    }
}
