//! `[[agents]]`: [`AgentConfig`], how agent names and module files are
//! checked and found, and which keys of an agent's table are built in (the
//! kernel's: name, module, the bus and request grants, `every`, `dirs`,
//! limits), owned by a capability, or free-form settings.
//!
//! Capability grants (`secrets`, `vault`, `auth`, ...) are not built in:
//! each capability declares its keys ([`Declared::agent_keys`](super::Declared::agent_keys))
//! and parses them itself from [`AgentConfig::keys`], so adding one changes
//! nothing here.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::error::{Result, child};
use super::limits::{Limits, apply_limit};
use super::located::{AgentKeys, Doc, Item, LocatedTable, Table};
use crate::event::kinds::RUNTIME_SOURCE;
use crate::topic::PatternSet;

/// Longest accepted agent name, in characters.
pub const MAX_AGENT_NAME_LEN: usize = 64;

/// Most directories one agent may be granted with `dirs`.
pub const MAX_DIRS: usize = 16;

/// One entry of an agent's `dirs` grant: a host directory preopened for the
/// guest at `guest`, read-only unless `writable`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirGrant {
    /// Key `host`: the host directory, relative paths resolved against the
    /// config file's directory. Checked to exist and be a directory when the
    /// configuration is loaded.
    pub host: PathBuf,
    /// Key `guest`: where the guest sees it; absolute (`/content`), no `.`
    /// or `..` segments, unique within the agent.
    pub guest: String,
    /// Key `writable` (default `false`): the guest may create, write,
    /// rename and remove entries under it.
    pub writable: bool,
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
    /// Key `request`: kinds the agent may send requests of (`request =
    /// ["s3.>"]`). Default empty = may request nothing. No `toka.*` patterns.
    pub request: PatternSet,
    /// Key `serve`: kinds the agent answers requests of; its module must be a
    /// component of world `service`. Default empty = serves nothing. No
    /// `toka.*` patterns.
    pub serve: PatternSet,
    /// Key `every` (humantime, e.g. `"5s"`, >= 1ms): the agent's own tick
    /// period. Default `None`.
    pub every: Option<Duration>,
    /// Key `dirs`: host directories preopened for the guest, e.g.
    /// `dirs = [{ host = "content", guest = "/content" }, { host = "out",
    /// guest = "/out", writable = true }]`; at most [`MAX_DIRS`]. Default
    /// empty = no filesystem at all.
    pub dirs: Vec<DirGrant>,
    /// Effective limits: `[limits]` overridden by the agent's own limit keys.
    pub limits: Limits,
    /// Every other key of the agent's table, in file order, rendered as
    /// strings: strings as is (after interpolation), other values in their TOML
    /// spelling (`42`, `true`, `[1, 2]`, `{ a = 1 }`).
    pub settings: Vec<(String, String)>,
    /// Where this agent's table starts, for later error messages:
    /// `"config/x.toml:7:1"`.
    pub location: String,
    /// The keys a capability declared as its own
    /// ([`Declared::agent_keys`](super::Declared::agent_keys)), interpolated
    /// and located but not validated: they are not in `settings`. Read them
    /// with [`keys`](Self::keys). Empty when nothing was declared.
    pub owned: LocatedTable,
    /// The table it was configured in: `[[agents]]`, or a `[drivers.NAME]`
    /// / `[providers.NAME]` section run as a service agent.
    pub origin: Origin,
}

/// Where an [`AgentConfig`] was configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Origin {
    /// An `[[agents]]` entry.
    #[default]
    Agent,
    /// A `[drivers.NAME]` section.
    Driver,
    /// A `[providers.NAME]` section.
    Provider,
}

impl Origin {
    /// The top-level key it comes from: `agents`, `drivers`, `providers`.
    pub fn section(self) -> &'static str {
        match self {
            Origin::Agent => "agents",
            Origin::Driver => "drivers",
            Origin::Provider => "providers",
        }
    }
}

impl AgentConfig {
    /// The capability-owned keys of this agent, with located getters whose
    /// errors name `agents[i].<key>` and where it was written.
    pub fn keys(&self) -> AgentKeys<'_> {
        AgentKeys::new(&self.name, self.owned.section())
    }
}

