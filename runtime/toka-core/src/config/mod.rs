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
//! # Layout
//! - this module: [`RuntimeConfig`], loading ([`RuntimeConfig::load`],
//!   [`load_with`](RuntimeConfig::load_with), [`parse_str`](RuntimeConfig::parse_str),
//!   [`parse_str_with_env`](RuntimeConfig::parse_str_with_env), and
//!   [`load_declared`](RuntimeConfig::load_declared) /
//!   [`parse_declared`](RuntimeConfig::parse_declared) with a [`Declared`]);
//! - `error`: [`ConfigError`] and its `file:line:column: key: message` shape;
//! - `interpolate`: `${VAR}`, `${VAR:-default}` and `$$`;
//! - `located`: values that remember where they were written, the getters
//!   that check them, and the views capabilities parse their own keys with
//!   ([`Section`], [`AgentKeys`], [`LocatedTable`]);
//! - `limits`: [`Limits`] (`[limits]` and per-agent overrides);
//! - `agents`: [`AgentConfig`], agent names and module files;
//! - `sections`: [`EventBusConfig`], [`SecretsConfig`], [`VaultConfig`],
//!   [`TrustConfig`], [`ModulesConfig`].
//!
//! Imports run one way, each module using only those before it: `error`,
//! `located`, `interpolate`, `limits`, `sections` (for `MAX_BUFFER_SIZE`),
//! `agents`, then this module, which uses them all.
//!
//! # Capabilities
//!
//! A capability crate declares what it owns with a [`Declared`]: top-level
//! sections (also accepted as `extra_known` by [`RuntimeConfig::load_with`])
//! and `[[agents]]` keys. Declared sections are interpolated and kept, both as
//! plain [`RuntimeConfig::sections`] and located
//! ([`RuntimeConfig::section`]); declared agent keys are interpolated and kept
//! located per agent ([`AgentConfig::keys`]) instead of becoming settings.
//! Neither is validated while loading: the capability reads them later with
//! the [`Section`] getters, whose errors look exactly like the loader's own.
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

mod agents;
mod error;
mod interpolate;
mod limits;
mod located;
mod sections;
mod services;
#[cfg(test)]
mod testing;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use toml::de::DeTable;

pub use agents::{
    AgentConfig, DirGrant, MAX_AGENT_NAME_LEN, MAX_DIRS, Origin, snake_case, valid_agent_name,
};
pub use error::{ConfigError, Result};
pub use limits::{Limits, MAX_BUFFER_SIZE, MAX_MEMORY_MB};
pub use located::{AgentKeys, LocatedTable, Section};
pub use sections::{
    DEFAULT_MAX_BLOB_MB, EventBusConfig, MAX_VAULT_MB, ModulesConfig, RequestsConfig,
    SecretsConfig, TrustConfig, VaultConfig,
};
pub use services::{SECRET_PREFIX, ServiceRoute};

use error::child;
use interpolate::interpolate;
use located::{Doc, Entry, Table, Unknown};

const KNOWN_TOP_LEVEL: [&str; 9] = [
    "modules_dir",
    "requests",
    "modules",
    "event_bus",
    "limits",
    "agents",
    "secrets",
    "vault",
    "trust",
];

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
    /// `[requests]`: bounds on request/reply between agents.
    pub requests: RequestsConfig,
    /// Routes the `webhook` keys of `[providers.NAME]` sections ask for
    /// (the `[http]` listener serves them beside `[[http.routes]]`).
    pub service_routes: Vec<ServiceRoute>,
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
    /// The same sections as [`sections`](Self::sections), located, for a
    /// capability to parse with [`section`](Self::section).
    pub declared: BTreeMap<String, LocatedTable>,
}

/// What a caller (a capability crate, or the CLI on its behalf) owns in the
/// configuration on top of the built-in keys.
///
/// `Declared::default()` declares nothing, which is how
/// [`RuntimeConfig::load`] reads a file.
#[derive(Debug, Clone, Copy, Default)]
pub struct Declared<'a> {
    /// Top-level tables to interpolate and keep (in
    /// [`RuntimeConfig::sections`] and [`RuntimeConfig::declared`]) instead of
    /// listing them in [`RuntimeConfig::ignored_sections`]. Names of built-in
    /// sections are ignored here.
    pub sections: &'a [&'a str],
    /// `[[agents]]` keys a capability reads itself (its grant: `secrets`,
    /// `vault`, ...): kept out of [`AgentConfig::settings`] and kept,
    /// interpolated and located, in [`AgentConfig::owned`] (see
    /// [`AgentConfig::keys`]). Names of built-in agent keys (`name`,
    /// `module`, `subscribe`, `publish`, `request`, `serve`, `every`, `dirs` and the
    /// [`Limits`] keys) are ignored here: those keep their built-in meaning.
    ///
    /// A capability's keys that are not declared are plain settings, so a
    /// runtime loads its configuration with every registered capability's
    /// keys declared (`toka_runtime::host::caps::declared()`).
    pub agent_keys: &'a [&'a str],
}

