//! What the operator configures: the `[kv]` section ([`KvConfig`]) and each
//! agent's `kv*` keys ([`KvGrant`]), read with the config loader's located
//! getters so a mistake is reported as `file:line:col: agents[0].kv_shared:
//! ...`.
//!
//! ```toml
//! [kv]
//! path = "state/kv.redb"      # required once an agent is granted `kv`
//! max_key_bytes = 1024        # the longest key
//! max_value_kb = 1024         # the largest value
//! shared_quota_mb = 64        # each shared bucket's total bytes
//! shared_max_keys = 100000    # each shared bucket's keys
//!
//! [[agents]]
//! name = "counter"
//! kv = true                   # its own bucket, named `counter`
//! kv_shared = ["sessions"]    # and these
//! kv_quota_mb = 64            # its own bucket's total bytes
//! kv_max_keys = 100000        # its own bucket's keys
//! ```

use std::path::PathBuf;

use toka_core::{AgentConfig, ConfigError, RuntimeConfig};

use crate::{
    DEFAULT_MAX_KEYS, DEFAULT_QUOTA_MB, DEFAULT_SHARED_MAX_KEYS, DEFAULT_SHARED_QUOTA_MB, Limits,
    Quota, valid_bucket_name,
};

/// The top-level section the capability owns.
pub const SECTION: &str = "kv";
/// The keys of [`SECTION`].
pub const SECTION_KEYS: &[&str] = &[
    "path",
    "max_key_bytes",
    "max_value_kb",
    "shared_quota_mb",
    "shared_max_keys",
];
/// The `[[agents]]` keys the capability owns.
pub const AGENT_KEYS: &[&str] = &["kv", "kv_shared", "kv_quota_mb", "kv_max_keys"];

/// Largest `kv_quota_mb` / `shared_quota_mb`: 1 TiB.
pub const MAX_QUOTA_MB: u64 = 1 << 20;
/// Largest `kv_max_keys` / `shared_max_keys`.
pub const MAX_KEYS: u64 = 1_000_000_000;
/// Largest `[kv] max_key_bytes`.
pub const MAX_KEY_BYTES: u64 = 64 << 10;
/// Largest `[kv] max_value_kb`: 16 MiB, so one value always fits a batch
/// ([`crate::MAX_BATCH_BYTES`]).
pub const MAX_VALUE_KB: u64 = 16 << 10;

/// `[kv]`, with its defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvConfig {
    /// Key `path`: the store file, relative to the config file's directory.
    /// No default: granting `kv` without it fails at startup.
    pub path: Option<PathBuf>,
    /// Keys `max_key_bytes` (default [`crate::DEFAULT_MAX_KEY_BYTES`], at most
    /// [`MAX_KEY_BYTES`]) and `max_value_kb` (default
    /// [`crate::DEFAULT_MAX_VALUE_KB`], at most [`MAX_VALUE_KB`]).
    pub limits: Limits,
    /// Keys `shared_quota_mb` (default [`DEFAULT_SHARED_QUOTA_MB`]) and
    /// `shared_max_keys` (default [`DEFAULT_SHARED_MAX_KEYS`]): each shared
    /// bucket's quota.
    pub shared: Quota,
    /// Keys of `[kv]` this version does not know, located, for a warning.
    pub unknown: Vec<String>,
}

impl Default for KvConfig {
    /// No path, every default.
    fn default() -> Self {
        KvConfig {
            path: None,
            limits: Limits::default(),
            shared: Quota::shared(DEFAULT_SHARED_QUOTA_MB, DEFAULT_SHARED_MAX_KEYS),
            unknown: Vec::new(),
        }
    }
}

impl KvConfig {
    /// `[kv]` of `config` (declared with [`SECTION`]); the defaults when
    /// absent.
    pub fn from_config(config: &RuntimeConfig) -> Result<Self, ConfigError> {
        let mut kv = KvConfig::default();
        let Some(s) = config.section(SECTION) else {
            return Ok(kv);
        };
        kv.path = s.get_path("path")?;
        if let Some(n) = s.get_uint("max_key_bytes", 1, MAX_KEY_BYTES)? {
            kv.limits.max_key_bytes = n as usize;
        }
        if let Some(n) = s.get_uint("max_value_kb", 1, MAX_VALUE_KB)? {
            kv.limits.max_value_bytes = n << 10;
        }
        let quota_mb = s.get_uint("shared_quota_mb", 1, MAX_QUOTA_MB)?;
        let max_keys = s.get_uint("shared_max_keys", 1, MAX_KEYS)?;
        kv.shared = Quota::shared(
            quota_mb.unwrap_or(DEFAULT_SHARED_QUOTA_MB),
            max_keys.unwrap_or(DEFAULT_SHARED_MAX_KEYS),
        );
        kv.unknown = s.unknown_keys(SECTION_KEYS);
        Ok(kv)
    }
}

