//! The capabilities this build links: one registration line each in
//! [`registered!`] below, naming the capability's type and the
//! `[[agents]]` keys it owns, and everything the kernel derives from the
//! list.
//!
//! The operator grants capabilities per agent in `[[agents]]` (`secrets`,
//! `vault`, `vault_shared`, `auth`, `allowed_hosts`, `kv`, `ledger_*`, ...); everything is denied by default. The
//! configuration is loaded with every registered capability's keys declared
//! ([`declared`]), so each capability parses its own grant from
//! [`AgentConfig::keys`]. At startup [`Capabilities::open`] asks each
//! capability for each agent's grant and opens the capability only if some
//! agent holds one (so a config without grants never asks for a master
//! key), failing fast, naming the agent and key, when a grant cannot be
//! honoured: a malformed grant, a capability this build lacks, a store that
//! is not configured. Each agent then gets an [`AgentCaps`] that its
//! instances' views read on every call.
//!
//! A new capability is a crate implementing [`Capability`] behind its
//! `host` feature, plus one line in [`registered!`]: its state field, its
//! keys (declared to the loader even in a build without it, so such a build
//! refuses its grant instead of passing it to the agent as a setting), its
//! `open`/`for_agent` calls, its linking, its `toka inspect` interfaces, its
//! `toka check` lines and its `--version` name all follow from it. The keys
//! written in the line are checked against the capability's own
//! [`Capability::AGENT_KEYS`] when it is built (at compile time).

use std::sync::Arc;

pub use toka_capability::{CapError, Sealed};
#[allow(unused_imports, reason = "used only when a capability is built in")]
use toka_capability::{Capability, OpenCx};
use toka_core::config::AgentKeys;
use toka_core::{AgentConfig, Declared, RuntimeConfig};

/// Agent state that holds capability `C`'s state for one agent (the kernel's
/// store data gives each capability its view from it).
pub trait Holds<C: Capability> {
    /// `C`'s state for this agent, or `None` when it holds no grant.
    fn holds(&self) -> Option<&C::AgentState>;
}

/// One entry of [`sealed`]: a store a capability of this build keeps
/// sealed under the master key, or a registered capability this build
/// lacks, whose stores (if it has any) this build cannot open.
pub enum SealedEntry {
    /// A store that exists, as the keyring's rotation sees it.
    Store(Box<dyn Sealed>),
    /// The name of a registered capability this build does not have.
    NotBuilt(&'static str),
}

impl std::fmt::Debug for SealedEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SealedEntry::Store(_) => f.write_str("Store(..)"),
            SealedEntry::NotBuilt(name) => f.debug_tuple("NotBuilt").field(name).finish(),
        }
    }
}

