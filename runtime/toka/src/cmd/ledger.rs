//! `toka ledger`: the operator's view of the ledger agents use through
//! `toka:runtime/ledger`: `accounts`, `balance`, `history`, `check` read
//! it; `open`, `mint`, `burn`, `transfer` write it.
//!
//! Every write goes through the same checks as an agent's (names, amounts,
//! overdraft limits, what is in circulation, idempotency), under a key:
//! `--key K` (retrying a command with the same key is safe: it answers the
//! original entry), or a fresh one, printed, when none is given. The
//! operator's keys are kept apart from every agent's. `--as AGENT` checks
//! the command against that agent's `ledger_*` grant as well and uses its
//! keys, to see what the agent sees or act exactly as it would.
//!
//! The ledger is the one `[ledger]` names in the configuration `toka run`
//! takes: the embedded file (held by one process at a time: stop `toka
//! run` first) or the PostgreSQL database (shared: `toka run` may go on).

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context as _, anyhow};
use clap::Subcommand;
use toka_core::RuntimeConfig;
use toka_core::config::Declared;
use toka_ledger::config::{AGENT_KEYS, Backend, Grant, LedgerConfig, SECTION, open_backend};
use toka_ledger::{Entry, Error, ErrorKind, Guarded, Ledger, MAX_PAGE};

use super::ConfigArg;
use crate::exit::bad;

/// The prefix of the operator's idempotency keys: an agent's always start
/// with a digit (`<len>:<agent>/`), so the two never meet.
const OPERATOR: &str = "operator:";