/// What an agent's `kv*` keys grant it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvGrant {
    /// Key `kv = true`: its own bucket, named after it.
    pub own: bool,
    /// Key `kv_shared`: more buckets, by name (valid names, no duplicates).
    pub shared: Vec<String>,
    /// Keys `kv_quota_mb` (default [`DEFAULT_QUOTA_MB`], `1..=`
    /// [`MAX_QUOTA_MB`]) and `kv_max_keys` (default [`DEFAULT_MAX_KEYS`],
    /// `1..=`[`MAX_KEYS`]): its own bucket's quota.
    pub quota: Quota,
}

impl KvGrant {
    /// The grant in `agent`'s keys (declared with [`AGENT_KEYS`]), or `None`
    /// when it has neither `kv = true` nor a `kv_shared` bucket.
    pub fn from_agent(agent: &AgentConfig) -> Result<Option<Self>, ConfigError> {
        let keys = agent.keys();
        let own = keys.get_bool("kv")?.unwrap_or(false);
        let mut shared = keys.get_strings("kv_shared")?.unwrap_or_default();
        if let Some(bad) = shared.iter().find(|n| !valid_bucket_name(n)) {
            return Err(keys.invalid(
                "kv_shared",
                format!(
                    "`{}` is not a bucket name: use 1-64 characters of a-z A-Z 0-9 _ - .",
                    toka_core::text::bounded(bad, 80)
                ),
            ));
        }
        shared.sort();
        shared.dedup();
        let quota_mb = keys.get_uint("kv_quota_mb", 1, MAX_QUOTA_MB)?;
        let max_keys = keys.get_uint("kv_max_keys", 1, MAX_KEYS)?;
        if !own && shared.is_empty() {
            return Ok(None);
        }
        Ok(Some(KvGrant {
            own,
            shared,
            quota: Quota::agent(
                quota_mb.unwrap_or(DEFAULT_QUOTA_MB),
                max_keys.unwrap_or(DEFAULT_MAX_KEYS),
            ),
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use toka_core::config::Declared;

    use super::*;

    fn parse(text: &str) -> RuntimeConfig {
        RuntimeConfig::parse_declared(
            text,
            Path::new("x.toml"),
            Path::new("/etc/toka"),
            &Declared {
                sections: &[SECTION],
                agent_keys: AGENT_KEYS,
            },
            &|_| None,
        )
        .unwrap()
    }

    #[test]
    fn defaults_and_overrides() {
        let cfg = parse("[[agents]]\nname = \"a\"\n");
        assert_eq!(KvConfig::from_config(&cfg).unwrap(), KvConfig::default());
        assert_eq!(KvGrant::from_agent(&cfg.agents[0]).unwrap(), None);

        let cfg = parse(
            r#"
[kv]
path = "kv.redb"
max_key_bytes = 16
max_value_kb = 2
shared_max_keys = 3
typo = 1

[[agents]]
name = "a"
kv = true
kv_shared = ["s", "s", "t.1"]
kv_quota_mb = 2
"#,
        );
        let kv = KvConfig::from_config(&cfg).unwrap();
        assert_eq!(kv.path, Some("/etc/toka/kv.redb".into()));
        assert_eq!(kv.limits.max_key_bytes, 16);
        assert_eq!(kv.limits.max_value_bytes, 2048);
        assert_eq!(kv.shared, Quota::shared(DEFAULT_SHARED_QUOTA_MB, 3));
        assert_eq!(kv.unknown, ["kv.typo (x.toml:7:1)"]);
        let g = KvGrant::from_agent(&cfg.agents[0]).unwrap().unwrap();
        assert!(g.own);
        assert_eq!(g.shared, ["s", "t.1"]);
        assert_eq!(g.quota, Quota::agent(2, DEFAULT_MAX_KEYS));
        // The keys are the capability's, not free-form settings.
        assert!(cfg.agents[0].settings.is_empty());
    }

    #[test]
    fn mistakes_are_located() {
        let cfg = parse("[[agents]]\nname = \"a\"\nkv_shared = [\"ok\", \"no way\"]\n");
        let err = KvGrant::from_agent(&cfg.agents[0]).unwrap_err().to_string();
        assert!(
            err.starts_with("x.toml:3:13: agents[0].kv_shared: `no way` is not a bucket name"),
            "{err}"
        );
        let cfg = parse("[[agents]]\nname = \"a\"\nkv = true\nkv_quota_mb = 0\n");
        let err = KvGrant::from_agent(&cfg.agents[0]).unwrap_err().to_string();
        assert!(
            err.starts_with("x.toml:4:15: agents[0].kv_quota_mb:"),
            "{err}"
        );
        let cfg = parse("[[agents]]\nname = \"a\"\nkv = \"yes\"\n");
        assert!(KvGrant::from_agent(&cfg.agents[0]).is_err());
        let cfg = parse("[kv]\nmax_value_kb = 100000\n");
        let err = KvConfig::from_config(&cfg).unwrap_err().to_string();
        assert!(err.contains("kv.max_value_kb"), "{err}");
    }
}