/// Derives, from the one list in [`registered!`], [`KNOWN`],
/// [`AGENT_KEYS`], [`BUILT`], [`BUILT_KEYS`], [`INTERFACES`], [`sealed`],
/// [`AgentCaps`] (and its [`Holds`] impls) and [`Capabilities`].
macro_rules! define {
    ($(
        #[cfg($meta:meta)] $field:ident : $ty:ty = [$($key:literal),* $(,)?]
    ),* $(,)?) => {
        /// Every registered capability, whether this build has it or not, by
        /// name, with the `[[agents]]` keys it owns (from its registration
        /// line: a build without the capability has nothing else to go by).
        pub const KNOWN: &[(&str, &[&str])] = &[$( (stringify!($field), &[$($key),*]) ),*];

        /// The `[[agents]]` keys of every registered capability, built or not.
        pub const AGENT_KEYS: &[&str] = &[$($($key,)*)*];

        /// The capabilities compiled into this build, by name (`toka --version`).
        pub const BUILT: &[&str] = &[$( #[cfg($meta)] <$ty as Capability>::NAME, )*];

        /// The top-level sections the capabilities of this build own.
        pub static SECTIONS: std::sync::LazyLock<Vec<&'static str>> = std::sync::LazyLock::new(|| {
            let all: &[&[&'static str]] = &[$( #[cfg($meta)] <$ty as Capability>::SECTIONS, )*];
            all.concat()
        });

        /// The capabilities compiled into this build, each with its own
        /// [`Capability::AGENT_KEYS`] (which must be its registration line's).
        pub const BUILT_KEYS: &[(&str, &[&str])] = &[$(
            #[cfg($meta)]
            (<$ty as Capability>::NAME, <$ty as Capability>::AGENT_KEYS),
        )*];

        // A registration line names its capability and its keys as the
        // capability itself does, or the build fails.
        $(
            #[cfg($meta)]
            const _: () = assert!(
                same(<$ty as Capability>::NAME, stringify!($field))
                    && same_keys(<$ty as Capability>::AGENT_KEYS, &[$($key),*]),
                concat!(
                    "the registration line of `", stringify!($field),
                    "` must give its capability's NAME and AGENT_KEYS"
                ),
            );
        )*

        /// The stores sealed under the master key that `config` names, in the
        /// order a key rotation re-keys them (`toka secrets rotate-key`, and
        /// the settling of an interrupted one): each registered capability's
        /// [`Capability::sealed`], the last registered first, with a
        /// [`SealedEntry::NotBuilt`] in the place of each capability this
        /// build lacks.
        ///
        /// Last registered first, so the secret store (the first capability's,
        /// which others share) is re-keyed last and the vault just before it,
        /// as rotations always did: a rotation from `TOKA_MASTER_KEY` refuses a
        /// store other than the last that holds data, and settling an
        /// interrupted rotation relies on the order staying put, so a new
        /// capability registered at the end is re-keyed first.
        pub fn sealed(config: &RuntimeConfig) -> Vec<SealedEntry> {
            let each: Vec<Vec<SealedEntry>> = Vec::from([$(
                #[cfg($meta)]
                <$ty as Capability>::sealed(config)
                    .into_iter()
                    .map(SealedEntry::Store)
                    .collect(),
                #[cfg(not($meta))]
                vec![SealedEntry::NotBuilt(stringify!($field))],
            )*]);
            let _ = config;
            each.into_iter().rev().flatten().collect()
        }

        /// Every WIT interface the capabilities of this build serve, with
        /// the line `toka inspect` prints for it.
        pub const INTERFACES: &[&[(&str, &str)]] = &[$( #[cfg($meta)] <$ty as Capability>::INTERFACES, )*];

        /// The capabilities one agent holds. Cheap to clone into every instance.
        #[derive(Default)]
        pub struct AgentCaps {
            $(
                #[cfg($meta)]
                $field: Option<Arc<<$ty as Capability>::AgentState>>,
            )*
            /// One line per granted capability, for `toka check`.
            pub grants: Vec<String>,
            /// The settings `init` gets when they differ from the
            /// configuration's: a driver's or provider's with each
            /// `secret:NAME` value read from the secret store. Never logged.
            pub settings: Option<Arc<Vec<(String, String)>>>,
        }

        impl std::fmt::Debug for AgentCaps {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct("AgentCaps").field("grants", &self.grants).finish()
            }
        }

        /// The opened capabilities: each only when some agent holds it.
        #[derive(Default)]
        pub struct Capabilities {
            $(
                #[cfg($meta)]
                $field: Option<$ty>,
            )*
            /// Per driver or provider, its settings with secrets read.
            resolved: Resolved,
        }

        impl std::fmt::Debug for Capabilities {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct("Capabilities").finish_non_exhaustive()
            }
        }

        impl Capabilities {
            /// Check every agent's grants against this build and open what they need.
            pub fn open(config: &RuntimeConfig) -> Result<Self, CapError> {
                undeclared(config)?;
                not_built(config)?;
                #[allow(unused_mut, unused_variables, reason = "empty without capabilities")]
                let mut cx = OpenCx::default();
                #[allow(unused_mut, reason = "empty without capabilities")]
                let mut caps = Capabilities::default();
                $(
                    #[cfg($meta)]
                    {
                        let grants = config
                            .agents
                            .iter()
                            .map(|a| Ok(<$ty as Capability>::grant(a)?.map(|g| (a, g))))
                            .collect::<Result<Vec<_>, CapError>>()?;
                        let granted: Vec<_> = grants.iter().flatten().map(|(a, g)| (*a, g)).collect();
                        if !granted.is_empty() {
                            caps.$field = Some(<$ty as Capability>::open(config, &granted, &mut cx)?);
                        }
                    }
                )*
                caps.resolved = resolve_secrets(config, &mut cx)?;
                Ok(caps)
            }

            /// The capabilities `agent` holds.
            pub fn for_agent(&self, agent: &AgentConfig) -> Result<Arc<AgentCaps>, CapError> {
                #[allow(unused_mut, reason = "empty without capabilities")]
                let mut caps = AgentCaps::default();
                $(
                    #[cfg($meta)]
                    if let Some(grant) = <$ty as Capability>::grant(agent)? {
                        let opened = self.$field.as_ref().expect("opened for any grant");
                        caps.grants.push(<$ty as Capability>::describe(&grant));
                        caps.$field = Some(Arc::new(opened.for_agent(agent, grant)?));
                    }
                )*
                caps.settings = self.resolved.get(&agent.name).cloned();
                Ok(Arc::new(caps))
            }
        }

        $(
            #[cfg($meta)]
            impl Holds<$ty> for AgentCaps {
                fn holds(&self) -> Option<&<$ty as Capability>::AgentState> {
                    self.$field.as_deref()
                }
            }
        )*
    };
}

/// The registered capabilities: one line each, `#[cfg(feature = "<name>")]
/// <name>: <type> = [<the [[agents]] keys it owns>]`, where `<name>` is the
/// capability's [`Capability::NAME`] and its cargo feature. Every list the
/// kernel needs is derived from this one by passing a macro to it (`define`
/// here; the linker's in `host::new_linker`).
macro_rules! registered {
    ($derive:ident) => {
        $derive! {
            #[cfg(feature = "secrets")] secrets: toka_secrets::host::Secrets = ["secrets"],
            #[cfg(feature = "vault")] vault: toka_vault::host::Vault = ["vault", "vault_shared", "vault_quota_mb"],
            #[cfg(feature = "auth")] auth: toka_auth::host::Auth = ["auth"],
            #[cfg(feature = "http")] http: toka_http::host::Http = [
                "allowed_hosts", "http_credentials", "http_connect_timeout",
                "http_first_byte_timeout", "http_timeout", "http_max_request_bytes",
                "http_max_response_bytes", "http_max_concurrent", "http_requests_per_sec"
            ],
            #[cfg(feature = "kv")] kv: toka_kv::host::Kv = ["kv", "kv_shared", "kv_quota_mb", "kv_max_keys"],
            #[cfg(feature = "ledger")] ledger: toka_ledger::host::Ledger = [
                "ledger_mint", "ledger_burn", "ledger_debit", "ledger_credit", "ledger_read"
            ],
        }
    };
}
pub(crate) use registered;

