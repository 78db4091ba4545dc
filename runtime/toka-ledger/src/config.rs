//! What the operator configures: the `[ledger]` section ([`LedgerConfig`])
//! and each agent's `ledger_*` keys ([`Grant`]), read with the config
//! loader's located getters so a mistake is reported as `file:line:col:
//! agents[0].ledger_debit: ...`.
//!
//! ```toml
//! [ledger]
//! backend = "embedded"            # or "postgres"; default "embedded"
//! path = "state/ledger.redb"      # embedded: required once an agent holds a ledger grant
//! # url = "${DATABASE_URL}"       # postgres (build with `--features ledger-pg`): required
//!
//! [[agents]]
//! name = "billing"
//! ledger_mint = ["credits"]       # assets it may mint
//! ledger_burn = ["credits"]       # assets it may burn
//! ledger_debit = ["user/*"]       # accounts it may debit (transfer from, burn from)
//! ledger_credit = ["user/*", "revenue"]  # accounts it may credit (transfer to, mint to)
//! ledger_read = ["*"]             # accounts whose balance and history it may read
//! ```
//!
//! A pattern is a name (exact) or a name prefix ending in `*` (`user/*`,
//! `*` for all). Asset patterns match asset names; account patterns match
//! account names in every asset. What each operation needs is
//! [`Grant::allows`].
//!
//! [`open_backend`] opens the configured backend as an `Arc<dyn Ledger>`.

use std::path::PathBuf;
use std::sync::Arc;

use toka_core::{AgentConfig, ConfigError, RuntimeConfig};

use crate::{Embedded, Error, ISSUANCE, Ledger, MAX_ACCOUNT_NAME, Op, valid_account, valid_asset};

/// The top-level section the capability owns.
pub const SECTION: &str = "ledger";
/// The keys of [`SECTION`].
pub const SECTION_KEYS: &[&str] = &["backend", "path", "url"];

/// What a build without the PostgreSQL backend says when asked for it.
const NO_PG: &str = "this build has no PostgreSQL ledger backend: rebuild with \
                     `--features ledger-pg` (toka-ledger's feature `pg`)";

/// Key `backend` of `[ledger]`: where the ledger lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// `"embedded"` (the default): one redb file, key `path`.
    #[default]
    Embedded,
    /// `"postgres"`: a PostgreSQL database, key `url` (feature `pg`).
    Postgres,
}
/// The `[[agents]]` keys the capability owns.
pub const AGENT_KEYS: &[&str] = &[
    "ledger_mint",
    "ledger_burn",
    "ledger_debit",
    "ledger_credit",
    "ledger_read",
];

/// `[ledger]`.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct LedgerConfig {
    /// Key `backend`.
    pub backend: Backend,
    /// Key `path` (embedded): the ledger file, relative to the config
    /// file's directory. No default: a ledger grant without it fails at
    /// startup.
    pub path: Option<PathBuf>,
    /// Key `url` (postgres, required there): a `postgresql://` URL or a
    /// `key=value` connection string, usually `"${DATABASE_URL}"` (the
    /// loader interpolates it) so the password stays out of the file.
    pub url: Option<String>,
    /// Keys of `[ledger]` this version does not know, located, for a warning.
    pub unknown: Vec<String>,
}

impl std::fmt::Debug for LedgerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the URL itself: it may carry a password.
        f.debug_struct("LedgerConfig")
            .field("backend", &self.backend)
            .field("path", &self.path)
            .field("url", &self.url.as_ref().map(|_| "<set>"))
            .field("unknown", &self.unknown)
            .finish()
    }
}

impl LedgerConfig {
    /// `[ledger]` of `config` (declared with [`SECTION`]); empty when absent.
    /// A backend this build lacks, a key of the other backend, a postgres
    /// backend without `url` or a `url` that does not parse is an error at
    /// its key.
    pub fn from_config(config: &RuntimeConfig) -> Result<Self, ConfigError> {
        let Some(s) = config.section(SECTION) else {
            return Ok(LedgerConfig::default());
        };
        let backend = match s.get_str("backend")? {
            None | Some("embedded") => Backend::Embedded,
            Some("postgres") if cfg!(feature = "pg") => Backend::Postgres,
            Some("postgres") => return Err(s.invalid("backend", NO_PG)),
            Some(other) => {
                return Err(s.invalid(
                    "backend",
                    format!(
                        "unknown backend `{}`: use \"embedded\" or \"postgres\"",
                        toka_core::text::bounded(other, 40)
                    ),
                ));
            }
        };
        let path = s.get_path("path")?;
        let url = s.get_str("url")?.map(str::to_owned);
        match backend {
            Backend::Embedded if url.is_some() => {
                return Err(s.invalid(
                    "url",
                    "`url` is for backend = \"postgres\"; the embedded backend uses `path`",
                ));
            }
            Backend::Postgres if path.is_some() => {
                return Err(s.invalid(
                    "path",
                    "`path` is for the embedded backend; backend = \"postgres\" uses `url`",
                ));
            }
            Backend::Postgres => match &url {
                None => {
                    return Err(s.invalid(
                        "url",
                        "backend = \"postgres\" needs `url` (e.g. url = \"${DATABASE_URL}\")",
                    ));
                }
                Some(url) => check_url(url).map_err(|m| s.invalid("url", m))?,
            },
            Backend::Embedded => {}
        }
        Ok(LedgerConfig {
            backend,
            path,
            url,
            unknown: s.unknown_keys(SECTION_KEYS),
        })
    }
}