/// True for a valid `[[agents]] name`: 1-[`MAX_AGENT_NAME_LEN`] characters of
/// `A-Z a-z 0-9 _ -`. (The loader also refuses the runtime's own name, `toka`.)
pub fn valid_agent_name(name: &str) -> bool {
    (1..=MAX_AGENT_NAME_LEN).contains(&name.chars().count())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
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

fn default_module(modules_dir: &Path, name: &str) -> PathBuf {
    let exact = modules_dir.join(format!("{name}.wasm"));
    if exact.exists() {
        exact
    } else {
        modules_dir.join(format!("{}.wasm", snake_case(name)))
    }
}

/// The `agents` array. Keys named in `owned` that are not built-in agent
/// keys go to each agent's [`AgentConfig::owned`] instead of its settings.
pub(super) fn parse(
    doc: &Arc<Doc>,
    node: &Item,
    modules_dir: &Path,
    defaults: &Limits,
    owned: &[&str],
) -> Result<Vec<AgentConfig>> {
    let items = doc.array(node, "agents", "an array of tables (`[[agents]]`)")?;
    let mut agents: Vec<AgentConfig> = Vec::with_capacity(items.len());
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (i, item) in items.iter().enumerate() {
        let agent = parse_agent(
            doc,
            format!("agents[{i}]"),
            Origin::Agent,
            item,
            modules_dir,
            defaults,
            owned,
        )?;
        if let Some(first) = seen.insert(agent.name.clone(), i) {
            let name_node = item.get("name").unwrap_or(item);
            return Err(doc.invalid(
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

/// One agent's table, its keys reported as `<prefix>.<key>`.
pub(super) fn parse_agent(
    doc: &Arc<Doc>,
    prefix: String,
    origin: Origin,
    node: &Item,
    modules_dir: &Path,
    defaults: &Limits,
    owned_keys: &[&str],
) -> Result<AgentConfig> {
    let table = doc.table(node, &prefix)?;

    let name_key = format!("{prefix}.name");
    let Some(name_node) = table.get("name") else {
        return Err(doc.invalid(node, &name_key, "missing required key `name`"));
    };
    let name = doc.str(name_node, &name_key)?;
    if !valid_agent_name(name) {
        return Err(doc.invalid(
            name_node,
            &name_key,
            format!(
                "invalid agent name {name:?}: must be 1-{MAX_AGENT_NAME_LEN} characters of A-Z a-z 0-9 _ -"
            ),
        ));
    }
    if name == RUNTIME_SOURCE {
        return Err(doc.invalid(
            name_node,
            &name_key,
            format!("agent name {name:?} is reserved for the runtime"),
        ));
    }

    let mut module = None;
    let mut subscribe = PatternSet::default();
    let mut publish = PatternSet::default();
    let mut request = PatternSet::default();
    let mut serve = PatternSet::default();
    let mut every = None;
    let mut dirs = Vec::new();
    let mut limits = *defaults;
    let mut owned = Table::default();
    let mut settings: Vec<(usize, String, String)> = Vec::new();
    for entry in table {
        let (k, value) = (entry.key.as_str(), &entry.item);
        let path = child(&prefix, k);
        match k {
            "name" => {}
            // Relative to modules_dir: `module` names a file among the
            // operator's modules, wherever the config itself lives.
            "module" => module = Some(modules_dir.join(doc.path(value, &path)?)),
            "subscribe" => subscribe = doc.patterns(value, &path, None)?,
            "publish" => publish = doc.patterns(value, &path, Some("publishing"))?,
            "request" => request = doc.patterns(value, &path, Some("requesting"))?,
            "serve" => serve = doc.patterns(value, &path, Some("serving"))?,
            "every" => every = Some(doc.duration(value, &path, Duration::from_millis(1))?),
            "dirs" => dirs = parse_dirs(doc, name, value, &path)?,
            _ => {
                if apply_limit(doc, &mut limits, k, value, &path)? {
                    // A limit override.
                } else if owned_keys.contains(&k) {
                    owned.push(entry.clone());
                } else {
                    let rendered = doc.render(value, &path)?;
                    settings.push((entry.key_at, k.to_owned(), rendered));
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
        request,
        serve,
        every,
        dirs,
        limits,
        settings: settings.into_iter().map(|(_, k, v)| (k, v)).collect(),
        location: doc.location(node.at()),
        owned: LocatedTable::new(doc, prefix, node.at(), owned),
        origin,
    })
}

/// A guest path for a preopen: absolute, `/`-separated, no empty, `.` or
/// `..` segments, not `/` itself, at most 255 bytes.
fn check_guest_path(guest: &str) -> std::result::Result<(), &'static str> {
    let Some(rest) = guest.strip_prefix('/') else {
        return Err("must be absolute (start with `/`)");
    };
    if guest.len() > 255 {
        return Err("must be at most 255 bytes");
    }
    if rest.is_empty() {
        return Err("must name a directory below `/`, not `/` itself");
    }
    for segment in rest.split('/') {
        match segment {
            "" => return Err("must not have empty segments (`//` or a trailing `/`)"),
            "." | ".." => return Err("must not have `.` or `..` segments"),
            s if s.chars().any(|c| c.is_control() || c == '\\') => {
                return Err("must not hold control characters or `\\`");
            }
            _ => {}
        }
    }
    Ok(())
}

/// The `dirs` grant of agent `agent` (see [`DirGrant`]).
fn parse_dirs(doc: &Doc, agent: &str, node: &Item, path: &str) -> Result<Vec<DirGrant>> {
    let items = doc.array(
        node,
        path,
        "an array of tables (`dirs = [{ host = \"...\", guest = \"/...\" }]`)",
    )?;
    if items.len() > MAX_DIRS {
        return Err(doc.invalid(
            node,
            path,
            format!("at most {MAX_DIRS} directories, got {}", items.len()),
        ));
    }
    let mut dirs: Vec<DirGrant> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let at = format!("{path}[{i}]");
        let table = doc.table(item, &at)?;
        let (mut host, mut guest, mut writable) = (None, None, false);
        for entry in table {
            let key = child(&at, &entry.key);
            match entry.key.as_str() {
                "host" => host = Some((doc.resolved_path(&entry.item, &key)?, &entry.item)),
                "guest" => guest = Some((doc.str(&entry.item, &key)?, &entry.item)),
                "writable" => writable = doc.bool(&entry.item, &key)?,
                other => {
                    return Err(doc.invalid(
                        &entry.item,
                        &key,
                        format!("unknown key `{other}` (expected `host`, `guest`, `writable`)"),
                    ));
                }
            }
        }
        let Some((host, host_node)) = host else {
            return Err(doc.invalid(item, &child(&at, "host"), "missing required key `host`"));
        };
        let Some((guest, guest_node)) = guest else {
            return Err(doc.invalid(item, &child(&at, "guest"), "missing required key `guest`"));
        };
        let guest_key = child(&at, "guest");
        check_guest_path(guest).map_err(|why| {
            doc.invalid(
                guest_node,
                &guest_key,
                format!("guest path {guest:?} {why}"),
            )
        })?;
        if let Some(first) = dirs.iter().position(|d| d.guest == guest) {
            return Err(doc.invalid(
                guest_node,
                &guest_key,
                format!("guest path {guest:?} is already granted by {path}[{first}]"),
            ));
        }
        // Checked here, when the runtime starts, not when a guest first
        // looks: a typo is the operator's to fix before anything runs.
        match std::fs::metadata(&host) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(doc.invalid(
                    host_node,
                    &child(&at, "host"),
                    format!("agent {agent:?}: {} is not a directory", host.display()),
                ));
            }
            Err(e) => {
                return Err(doc.invalid(
                    host_node,
                    &child(&at, "host"),
                    format!("agent {agent:?}: directory {}: {e}", host.display()),
                ));
            }
        }
        dirs.push(DirGrant {
            host,
            guest: guest.to_owned(),
            writable,
        });
    }
    Ok(dirs)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::testing::{MINIMAL, no_env, parse, parse_err, scratch_dir};
    use crate::config::{Declared, RuntimeConfig};

    #[test]
    fn snake_case_names() {
        assert_eq!(snake_case("Logger"), "logger");
        assert_eq!(snake_case("IndexerAgent"), "indexer_agent");
        assert_eq!(snake_case("my-agent"), "my-agent");
        assert_eq!(snake_case("HTTPServer"), "http_server");
        assert_eq!(snake_case("agent2Go"), "agent2_go");
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
    fn capability_grants_are_owned_by_their_capability_not_built_in() {
        let text = r#"
            [[agents]]
            name = "payments"
            secrets = ["stripe/*"]
            vault = true
            vault_quota_mb = 0
            request = ["s3.>"]
            "#;
        // Declared (as the runtime declares every capability's keys), the
        // grants are kept for their capability, unvalidated: a bad value is
        // the capability's to report.
        let declared = Declared {
            sections: &[],
            agent_keys: &["secrets", "vault", "vault_quota_mb"],
        };
        let cfg = RuntimeConfig::parse_declared(
            text,
            Path::new("config/x.toml"),
            Path::new("/etc/toka"),
            &declared,
            &no_env,
        )
        .unwrap();
        let pay = &cfg.agents[0];
        assert!(pay.settings.is_empty(), "grant keys are not settings");
        let keys = pay.keys();
        assert_eq!(
            keys.keys().collect::<Vec<_>>(),
            ["secrets", "vault", "vault_quota_mb"]
        );
        assert_eq!(keys.get_strings("secrets").unwrap().unwrap(), ["stripe/*"]);
        let err = keys.get_uint("vault_quota_mb", 1, 64).unwrap_err();
        assert_eq!(err.key(), Some("agents[0].vault_quota_mb"));
        // Request grants are the kernel's.
        assert!(pay.request.matches("s3.get"));

        // Undeclared, a grant key is only a setting: nothing in the core
        // knows it.
        let cfg = parse(text).unwrap();
        let names: Vec<&str> = cfg.agents[0]
            .settings
            .iter()
            .map(|(k, _)| k.as_str())
            .collect();
        assert_eq!(names, ["secrets", "vault", "vault_quota_mb"]);
    }

    #[test]
    fn declared_agent_keys_are_owned_not_settings() {
        let text = "[[agents]]\nname = \"A\"\nfuel = 5\ntoken_ttl = \"${TTL}\"\n\
                    colour = \"red\"\npublish = [\"db.*\"]\n\n[[agents]]\nname = \"B\"\n";
        let env = |k: &str| (k == "TTL").then(|| "90s".to_owned());
        let declared = Declared {
            sections: &[],
            // Built-in keys (a bus grant, a limit) stay built in.
            agent_keys: &["token_ttl", "publish", "fuel"],
        };
        let cfg = RuntimeConfig::parse_declared(
            text,
            Path::new("config/x.toml"),
            Path::new("/etc/toka"),
            &declared,
            &env,
        )
        .unwrap();
        let a = &cfg.agents[0];
        assert_eq!(a.settings, [("colour".to_owned(), "red".to_owned())]);
        assert!(a.publish.matches("db.x"));
        assert_eq!(a.limits.fuel, Some(5));
        let keys = a.keys();
        assert_eq!(keys.keys().collect::<Vec<_>>(), ["token_ttl"]);
        assert_eq!(
            keys.get_duration("token_ttl", Duration::ZERO).unwrap(),
            Some(Duration::from_secs(90)),
            "owned keys are interpolated"
        );
        assert!(cfg.agents[1].keys().is_empty());
        assert_eq!(cfg.agent_keys(1).unwrap().agent(), "B");

        // Undeclared, the same key is a free-form setting, as before.
        let cfg = RuntimeConfig::parse_str_with_env(
            text,
            Path::new("config/x.toml"),
            Path::new("/etc/toka"),
            &[],
            &env,
        )
        .unwrap();
        assert_eq!(
            cfg.agents[0].settings[0],
            ("token_ttl".into(), "90s".into())
        );
        assert!(cfg.agents[0].owned.is_empty());

        // Owned keys are not validated while loading: their capability does that.
        let odd = "[[agents]]\nname = \"A\"\ntoken_ttl = 1.5\n";
        let cfg = RuntimeConfig::parse_declared(
            odd,
            Path::new("config/x.toml"),
            Path::new("/etc/toka"),
            &declared,
            &no_env,
        )
        .unwrap();
        let err = cfg.agents[0].keys().get_str("token_ttl").unwrap_err();
        assert_eq!(
            err.to_string(),
            "config/x.toml:3:13: agents[0].token_ttl: expected a string, found a float"
        );
    }

    fn dirs_config(dir: &Path, dirs: &str) -> String {
        format!("[[agents]]\nname = \"A\"\ndirs = {dirs}\n",)
            .replace("@", &dir.display().to_string())
    }

    #[test]
    fn dirs_grant_resolves_hosts_and_defaults_to_read_only() {
        let dir = scratch_dir("dirs-ok");
        std::fs::create_dir_all(dir.join("content")).unwrap();
        let text = dirs_config(
            &dir,
            r#"[{ host = "content", guest = "/content" }, { host = "@/modules", guest = "/out/x", writable = true }]"#,
        );
        let file = dir.join("toka.toml");
        std::fs::write(&file, text).unwrap();
        let cfg = RuntimeConfig::load(&file).unwrap();
        assert_eq!(
            cfg.agents[0].dirs,
            [
                DirGrant {
                    host: dir.join("content"),
                    guest: "/content".into(),
                    writable: false,
                },
                DirGrant {
                    host: dir.join("modules"),
                    guest: "/out/x".into(),
                    writable: true,
                },
            ]
        );
        assert!(cfg.agents[0].settings.is_empty(), "dirs is not a setting");
        assert!(parse(MINIMAL).unwrap().agents[0].dirs.is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn bad_dirs_grants_name_the_key() {
        let dir = scratch_dir("dirs-bad");
        let ok = dir.join("modules").display().to_string();
        let cases: &[(&str, &str, &str)] = &[
            (
                r#"[{ host = "@/nope", guest = "/c" }]"#,
                "agents[0].dirs[0].host",
                "agent \"A\": directory",
            ),
            (
                r#"[{ host = "@/modules", guest = "/c" }, { host = "@/toka.toml", guest = "/d" }]"#,
                "agents[0].dirs[1].host",
                "is not a directory",
            ),
            (
                r#"[{ host = "@/modules", guest = "c" }]"#,
                "agents[0].dirs[0].guest",
                "absolute",
            ),
            (
                r#"[{ host = "@/modules", guest = "/c/../d" }]"#,
                "agents[0].dirs[0].guest",
                "`..`",
            ),
            (
                r#"[{ host = "@/modules", guest = "/" }]"#,
                "agents[0].dirs[0].guest",
                "not `/`",
            ),
            (
                r#"[{ host = "@/modules", guest = "/c" }, { host = "@/modules", guest = "/c" }]"#,
                "agents[0].dirs[1].guest",
                "already granted by agents[0].dirs[0]",
            ),
            (r#"[{ guest = "/c" }]"#, "agents[0].dirs[0].host", "missing"),
            (
                r#"[{ host = "@/modules" }]"#,
                "agents[0].dirs[0].guest",
                "missing",
            ),
            (
                r#"[{ host = "@/modules", guest = "/c", writeable = true }]"#,
                "agents[0].dirs[0].writeable",
                "unknown key",
            ),
            (
                r#"[{ host = "@/modules", guest = "/c", writable = "yes" }]"#,
                "agents[0].dirs[0].writable",
                "boolean",
            ),
            (r#""@/modules""#, "agents[0].dirs", "array of tables"),
        ];
        std::fs::write(dir.join("toka.toml"), "").unwrap();
        for (dirs, key, message) in cases {
            let err = parse_err(&dirs_config(&dir, dirs));
            assert_eq!(err.key(), Some(*key), "{dirs}: {err}");
            assert_eq!(err.line(), Some(3), "{dirs}: {err}");
            assert!(err.to_string().contains(message), "{dirs}: {err}");
        }
        let many: Vec<String> = (0..=MAX_DIRS)
            .map(|i| format!("{{ host = \"{ok}\", guest = \"/d{i}\" }}"))
            .collect();
        let err = parse_err(&dirs_config(&dir, &format!("[{}]", many.join(", "))));
        assert_eq!(err.key(), Some("agents[0].dirs"));
        assert!(err.to_string().contains("at most 16"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
