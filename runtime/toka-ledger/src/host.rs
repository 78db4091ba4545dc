//! The host side of the ledger (feature `host`): the `toka:runtime/ledger`
//! interface, each agent's calls checked by its [`Guarded`] view of the one
//! ledger `[ledger]` names.
//!
//! # Grants
//! `ledger_mint` / `ledger_burn` (assets), `ledger_debit` / `ledger_credit`
//! / `ledger_read` (accounts), as [`Grant`] documents. An agent with none
//! of them still loads when it imports the interface, and every call
//! answers `access-denied`; so does any call its grant does not cover,
//! whether or not the account exists.
//!
//! # Answers
//! | failure | `ledger-error` |
//! |---|---|
//! | not granted (agent or account), whether it exists or not | `access-denied` |
//! | a debit past the overdraft, a burn past what is issued | `insufficient-funds` |
//! | a key reused for another operation, opening an existing account | `conflict` |
//! | a granted account that does not exist | `unknown-account` |
//! | a bad name, amount, key or page size | `invalid("...")` |
//! | the backend failed (logged for the operator, never shown) | `other("...")` |
//! | the guest call's deadline passed while the call waited | a `deadline` fault |
//!
//! # Waiting
//! Every call runs on tokio's blocking pool and the guest waits for it
//! through [`wait::bounded`]: a write waits for its commit (an fsync on the
//! embedded backend, a round trip to PostgreSQL), so it is bounded by the
//! guest call's `timeout_ms` like every host call that waits, and the
//! worker's stand-in keeps the other agents running meanwhile. A write cut
//! by the deadline was not acknowledged and may still commit; its
//! idempotency key makes the retry safe. Reads of the embedded backend do
//! not wait (a redb read never blocks on a writer) and run in place.
//!
//! # Bounds
//! Names and keys as [`crate::valid_asset`], [`crate::valid_account`] and
//! [`crate::guard::MAX_AGENT_KEY`] (256 bytes) say; a page holds at most
//! [`MAX_PAGE`] (1000) rows; an entry lists at most two postings.

use std::sync::Arc;

use toka_capability::bindings::ledger as wit;
use toka_capability::{CapError, Capability, Has, OpenCx, View, wait};
use toka_core::{AgentConfig, RuntimeConfig};
use wasmtime::anyhow;
use wasmtime::component::{HasData, Linker};

use crate::config::{self, Grant, LedgerConfig};
use crate::{Account, Entry, Error, ErrorKind, Guarded, HistoryRow, Ledger as _, MAX_PAGE, Page};

/// A ledger backend shared by every agent.
pub type Shared = Arc<dyn crate::Ledger>;

/// The `ledger` capability: the ledger `[ledger]` names.
pub struct Ledger {
    ledger: Shared,
    /// Whether its reads leave the process (and so wait like writes).
    remote: bool,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("remote", &self.remote)
            .finish_non_exhaustive()
    }
}

impl Ledger {
    /// The backend (for an embedder, or the bench).
    pub fn backend(&self) -> &Shared {
        &self.ledger
    }
}

impl Capability for Ledger {
    const NAME: &'static str = "ledger";
    const AGENT_KEYS: &'static [&'static str] = config::AGENT_KEYS;
    const INTERFACES: &'static [(&'static str, &'static str)] = &[(
        "toka:runtime/ledger",
        "toka ledger: mint, burn and transfer within `ledger_*` grants, under idempotency keys",
    )];
    const SECTIONS: &'static [&'static str] = &[config::SECTION];
    type Grant = Grant;
    type AgentState = LedgerCtx;

    fn grant(agent: &AgentConfig) -> Result<Option<Grant>, CapError> {
        // The loader's error already names the file, line and key.
        Grant::from_agent(agent).map_err(|e| CapError::config(agent, e))
    }

    fn open(
        config: &RuntimeConfig,
        _granted: &[(&AgentConfig, &Grant)],
        _cx: &mut OpenCx,
    ) -> Result<Self, CapError> {
        let cfg = LedgerConfig::from_config(config).map_err(|e| CapError::shared(e.to_string()))?;
        for key in &cfg.unknown {
            tracing::warn!(key = %key, "unknown key in [ledger], ignored");
        }
        let (ledger, remote) = open_backend(&cfg)?;
        Ok(Ledger { ledger, remote })
    }

    fn for_agent(&self, agent: &AgentConfig, grant: Grant) -> Result<LedgerCtx, CapError> {
        Ok(LedgerCtx {
            agent: agent.name.as_str().into(),
            ledger: Arc::new(Guarded::new(Arc::clone(&self.ledger), &agent.name, grant)),
            remote: self.remote,
        })
    }

    fn link<T: Has<Self>>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
        wit::add_to_linker::<T, LedgerData>(linker, |t| LedgerHost(t.view()))
    }

    fn describe(grant: &Grant) -> String {
        let list = |what: &str, p: &[config::Pattern]| {
            (!p.is_empty()).then(|| {
                let names: Vec<String> = p.iter().map(pattern).collect();
                format!("{what} {}", names.join(", "))
            })
        };
        let parts: Vec<String> = [
            list("mint", &grant.mint),
            list("burn", &grant.burn),
            list("debit", &grant.debit),
            list("credit", &grant.credit),
            list("read", &grant.read),
        ]
        .into_iter()
        .flatten()
        .collect();
        format!("ledger: {}", parts.join("; "))
    }
}