/// Whether `url` parses as a connection string (the message never repeats
/// it: it may hold a password).
#[cfg(feature = "pg")]
fn check_url(url: &str) -> Result<(), String> {
    url.parse::<postgres::Config>()
        .map(|_| ())
        .map_err(|e| format!("not a PostgreSQL connection URL or string: {e}"))
}

#[cfg(not(feature = "pg"))]
fn check_url(_: &str) -> Result<(), String> {
    Ok(())
}

/// Opens the backend `config` names: the embedded file at `path`, or (with
/// feature `pg`) the database at `url`, migrated on the way. Absent
/// `[ledger]` keys mean the embedded backend, which then needs `path`.
pub fn open_backend(config: &LedgerConfig) -> crate::Result<Arc<dyn Ledger>> {
    match config.backend {
        Backend::Embedded => {
            let path = config.path.as_deref().ok_or_else(|| {
                Error::Config("[ledger] path is not set (the embedded ledger file)".into())
            })?;
            Ok(Arc::new(Embedded::open(path)?))
        }
        Backend::Postgres => open_postgres(config),
    }
}

#[cfg(feature = "pg")]
fn open_postgres(config: &LedgerConfig) -> crate::Result<Arc<dyn Ledger>> {
    let url = config
        .url
        .as_deref()
        .ok_or_else(|| Error::Config("[ledger] url is not set (backend = \"postgres\")".into()))?;
    Ok(Arc::new(crate::Postgres::connect(url)?))
}

#[cfg(not(feature = "pg"))]
fn open_postgres(_: &LedgerConfig) -> crate::Result<Arc<dyn Ledger>> {
    Err(Error::Config(NO_PG.into()))
}

/// A name, or a prefix ending in `*`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Pattern {
    /// Exactly this name.
    Exact(String),
    /// Every name starting with this (`*` alone: every name).
    Prefix(String),
}

impl Pattern {
    /// True if `name` matches. The issuance account matches no pattern:
    /// only mint and burn grants reach it.
    pub fn matches(&self, name: &str) -> bool {
        name != ISSUANCE
            && match self {
                Pattern::Exact(n) => n == name,
                Pattern::Prefix(p) => name.starts_with(p.as_str()),
            }
    }

    /// Parses `text`, checking its name part with `valid`.
    fn parse(text: &str, valid: fn(&str) -> crate::Result<()>) -> Result<Pattern, String> {
        let bad = || {
            format!(
                "`{}` is not a name or a name prefix ending in `*`",
                toka_core::text::bounded(text, 80)
            )
        };
        match text.strip_suffix('*') {
            Some("") => Ok(Pattern::Prefix(String::new())),
            Some(prefix) if prefix.len() < MAX_ACCOUNT_NAME && !prefix.contains('*') => {
                valid(prefix).map_err(|_| bad())?;
                Ok(Pattern::Prefix(prefix.to_owned()))
            }
            Some(_) => Err(bad()),
            None => {
                valid(text).map_err(|_| bad())?;
                Ok(Pattern::Exact(text.to_owned()))
            }
        }
    }
}

/// What an agent's `ledger_*` keys grant it. Everything is denied unless a
/// pattern here allows it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Grant {
    /// Key `ledger_mint`: assets it may mint.
    pub mint: Vec<Pattern>,
    /// Key `ledger_burn`: assets it may burn.
    pub burn: Vec<Pattern>,
    /// Key `ledger_debit`: accounts it may take from.
    pub debit: Vec<Pattern>,
    /// Key `ledger_credit`: accounts it may pay into.
    pub credit: Vec<Pattern>,
    /// Key `ledger_read`: accounts it may read.
    pub read: Vec<Pattern>,
}

fn any(patterns: &[Pattern], name: &str) -> bool {
    patterns.iter().any(|p| p.matches(name))
}