registered!(define);

/// Per driver or provider (by agent name), its settings with secrets read.
type Resolved = std::collections::HashMap<String, Arc<Vec<(String, String)>>>;

/// The settings of every driver and provider that has `secret:NAME`
/// values, with each read from the secret store (opened once, shared with
/// the `secrets` capability through `cx`). A secret that is missing or not
/// UTF-8 is the operator's error, naming the agent and key, never the value.
fn resolve_secrets(config: &RuntimeConfig, cx: &mut OpenCx) -> Result<Resolved, CapError> {
    use toka_core::config::{Origin, SECRET_PREFIX};
    let mut resolved = std::collections::HashMap::new();
    for agent in &config.agents {
        let wants = |(_, v): &(String, String)| v.starts_with(SECRET_PREFIX);
        if agent.origin == Origin::Agent || !agent.settings.iter().any(wants) {
            continue;
        }
        #[cfg(feature = "secrets")]
        {
            let store = toka_secrets::host::store(config, cx)?;
            let mut settings = Vec::with_capacity(agent.settings.len());
            for (key, value) in &agent.settings {
                let Some(name) = value.strip_prefix(SECRET_PREFIX) else {
                    settings.push((key.clone(), value.clone()));
                    continue;
                };
                let secret = store
                    .get(name)
                    .map_err(|e| {
                        CapError::agent(agent, format!("`{key}`: reading secret `{name}`: {e}"))
                            .with_kind(toka_secrets::host::kind(e.is_operator_error()))
                    })?
                    .ok_or_else(|| {
                        CapError::agent(
                            agent,
                            format!(
                                "`{key}`: no secret `{name}` in the secret store (add it with `toka secrets set {name}`)"
                            ),
                        )
                    })?;
                let text = std::str::from_utf8(secret.expose()).map_err(|_| {
                    CapError::agent(
                        agent,
                        format!(
                            "`{key}`: secret `{name}` is not UTF-8 text, and settings are text"
                        ),
                    )
                })?;
                settings.push((key.clone(), text.to_owned()));
            }
            resolved.insert(agent.name.clone(), Arc::new(settings));
        }
        #[cfg(not(feature = "secrets"))]
        {
            let _ = (&mut resolved, &cx);
            return Err(CapError::agent(
                agent,
                "a setting is `secret:...` but this build has no `secrets` capability (rebuild `toka` with `--features secrets`)",
            ));
        }
    }
    Ok(resolved)
}