/// The process environment; a non-UTF-8 value cannot be spliced into a TOML
/// string, so it counts as unset.
fn process_env(name: &str) -> Option<String> {
    std::env::var_os(name).and_then(|v| v.into_string().ok())
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
        Self::load_declared(
            path,
            &Declared {
                sections: extra_known,
                agent_keys: &[],
            },
        )
    }

    /// Same as [`load`](Self::load), with the sections and agent keys
    /// capabilities own (see [`Declared`]).
    pub fn load_declared(path: impl AsRef<Path>, declared: &Declared<'_>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let base_dir = path.parent().unwrap_or(Path::new(""));
        Self::parse_declared(&text, path, base_dir, declared, &process_env)
    }

    /// Parse from a string (tests, embedders); `source` names it in errors.
    /// Relative paths resolve against `base_dir`. Reads the process environment.
    pub fn parse_str(
        text: &str,
        source: &Path,
        base_dir: &Path,
        extra_known: &[&str],
    ) -> Result<Self> {
        Self::parse_str_with_env(text, source, base_dir, extra_known, &process_env)
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
        let declared = Declared {
            sections: extra_known,
            agent_keys: &[],
        };
        Self::parse_declared(text, source, base_dir, &declared, env)
    }

    /// Same as [`parse_str_with_env`](Self::parse_str_with_env), with the
    /// sections and agent keys capabilities own (see [`Declared`]).
    pub fn parse_declared(
        text: &str,
        source: &Path,
        base_dir: &Path,
        declared: &Declared<'_>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self> {
        let doc = Arc::new(Doc::new(text, source, base_dir));
        let mut parsed = DeTable::parse(text).map_err(|e| doc.syntax_error(&e))?;
        let is_known = |k: &str| KNOWN_TOP_LEVEL.contains(&k) || declared.sections.contains(&k);

        // All of it first, so a bad `${...}` is reported even where a type error follows.
        for (key, value) in parsed.get_mut().iter_mut() {
            if is_known(key.get_ref()) {
                interpolate(&doc, value, &child("", key.get_ref()), env)?;
            }
        }
        let mut root = Table::default();
        let mut ignored_sections = Vec::new();
        for (key, value) in parsed.get_ref() {
            if is_known(key.get_ref()) {
                root.push(Entry::new(key, value));
            } else {
                ignored_sections.push(key.get_ref().to_string());
            }
        }

        let mut unknown = Unknown::new();

        let modules_dir = match root.get("modules_dir") {
            Some(item) => doc.resolved_path(item, "modules_dir")?,
            None => base_dir.join("modules"),
        };

        let event_bus = match root.get("event_bus") {
            Some(item) => sections::event_bus(&doc, item, &mut unknown)?,
            None => EventBusConfig::default(),
        };

        let limits = match root.get("limits") {
            Some(item) => limits::parse(&doc, item, &mut unknown)?,
            None => Limits::default(),
        };

        let mut secrets = SecretsConfig {
            path: event_bus.secret_store.clone(),
            key_file: None,
        };
        if let Some(item) = root.get("secrets") {
            sections::secrets(&doc, item, &mut secrets, &mut unknown)?;
        }
        let vault = match root.get("vault") {
            Some(item) => sections::vault(&doc, item, &mut unknown)?,
            None => VaultConfig::default(),
        };
        let trust = match root.get("trust") {
            Some(item) => sections::trust(&doc, item, &mut unknown)?,
            None => TrustConfig::default(),
        };

        let modules = match root.get("modules") {
            Some(item) => sections::modules(&doc, item, &mut unknown)?,
            None => ModulesConfig::default(),
        };

        let requests = match root.get("requests") {
            Some(item) => sections::requests(&doc, item, &mut unknown)?,
            None => RequestsConfig::default(),
        };

        let mut agents = match root.get("agents") {
            Some(item) => agents::parse(&doc, item, &modules_dir, &limits, declared.agent_keys)?,
            None => Vec::new(),
        };
        // Drivers and providers run as agents, when the caller declared the
        // sections (a build that runs them); otherwise they are ignored
        // sections like any other.
        let mut service_routes = Vec::new();
        for origin in [Origin::Driver, Origin::Provider] {
            let Some(item) = root.get(origin.section()) else {
                continue;
            };
            let (more, routes) = services::parse(
                &doc,
                item,
                &agents,
                origin,
                &modules_dir,
                &limits,
                declared.agent_keys,
            )?;
            agents.extend(more);
            service_routes.extend(routes);
        }
        let listens = root.get("http").and_then(|h| h.get("listen")).is_some();
        if let Some(r) = service_routes.first().filter(|_| !listens) {
            return Err(doc.error(
                r.at,
                Some(&format!("providers.{}.webhook", r.agent.trim_end_matches("-webhook"))),
                "a webhook is served by the HTTP listener: set `[http] listen` (for example \"127.0.0.1:8080\")",
            ));
        }

        let mut sections = BTreeMap::new();
        let mut located = BTreeMap::new();
        for entry in &root {
            let name = entry.key.as_str();
            if KNOWN_TOP_LEVEL.contains(&name) {
                continue;
            }
            let path = child("", name);
            let table = doc.table(&entry.item, &path)?;
            sections.insert(name.to_owned(), doc.to_table(table, &path)?);
            let at = entry.item.at();
            located.insert(
                name.to_owned(),
                LocatedTable::new(&doc, path, at, table.clone()),
            );
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
            requests,
            service_routes,
            ignored_sections,
            unknown_keys: unknown.into_iter().map(|(_, k)| k).collect(),
            sections,
            declared: located,
        })
    }

    /// The declared section `name` (see [`Declared::sections`]), located:
    /// `None` if it was not declared or is absent from the file.
    pub fn section(&self, name: &str) -> Option<Section<'_>> {
        self.declared.get(name).map(LocatedTable::section)
    }

    /// Where the configuration puts the store of section `name`: `[secrets]
    /// path` (or the seed's `[event_bus] secret_store`), `[vault] path`, or
    /// the `path` of a declared section; `None` when it names none.
    ///
    /// Key rotation asks this about the capabilities a build lacks: it
    /// cannot open their stores, and must not rotate the key out from under
    /// one that exists.
    pub fn store_path(&self, name: &str) -> Option<PathBuf> {
        match name {
            "secrets" => self.secrets.path.clone(),
            "vault" => self.vault.path.clone(),
            // A malformed `path` names no store; its capability reports it.
            _ => self.section(name)?.get_path("path").ok().flatten(),
        }
    }

    /// The capability-owned keys of `agents[index]` (see
    /// [`Declared::agent_keys`] and [`AgentConfig::keys`]); `None` past the
    /// last agent.
    pub fn agent_keys(&self, index: usize) -> Option<AgentKeys<'_>> {
        self.agents.get(index).map(AgentConfig::keys)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::testing::{MINIMAL, parse, scratch_dir};
    use super::*;

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
    fn declared_sections_are_also_kept_located() {
        let env = |_: &str| Some("x".to_owned());
        let cfg = RuntimeConfig::parse_str_with_env(
            PORTABLE,
            Path::new("p.toml"),
            Path::new("."),
            &["drivers", "vault"],
            &env,
        )
        .unwrap();
        assert_eq!(
            cfg.declared.keys().collect::<Vec<_>>(),
            ["drivers"],
            "built-in sections are not declared sections"
        );
        let drivers = cfg.section("drivers").unwrap();
        let s3 = drivers.get_table("s3").unwrap().unwrap();
        assert_eq!(s3.get_str("bucket").unwrap(), Some("my-assets"));
        let err = s3.get_bool("bucket").unwrap_err();
        assert_eq!(
            err.to_string(),
            "p.toml:12:14: drivers.s3.bucket: expected a boolean, found a string"
        );
        assert!(cfg.section("vault").is_none() && cfg.section("providers").is_none());
    }

    #[test]
    fn store_paths_by_section_name() {
        let env = |_: &str| None;
        let cfg = RuntimeConfig::parse_str_with_env(
            "[event_bus]\nsecret_store = \"s.db\"\n[vault]\npath = \"v\"\n\
             [kv]\npath = \"kv\"\n[odd]\npath = 1\n",
            Path::new("p.toml"),
            Path::new("/etc/toka"),
            &["kv", "odd"],
            &env,
        )
        .unwrap();
        assert_eq!(cfg.store_path("secrets"), Some("/etc/toka/s.db".into()));
        assert_eq!(cfg.store_path("vault"), Some("/etc/toka/v".into()));
        assert_eq!(cfg.store_path("kv"), Some("/etc/toka/kv".into()));
        assert_eq!(cfg.store_path("odd"), None);
        assert_eq!(cfg.store_path("ledger"), None);
    }

    #[test]
    fn configs_compare_by_settings_not_by_text() {
        let declared = Declared {
            sections: &["drivers"],
            agent_keys: &["scan_path"],
        };
        let env = |_: &str| Some("x".to_owned());
        let load = |text: &str| {
            RuntimeConfig::parse_declared(
                text,
                Path::new("p.toml"),
                Path::new("."),
                &declared,
                &env,
            )
            .unwrap()
        };
        let commented = format!("{PORTABLE}# the text differs, the settings do not\n");
        assert_eq!(load(PORTABLE), load(&commented));
        assert_ne!(
            load(PORTABLE),
            load(&PORTABLE.replace("my-assets", "other"))
        );
    }
}