impl Grant {
    /// The grant in `agent`'s keys (declared with [`AGENT_KEYS`]), or `None`
    /// when it has none of them.
    pub fn from_agent(agent: &AgentConfig) -> Result<Option<Self>, ConfigError> {
        let keys = agent.keys();
        let read = |key: &str, valid: fn(&str) -> crate::Result<()>| {
            let Some(texts) = keys.get_strings(key)? else {
                return Ok::<_, ConfigError>(Vec::new());
            };
            let mut patterns = texts
                .iter()
                .map(|t| Pattern::parse(t, valid).map_err(|m| keys.invalid(key, m)))
                .collect::<Result<Vec<_>, _>>()?;
            patterns.sort();
            patterns.dedup();
            Ok(patterns)
        };
        let grant = Grant {
            mint: read("ledger_mint", valid_asset)?,
            burn: read("ledger_burn", valid_asset)?,
            debit: read("ledger_debit", valid_account)?,
            credit: read("ledger_credit", valid_account)?,
            read: read("ledger_read", valid_account)?,
        };
        Ok((grant != Grant::default()).then_some(grant))
    }

    /// Whether the grant allows `op`:
    /// - `mint` needs the asset in `ledger_mint` and the account in
    ///   `ledger_credit`;
    /// - `burn` needs the asset in `ledger_burn` and the account in
    ///   `ledger_debit`;
    /// - `transfer` needs `from` in `ledger_debit` and `to` in
    ///   `ledger_credit`;
    /// - `open` needs the account in `ledger_credit`, and, with an
    ///   overdraft (which lets it be debited below zero), in `ledger_debit`
    ///   too.
    pub fn allows(&self, op: &Op) -> bool {
        match op {
            Op::Open {
                account, overdraft, ..
            } => any(&self.credit, account) && (*overdraft == 0 || any(&self.debit, account)),
            Op::Mint { asset, to, .. } => any(&self.mint, asset) && any(&self.credit, to),
            Op::Burn { asset, from, .. } => any(&self.burn, asset) && any(&self.debit, from),
            Op::Transfer { from, to, .. } => any(&self.debit, from) && any(&self.credit, to),
        }
    }