/// What the registered capabilities own in the configuration, for
/// [`RuntimeConfig::load_declared`] / [`RuntimeConfig::parse_declared`]:
/// every registered capability's `[[agents]]` keys, whether this build has
/// the capability or not (a build without it then refuses the grant rather
/// than handing it to the agent as a setting), and the sections of the
/// capabilities this build has ([`Capability::SECTIONS`]; a build without
/// one ignores its section with the usual warning).
pub fn declared() -> Declared<'static> {
    Declared {
        sections: &DECLARED_SECTIONS,
        agent_keys: AGENT_KEYS,
    }
}

/// The sections this build reads: its capabilities' and, with the
/// `services` feature, `[drivers]` and `[providers]` (run as agents).
static DECLARED_SECTIONS: std::sync::LazyLock<Vec<&'static str>> = std::sync::LazyLock::new(|| {
    let mut all = SECTIONS.clone();
    if cfg!(feature = "services") {
        all.extend(["drivers", "providers"]);
    }
    all
});

/// The configuration at `path`, loaded as the runtime needs it: with
/// [`declared`] (`RuntimeConfig::load` would leave the capabilities' grants
/// as settings, which [`Capabilities::open`] refuses).
pub fn load(path: impl AsRef<std::path::Path>) -> Result<RuntimeConfig, toka_core::ConfigError> {
    RuntimeConfig::load_declared(path, &declared())
}

/// A configuration loaded without [`declared`] hands the capabilities' keys
/// to the agents as free-form settings, and the grant would be lost without
/// a word: refused, naming the key and the loader to use.
fn undeclared(config: &RuntimeConfig) -> Result<(), CapError> {
    for agent in &config.agents {
        if let Some((key, _)) = agent
            .settings
            .iter()
            .find(|(key, _)| AGENT_KEYS.contains(&key.as_str()))
        {
            return Err(CapError::agent(
                agent,
                format!(
                    "`{key}` reached the runtime as a free-form setting: the configuration was loaded without the capabilities' keys (load it with `RuntimeConfig::load_declared(path, &toka_runtime::host::caps::declared())`)"
                ),
            ));
        }
    }
    Ok(())
}