#[derive(Subcommand, Debug)]
pub(crate) enum LedgerCmd {
    /// List an asset's accounts and balances.
    Accounts {
        /// The asset.
        asset: String,
        #[command(flatten)]
        who: AsArg,
        #[command(flatten)]
        cfg: ConfigArg,
    },
    /// One account's balance (now, or right after entry --at).
    Balance {
        /// The asset.
        asset: String,
        /// The account.
        account: String,
        /// The balance right after this entry.
        #[arg(long, value_name = "ENTRY")]
        at: Option<u64>,
        #[command(flatten)]
        who: AsArg,
        #[command(flatten)]
        cfg: ConfigArg,
    },
    /// One account's entries, oldest first.
    History {
        /// The asset.
        asset: String,
        /// The account.
        account: String,
        /// Only entries after this one.
        #[arg(long, value_name = "ENTRY")]
        after: Option<u64>,
        /// At most this many rows.
        #[arg(long, value_name = "N", default_value_t = 100)]
        limit: usize,
        #[command(flatten)]
        who: AsArg,
        #[command(flatten)]
        cfg: ConfigArg,
    },
    /// Create an account, with an overdraft limit.
    Open {
        /// The asset.
        asset: String,
        /// The account.
        account: String,
        /// How far below zero its balance may go (minor units).
        #[arg(long, value_name = "N", default_value_t = 0)]
        overdraft: u128,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Issue AMOUNT of ASSET into account TO.
    Mint {
        /// The asset.
        asset: String,
        /// The account credited.
        to: String,
        /// Minor units.
        amount: u128,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Retire AMOUNT of ASSET from account FROM.
    Burn {
        /// The asset.
        asset: String,
        /// The account debited.
        from: String,
        /// Minor units.
        amount: u128,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Move AMOUNT of ASSET from FROM to TO.
    Transfer {
        /// The asset.
        asset: String,
        /// The account debited.
        from: String,
        /// The account credited.
        to: String,
        /// Minor units.
        amount: u128,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Re-check every invariant of the whole ledger (postings sum to zero,
    /// balances match their history, no balance past its overdraft).
    Check {
        #[command(flatten)]
        cfg: ConfigArg,
    },
}

/// `--as AGENT`.
#[derive(clap::Args, Debug)]
pub(crate) struct AsArg {
    /// Act as this agent: its `ledger_*` grant decides too, and its keys are used.
    #[arg(long = "as", value_name = "AGENT")]
    agent: Option<String>,
}

/// What every write takes.
#[derive(clap::Args, Debug)]
pub(crate) struct WriteArgs {
    /// The idempotency key (default: a fresh one, printed).
    #[arg(long, value_name = "K")]
    key: Option<String>,
    #[command(flatten)]
    who: AsArg,
    #[command(flatten)]
    cfg: ConfigArg,
}

pub(crate) fn run(cmd: LedgerCmd) -> anyhow::Result<()> {
    match cmd {
        LedgerCmd::Accounts { asset, who, cfg } => {
            let l = open(&cfg.config, who.agent.as_deref(), false)?;
            let mut after: Option<String> = None;
            println!("{:<32} {:>24} {:>24}", "ACCOUNT", "BALANCE", "OVERDRAFT");
            loop {
                let page = l
                    .accounts(&asset, after.as_deref(), MAX_PAGE)
                    .map_err(fail)?;
                for a in &page.rows {
                    println!("{:<32} {:>24} {:>24}", a.name, a.balance, a.overdraft);
                }
                match page.next {
                    Some(n) => after = Some(n),
                    None => return Ok(()),
                }
            }
        }
        LedgerCmd::Balance {
            asset,
            account,
            at,
            who,
            cfg,
        } => {
            let l = open(&cfg.config, who.agent.as_deref(), false)?;
            let balance = match at {
                Some(at) => l.balance_at(&asset, &account, at),
                None => l.account(&asset, &account).map(|a| a.balance),
            }
            .map_err(fail)?;
            println!("{balance}");
            Ok(())
        }
        LedgerCmd::History {
            asset,
            account,
            after,
            limit,
            who,
            cfg,
        } => {
            let l = open(&cfg.config, who.agent.as_deref(), false)?;
            let page = l
                .history(&asset, &account, after, limit.clamp(1, MAX_PAGE))
                .map_err(fail)?;
            println!("{:>10} {:>24} {:>24}", "ENTRY", "DELTA", "BALANCE");
            for r in &page.rows {
                println!("{:>10} {:>+24} {:>24}", r.entry, r.delta, r.balance);
            }
            if let Some(next) = page.next {
                eprintln!("more: --after {next}");
            }
            Ok(())
        }
        LedgerCmd::Open {
            asset,
            account,
            overdraft,
            write,
        } => apply(write, |l, k| l.open(k, &asset, &account, overdraft)),
        LedgerCmd::Mint {
            asset,
            to,
            amount,
            write,
        } => apply(write, |l, k| l.mint(k, &asset, &to, amount)),
        LedgerCmd::Burn {
            asset,
            from,
            amount,
            write,
        } => apply(write, |l, k| l.burn(k, &asset, &from, amount)),
        LedgerCmd::Transfer {
            asset,
            from,
            to,
            amount,
            write,
        } => apply(write, |l, k| l.transfer(k, &asset, &from, &to, amount)),
        LedgerCmd::Check { cfg } => {
            let (_, ledger) = backend(&cfg.config, false)?;
            let problems = ledger.check().map_err(fail)?;
            if problems.is_empty() {
                println!("ok: every invariant holds");
                return Ok(());
            }
            for p in &problems {
                eprintln!("{p}");
            }
            Err(anyhow!("the ledger breaks {} invariant(s)", problems.len()))
        }
    }
}

/// One write, under the given key or a fresh one.
fn apply(
    write: WriteArgs,
    op: impl FnOnce(&dyn Ledger, &str) -> toka_ledger::Result<Entry>,
) -> anyhow::Result<()> {
    let l = open(&write.cfg.config, write.who.agent.as_deref(), true)?;
    let (key, fresh) = match write.key {
        Some(k) => (k, false),
        None => (fresh_key()?, true),
    };
    // The operator's keys are scoped like an agent's are; `--as` uses the
    // agent's own (its `Guarded` view scopes them).
    let scoped = match write.who.agent {
        Some(_) => key.clone(),
        None => format!("{OPERATOR}{key}"),
    };
    let entry = op(&*l, &scoped).map_err(fail)?;
    if fresh {
        eprintln!("key: {key} (pass --key {key} to retry safely)");
    }
    println!("entry {} ({})", entry.id, entry.op.asset());
    for p in &entry.postings {
        println!("  {:<32} {:>+24} -> {}", p.account, p.delta, p.balance);
    }
    Ok(())
}

fn fresh_key() -> anyhow::Result<String> {
    let mut bytes = [0u8; 12];
    getrandom::fill(&mut bytes).map_err(|e| anyhow!("random key: {e}"))?;
    Ok(format!(
        "cli-{}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    ))
}

/// The configuration with the keys the `ledger` capability owns.
fn load(config: &Path) -> anyhow::Result<RuntimeConfig> {
    let declared = Declared {
        sections: &[SECTION],
        agent_keys: AGENT_KEYS,
    };
    Ok(RuntimeConfig::load_declared(config, &declared)?)
}

/// The ledger `config` names; only a write may create an embedded one.
fn backend(config: &Path, create: bool) -> anyhow::Result<(RuntimeConfig, Arc<dyn Ledger>)> {
    let cfg = load(config)?;
    let lc = LedgerConfig::from_config(&cfg)?;
    if lc.backend == Backend::Embedded {
        let path = lc.path.as_deref().ok_or_else(|| {
            bad(anyhow!(
                "no ledger configured: set [ledger] path in {}",
                config.display()
            ))
        })?;
        if !create && !path.exists() {
            return Err(bad(anyhow!(
                "no ledger at {} yet (a write such as `toka ledger mint` creates it)",
                path.display()
            )));
        }
    }
    let ledger = open_backend(&lc)
        .map_err(fail)
        .context("opening the ledger")?;
    Ok((cfg, ledger))
}

/// The ledger as the operator, or `--as` an agent, sees it.
fn open(config: &Path, agent: Option<&str>, create: bool) -> anyhow::Result<Box<dyn Ledger>> {
    let (cfg, ledger) = backend(config, create)?;
    let Some(name) = agent else {
        return Ok(Box::new(ledger));
    };
    let agent = cfg
        .agents
        .iter()
        .find(|a| a.name == name)
        .ok_or_else(|| bad(anyhow!("no agent `{name}` in {}", config.display())))?;
    // An agent with no grant is denied everything, as it would be.
    let grant = Grant::from_agent(agent)?.unwrap_or_default();
    Ok(Box::new(Guarded::new(ledger, name, grant)))
}

/// The operator's mistakes (a bad name, too little money, a key reused, an
/// account that does not exist or is not granted, a file in use) exit 2.
fn fail(e: Error) -> anyhow::Error {
    match e.kind() {
        ErrorKind::Internal if !matches!(e, Error::InUse { .. } | Error::Config(_)) => e.into(),
        _ => bad(e),
    }
}