    /// Whether the grant lets the agent read `account` of `asset`: its
    /// `ledger_read` patterns, or for the issuance account, a mint or burn
    /// grant of the asset.
    pub fn may_read(&self, asset: &str, account: &str) -> bool {
        if account == ISSUANCE {
            return any(&self.mint, asset) || any(&self.burn, asset);
        }
        any(&self.read, account)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use toka_core::config::Declared;

    use super::*;

    fn parse(text: &str) -> RuntimeConfig {
        parse_env(text, &|_| None)
    }

    fn parse_env(text: &str, env: &dyn Fn(&str) -> Option<String>) -> RuntimeConfig {
        RuntimeConfig::parse_declared(
            text,
            Path::new("x.toml"),
            Path::new("/etc/toka"),
            &Declared {
                sections: &[SECTION],
                agent_keys: AGENT_KEYS,
            },
            env,
        )
        .unwrap()
    }

    fn ledger_err(text: &str) -> String {
        LedgerConfig::from_config(&parse(text))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn backends_parse_with_located_errors() {
        let c = LedgerConfig::from_config(&parse("[ledger]\npath = \"l.redb\"\n")).unwrap();
        assert_eq!(c.backend, Backend::Embedded);
        let c = LedgerConfig::from_config(&parse(
            "[ledger]\nbackend = \"embedded\"\npath = \"l.redb\"\n",
        ))
        .unwrap();
        assert_eq!(c.backend, Backend::Embedded);

        let err = ledger_err("[ledger]\nbackend = \"mysql\"\n");
        assert!(
            err.starts_with("x.toml:2:11: ledger.backend: unknown backend `mysql`"),
            "{err}"
        );
        let err = ledger_err("[ledger]\nbackend = 1\n");
        assert!(err.starts_with("x.toml:2:11: ledger.backend: "), "{err}");
        let err = ledger_err("[ledger]\npath = \"l.redb\"\nurl = \"postgres://x\"\n");
        assert!(err.starts_with("x.toml:3:7: ledger.url: "), "{err}");

        // With `pg` (the tests always have it, see Cargo.toml): postgres
        // needs a url that parses, and `${VAR}` is the loader's.
        let c = LedgerConfig::from_config(&parse_env(
            "[ledger]\nbackend = \"postgres\"\nurl = \"${DATABASE_URL}\"\n",
            &|v| (v == "DATABASE_URL").then(|| "postgresql://u:secret@127.0.0.1/db".into()),
        ))
        .unwrap();
        assert_eq!(c.backend, Backend::Postgres);
        assert_eq!(c.url.as_deref(), Some("postgresql://u:secret@127.0.0.1/db"));
        assert!(!format!("{c:?}").contains("secret"));
        let err = ledger_err("[ledger]\nbackend = \"postgres\"\n");
        assert!(err.starts_with("x.toml:1:1: ledger.url: "), "{err}");
        let err = ledger_err(
            "[ledger]\nbackend = \"postgres\"\nurl = \"postgresql://u:secret@h:notaport/\"\n",
        );
        assert!(err.starts_with("x.toml:3:7: ledger.url: "), "{err}");
        assert!(!err.contains("secret"), "{err}");
        let err = ledger_err("[ledger]\nbackend = \"postgres\"\nurl = \"host=h\"\npath = \"l\"\n");
        assert!(err.starts_with("x.toml:4:8: ledger.path: "), "{err}");
    }

    #[test]
    fn open_backend_needs_the_backend_key() {
        let Err(err) = open_backend(&LedgerConfig::default()) else {
            panic!("an embedded backend without a path opened");
        };
        assert!(matches!(err, Error::Config(_)), "{err}");
        let tmp = tempfile::tempdir().unwrap();
        let l = open_backend(&LedgerConfig {
            path: Some(tmp.path().join("l.redb")),
            ..LedgerConfig::default()
        })
        .unwrap();
        l.mint("k", "usd", "a", 1).unwrap();
        assert!(l.check().unwrap().is_empty());
    }

    fn transfer(from: &str, to: &str) -> Op {
        Op::Transfer {
            asset: "usd".into(),
            from: from.into(),
            to: to.into(),
            amount: 1,
        }
    }

    #[test]
    fn grants_parse_and_decide() {
        let cfg = parse("[[agents]]\nname = \"a\"\n");
        assert_eq!(
            LedgerConfig::from_config(&cfg).unwrap(),
            LedgerConfig::default()
        );
        assert_eq!(Grant::from_agent(&cfg.agents[0]).unwrap(), None);

        let cfg = parse(
            r#"
[ledger]
path = "ledger.redb"
typo = 1

[[agents]]
name = "a"
ledger_mint = ["credits"]
ledger_debit = ["user/*", "user/*"]
ledger_credit = ["user/*", "revenue"]
ledger_read = ["*"]
"#,
        );
        let c = LedgerConfig::from_config(&cfg).unwrap();
        assert_eq!(c.path, Some("/etc/toka/ledger.redb".into()));
        assert_eq!(c.unknown, ["ledger.typo (x.toml:4:1)"]);
        let g = Grant::from_agent(&cfg.agents[0]).unwrap().unwrap();
        assert_eq!(g.debit, [Pattern::Prefix("user/".into())]);
        assert!(cfg.agents[0].settings.is_empty());

        assert!(g.allows(&transfer("user/1", "revenue")));
        assert!(!g.allows(&transfer("revenue", "user/1")));
        assert!(!g.allows(&transfer("users", "user/1")));
        let mint = |asset: &str, to: &str| Op::Mint {
            asset: asset.into(),
            to: to.into(),
            amount: 1,
        };
        assert!(g.allows(&mint("credits", "user/1")));
        assert!(!g.allows(&mint("usd", "user/1")));
        assert!(!g.allows(&Op::Burn {
            asset: "credits".into(),
            from: "user/1".into(),
            amount: 1
        }));
        let open = |account: &str, overdraft| Op::Open {
            asset: "usd".into(),
            account: account.into(),
            overdraft,
        };
        assert!(g.allows(&open("revenue", 0)));
        assert!(!g.allows(&open("revenue", 5)));
        assert!(g.allows(&open("user/2", 5)));
        assert!(g.may_read("usd", "anything"));
        // `*` does not reach the issuance account; a mint grant does.
        assert!(!g.may_read("usd", ISSUANCE));
        assert!(g.may_read("credits", ISSUANCE));
    }

    #[test]
    fn mistakes_are_located() {
        for bad in ["\"us er\"", "\"a*b\"", "\"**\"", "\"\"", "\"#issuance\""] {
            let cfg = parse(&format!(
                "[[agents]]\nname = \"a\"\nledger_debit = [\"ok\", {bad}]\n"
            ));
            let err = Grant::from_agent(&cfg.agents[0]).unwrap_err().to_string();
            assert!(
                err.starts_with("x.toml:3:16: agents[0].ledger_debit: "),
                "{bad}: {err}"
            );
        }
        let cfg = parse("[[agents]]\nname = \"a\"\nledger_mint = [\"a/b\"]\n");
        assert!(Grant::from_agent(&cfg.agents[0]).is_err());
        let cfg = parse("[[agents]]\nname = \"a\"\nledger_read = \"*\"\n");
        assert!(Grant::from_agent(&cfg.agents[0]).is_err());
    }
}