/// A pattern as the operator wrote it.
fn pattern(p: &config::Pattern) -> String {
    match p {
        config::Pattern::Exact(n) => n.clone(),
        config::Pattern::Prefix(p) => format!("{p}*"),
    }
}

/// The backend `cfg` configures, and whether its reads are remote.
fn open_backend(cfg: &LedgerConfig) -> Result<(Shared, bool), CapError> {
    let remote = cfg.backend == config::Backend::Postgres;
    if !remote && cfg.path.is_none() {
        return Err(CapError::shared(
            "an agent holds a `ledger_*` grant but no ledger is configured: set `[ledger] path`",
        ));
    }
    // Configured; failing to open it is the ledger's (I/O, held by another
    // process, damaged, the database unreachable): exit 1, not the
    // operator's 2, unless the configuration itself is what is wrong.
    let ledger = config::open_backend(cfg).map_err(|e| match e {
        Error::Config(m) => CapError::shared(format!("[ledger]: {m}")),
        e => CapError::failure(format!("ledger: {e}")),
    })?;
    Ok((ledger, remote))
}

/// One agent's view of the ledger.
pub struct LedgerCtx {
    agent: Arc<str>,
    ledger: Arc<Guarded<Shared>>,
    remote: bool,
}

impl std::fmt::Debug for LedgerCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LedgerCtx")
            .field("agent", &self.agent)
            .field("grant", self.ledger.grant())
            .finish_non_exhaustive()
    }
}

/// The ledger interface as an agent calls it: its [`View`].
#[derive(Debug)]
pub struct LedgerHost<'a>(pub View<'a, Ledger>);

/// The [`HasData`] marker linking [`LedgerHost`].
#[derive(Debug)]
pub struct LedgerData;

impl HasData for LedgerData {
    type Data<'a> = LedgerHost<'a>;
}

/// The host calls, as a deadline fault names them.
mod calls {
    pub(super) const OPEN: &str = "toka:runtime/ledger.open";
    pub(super) const MINT: &str = "toka:runtime/ledger.mint";
    pub(super) const BURN: &str = "toka:runtime/ledger.burn";
    pub(super) const TRANSFER: &str = "toka:runtime/ledger.transfer";
    pub(super) const LOOKUP: &str = "toka:runtime/ledger.lookup";
    pub(super) const GET_ACCOUNT: &str = "toka:runtime/ledger.get-account";
    pub(super) const LIST_ACCOUNTS: &str = "toka:runtime/ledger.list-accounts";
    pub(super) const HISTORY: &str = "toka:runtime/ledger.history";
    pub(super) const BALANCE_AT: &str = "toka:runtime/ledger.balance-at";
    pub(super) const ISSUED: &str = "toka:runtime/ledger.issued";
}

type Answer<T> = anyhow::Result<Result<T, wit::LedgerError>>;

impl LedgerHost<'_> {
    /// Run `op` on the agent's view: in place for a local read, otherwise
    /// on the blocking pool within the guest call's deadline.
    fn call<T: Send + 'static>(
        &self,
        name: &'static str,
        write: bool,
        op: impl FnOnce(&Guarded<Shared>) -> crate::Result<T> + Send + 'static,
    ) -> Answer<T> {
        let Some(cx) = self.0.state else {
            tracing::warn!(agent = %self.0.agent, call = name, "ledger access denied: agent holds no `ledger_*` grant");
            return Ok(Err(wit::LedgerError::AccessDenied));
        };
        let result = if write || cx.remote {
            let ledger = Arc::clone(&cx.ledger);
            wait::bounded(self.0.wait, name, async move {
                tokio::task::spawn_blocking(move || op(&ledger)).await
            })?
            .map_err(|e| anyhow::Error::msg(format!("{name}: the ledger call panicked: {e}")))?
        } else {
            op(&cx.ledger)
        };
        Ok(result.map_err(|e| cx.fail(name, e)))
    }
}

impl LedgerCtx {
    fn fail(&self, call: &str, e: Error) -> wit::LedgerError {
        match e.kind() {
            ErrorKind::AccessDenied => {
                tracing::warn!(agent = %self.agent, call, "ledger access denied: not granted");
                wit::LedgerError::AccessDenied
            }
            ErrorKind::InsufficientFunds => wit::LedgerError::InsufficientFunds,
            ErrorKind::Conflict => wit::LedgerError::Conflict,
            ErrorKind::UnknownAccount => wit::LedgerError::UnknownAccount,
            ErrorKind::Invalid => wit::LedgerError::Invalid(match e {
                Error::Invalid(m) => m,
                e => e.to_string(),
            }),
            ErrorKind::Internal => {
                tracing::error!(agent = %self.agent, call, error = %e, "ledger failed");
                wit::LedgerError::Other("the ledger failed (the host's log says why)".into())
            }
        }
    }
}