/// A grant of a capability this build does not have is the operator's
/// error, named with the agent and the rebuild that fixes it.
fn not_built(config: &RuntimeConfig) -> Result<(), CapError> {
    for agent in &config.agents {
        let keys = agent.keys();
        for (name, owned) in KNOWN.iter().filter(|(name, _)| !BUILT.contains(name)) {
            if owned.iter().any(|key| grants(&keys, key)) {
                return Err(CapError::agent(
                    agent,
                    format!(
                        "`{name}` is granted but this build has no `{name}` capability (rebuild `toka` with `--features {name}`)"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Whether `key` grants anything, judged without the capability that owns
/// it: present, and not `false` or `[]` (how an operator writes "not
/// granted"). Any other value counts, even one the capability would refuse.
fn grants(keys: &AgentKeys<'_>, key: &str) -> bool {
    let denied = matches!(keys.get_bool(key), Ok(Some(false)))
        || matches!(keys.get_strings(key), Ok(Some(list)) if list.is_empty());
    keys.contains(key) && !denied
}

/// `a == b`, at compile time.
#[allow(dead_code, reason = "used only when a capability is built in")]
const fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// `a == b` for lists of keys, at compile time.
#[allow(dead_code, reason = "used only when a capability is built in")]
const fn same_keys(a: &[&str], b: &[&str]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if !same(a[i], b[i]) {
            return false;
        }
        i += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn config(agent: &str) -> RuntimeConfig {
        RuntimeConfig::parse_declared(
            &format!("[[agents]]\nname = \"a\"\n{agent}\n"),
            Path::new("t.toml"),
            Path::new("."),
            &declared(),
            &|_| None,
        )
        .unwrap()
    }

    #[test]
    fn the_registration_lines_keys_are_each_capabilitys_own() {
        for (name, keys) in BUILT_KEYS {
            let line = KNOWN.iter().find(|(known, _)| known == name);
            assert_eq!(
                line,
                Some(&(*name, *keys)),
                "the registration line of `{name}`"
            );
        }
        assert_eq!(BUILT.len(), BUILT_KEYS.len());
        let flat: Vec<&str> = KNOWN
            .iter()
            .flat_map(|(_, keys)| keys.iter().copied())
            .collect();
        assert_eq!(flat, AGENT_KEYS);
        assert!(same_keys(&["a", "bc"], &["a", "bc"]) && !same_keys(&["a", "bc"], &["a", "b"]));
        assert!(!same("vault", "vaulT") && !same("a", "ab"));
        // Every registered key is declared, so none becomes a setting.
        for key in AGENT_KEYS {
            assert!(
                config(&format!("{key} = [\"x\"]")).agents[0]
                    .settings
                    .is_empty(),
                "{key}"
            );
        }
    }

    #[test]
    fn a_granted_capability_this_build_lacks_is_refused_naming_the_rebuild() {
        // The grants of each capability, and "not granted" spelled out.
        let granted = |key: &str| format!("{key} = [\"x/*\"]");
        for (name, keys) in KNOWN.iter().filter(|(name, _)| !BUILT.contains(name)) {
            for key in *keys {
                let err = Capabilities::open(&config(&granted(key))).unwrap_err();
                assert!(err.is_config(), "{err}");
                assert!(
                    err.to_string().contains(&format!(
                        "`{name}` is granted but this build has no `{name}` capability (rebuild `toka` with `--features {name}`)"
                    )),
                    "{key}: {err}"
                );
                assert_eq!(err.agent.as_deref(), Some("a"));
                for denied in ["false", "[]"] {
                    Capabilities::open(&config(&format!("{key} = {denied}")))
                        .unwrap_or_else(|e| panic!("{key} = {denied} grants nothing: {e}"));
                }
            }
        }
    }

    #[test]
    fn sealed_stores_come_last_registered_first_with_the_unbuilt_in_place() {
        let entries = sealed(&config(""));
        let unbuilt: Vec<&str> = entries
            .iter()
            .map(|e| match e {
                SealedEntry::NotBuilt(name) => *name,
                SealedEntry::Store(_) => panic!("an empty config names no store"),
            })
            .collect();
        let expected: Vec<&str> = KNOWN
            .iter()
            .rev()
            .map(|(name, _)| *name)
            .filter(|name| !BUILT.contains(name))
            .collect();
        assert_eq!(unbuilt, expected);
    }

    #[test]
    fn a_config_loaded_without_the_capabilities_keys_is_refused() {
        let Some(key) = AGENT_KEYS.first() else {
            return;
        };
        let config = RuntimeConfig::parse_str(
            &format!("[[agents]]\nname = \"a\"\n{key} = [\"x/*\"]\n"),
            Path::new("t.toml"),
            Path::new("."),
            &[],
        )
        .unwrap();
        let err = Capabilities::open(&config).unwrap_err();
        assert!(err.to_string().contains("declared()"), "{err}");
        Capabilities::open(
            &RuntimeConfig::parse_str("", Path::new("t.toml"), Path::new("."), &[]).unwrap(),
        )
        .unwrap();
    }
}