/// `amount` as a `u128`.
pub fn from_amount(a: wit::Amount) -> u128 {
    (u128::from(a.hi) << 64) | u128::from(a.lo)
}

/// `v` as an `amount`.
pub fn to_amount(v: u128) -> wit::Amount {
    wit::Amount {
        hi: (v >> 64) as u64,
        lo: v as u64,
    }
}

/// `v` as a `balance` (two's complement halves).
pub fn to_balance(v: i128) -> wit::Balance {
    wit::Balance {
        hi: (v >> 64) as i64,
        lo: v as u64,
    }
}

/// `b` as an `i128`.
pub fn from_balance(b: wit::Balance) -> i128 {
    (i128::from(b.hi) << 64) | i128::from(b.lo)
}

fn entry(e: Entry) -> wit::Entry {
    wit::Entry {
        id: e.id,
        asset: e.op.asset().to_owned(),
        key: e.key,
        postings: e
            .postings
            .into_iter()
            .map(|p| wit::Posting {
                account: p.account,
                delta: to_balance(p.delta),
                balance_after: to_balance(p.balance),
            })
            .collect(),
    }
}

fn account(a: Account) -> wit::Account {
    wit::Account {
        name: a.name,
        balance: to_balance(a.balance),
        overdraft: to_amount(a.overdraft),
    }
}

fn history_row(r: HistoryRow) -> wit::HistoryRow {
    wit::HistoryRow {
        entry: r.entry,
        delta: to_balance(r.delta),
        balance_after: to_balance(r.balance),
    }
}

/// A guest's page size: 0 asks for the most, [`MAX_PAGE`]; past it is
/// capped, never an error.
fn limit(n: u32) -> usize {
    match n {
        0 => MAX_PAGE,
        n => (n as usize).min(MAX_PAGE),
    }
}

impl wit::Host for LedgerHost<'_> {
    fn open(
        &mut self,
        key: String,
        asset: String,
        account: String,
        overdraft: wit::Amount,
    ) -> Answer<wit::Entry> {
        let overdraft = from_amount(overdraft);
        self.call(calls::OPEN, true, move |l| {
            l.open(&key, &asset, &account, overdraft).map(entry)
        })
    }

    fn mint(
        &mut self,
        key: String,
        asset: String,
        to: String,
        amount: wit::Amount,
    ) -> Answer<wit::Entry> {
        let amount = from_amount(amount);
        self.call(calls::MINT, true, move |l| {
            l.mint(&key, &asset, &to, amount).map(entry)
        })
    }

    fn burn(
        &mut self,
        key: String,
        asset: String,
        from: String,
        amount: wit::Amount,
    ) -> Answer<wit::Entry> {
        let amount = from_amount(amount);
        self.call(calls::BURN, true, move |l| {
            l.burn(&key, &asset, &from, amount).map(entry)
        })
    }

    fn transfer(
        &mut self,
        key: String,
        asset: String,
        from: String,
        to: String,
        amount: wit::Amount,
    ) -> Answer<wit::Entry> {
        let amount = from_amount(amount);
        self.call(calls::TRANSFER, true, move |l| {
            l.transfer(&key, &asset, &from, &to, amount).map(entry)
        })
    }

    fn lookup(&mut self, key: String) -> Answer<Option<wit::Entry>> {
        self.call(calls::LOOKUP, false, move |l| {
            l.lookup(&key).map(|e| e.map(entry))
        })
    }

    fn get_account(&mut self, asset: String, name: String) -> Answer<wit::Account> {
        self.call(calls::GET_ACCOUNT, false, move |l| {
            l.account(&asset, &name).map(account)
        })
    }

    fn list_accounts(
        &mut self,
        asset: String,
        after: Option<String>,
        n: u32,
    ) -> Answer<wit::AccountPage> {
        self.call(calls::LIST_ACCOUNTS, false, move |l| {
            let Page { rows, next } = l.accounts(&asset, after.as_deref(), limit(n))?;
            Ok(wit::AccountPage {
                rows: rows.into_iter().map(account).collect(),
                next,
            })
        })
    }

    fn history(
        &mut self,
        asset: String,
        name: String,
        after: Option<u64>,
        n: u32,
    ) -> Answer<wit::HistoryPage> {
        self.call(calls::HISTORY, false, move |l| {
            let Page { rows, next } = l.history(&asset, &name, after, limit(n))?;
            Ok(wit::HistoryPage {
                rows: rows.into_iter().map(history_row).collect(),
                next,
            })
        })
    }

    fn balance_at(&mut self, asset: String, name: String, at: u64) -> Answer<wit::Balance> {
        self.call(calls::BALANCE_AT, false, move |l| {
            l.balance_at(&asset, &name, at).map(to_balance)
        })
    }

    fn issued(&mut self, asset: String) -> Answer<wit::Amount> {
        self.call(calls::ISSUED, false, move |l| {
            l.issued(&asset).map(to_amount)
        })
    }
}

#[cfg(test)]
mod tests;
