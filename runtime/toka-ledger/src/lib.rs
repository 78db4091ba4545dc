//! A double-entry ledger for Toka agents: the model behind the `ledger`
//! capability (agents that meter usage, sell credits or settle payments),
//! its embedded, crash-safe backend on redb and (feature `pg`) a PostgreSQL
//! backend several processes can share.
//!
//! # Model
//! - **Accounts** are named per asset: `(asset, account)`. Each has a
//!   balance (`i128` minor units; no floating point anywhere) and an
//!   overdraft limit (`u128`, 0 unless opened with one). A balance never
//!   goes below `-overdraft`.
//! - **Creation.** [`Op::Open`] creates an account explicitly (the only way
//!   to give it an overdraft); a *credit* (a mint to it, a transfer to it)
//!   creates a missing account with overdraft 0. A *debit* (burn, transfer
//!   from) and every read of a missing account fail with
//!   [`Error::UnknownAccount`].
//! - **Double entry.** Every operation is one journal [`Entry`] whose
//!   [`Posting`]s sum to zero per asset. Each asset has an issuance account
//!   ([`ISSUANCE`], a name no caller can spell): [`Op::Mint`] moves an
//!   amount from it to an account, [`Op::Burn`] back, [`Op::Transfer`]
//!   between two accounts. So the issuance account's balance is minus the
//!   amount in circulation, and the balances of an asset always sum to 0.
//! - **Idempotency.** Every operation carries a key (per ledger). Replaying
//!   a key with the same operation returns the original [`Entry`] and
//!   changes nothing; the same key with a different operation is
//!   [`Error::Conflict`]. A refused operation (insufficient funds, ...)
//!   records nothing, so its key stays free for a retry.
//! - **History.** Each posting is kept per account, in entry order:
//!   [`Ledger::history`] pages through it with a cursor (the last entry id
//!   seen), [`Ledger::balance_at`] answers the balance after any entry.
//!
//! # Guarantees (embedded backend, [`Embedded`])
//! - **All or nothing.** An operation is one redb write transaction: its
//!   postings, balances, history rows, entry and idempotency key commit
//!   together or not at all.
//! - **Acknowledged = durable.** [`Ledger::apply`] returns `Ok` only after
//!   the transaction committed with `Durability::Immediate` (fsync'd); a
//!   SIGKILL at any moment loses no acknowledged operation
//!   (`tests/crash.rs` kills a writer child over and over and checks).
//! - **Serializable.** redb has one writer at a time; reads see a
//!   consistent snapshot and never wait for it.
//! - **Fast reopen** after a crash (`set_quick_repair(true)` on each commit).
//!
//! # Layout
//! - this module: the model ([`Op`], [`Entry`], [`Account`]) and the
//!   backend-neutral [`Ledger`] trait;
//! - [`embedded`]: [`Embedded`], the redb backend;
//! - `postgres` (feature `pg`): `Postgres`, the PostgreSQL backend, with
//!   the same semantics (its module doc has its transactions, ids and
//!   migrations);
//! - [`error`]: [`Error`] and the five kinds a caller sees ([`ErrorKind`]);
//! - [`config`]: `[ledger]` (which backend, [`config::open_backend`]) and
//!   the agents' `ledger_*` grants ([`config::Grant`]);
//! - [`guard`]: [`Guarded`], one agent's view of a ledger, checked against
//!   its grant, with its idempotency keys scoped to it;
//! - `host` (feature `host`): the `ledger` capability the kernel links.
#![deny(missing_docs)]

pub mod config;
pub mod embedded;
pub mod error;
pub mod guard;
#[cfg(feature = "host")]
pub mod host;
#[cfg(feature = "pg")]
pub mod postgres;

use serde::{Deserialize, Serialize};

pub use embedded::Embedded;
pub use error::{Error, ErrorKind, Result};
pub use guard::Guarded;
#[cfg(feature = "pg")]
pub use postgres::Postgres;

/// The name of each asset's issuance account (`#` is not allowed in the
/// names callers give, so no caller can open, credit or debit it).
pub const ISSUANCE: &str = "#issuance";
/// The largest amount one operation moves, the largest overdraft and the
/// most of an asset in circulation: `i128::MAX`, so every balance stays an
/// `i128` (a mint past it is [`Error::Invalid`]).
pub const MAX_AMOUNT: u128 = i128::MAX as u128;
/// Longest asset name, in bytes.
pub const MAX_ASSET_NAME: usize = 32;
/// Longest account name, in bytes.
pub const MAX_ACCOUNT_NAME: usize = 128;
/// Longest idempotency key, in bytes (an agent's keys are shorter,
/// [`guard::MAX_AGENT_KEY`]: the ledger stores them scoped to the agent).
pub const MAX_KEY: usize = 384;
/// Most rows one page of a listing returns.
pub const MAX_PAGE: usize = 1000;

/// A journal entry's id: entries are numbered from 1 in commit order.
pub type EntryId = u64;

/// One operation on the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
// Externally tagged: an internally tagged enum buffers its fields, and
// serde's buffer has no 128-bit integers.
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Create `account` with an overdraft limit (it must not exist).
    Open {
        /// The asset.
        asset: String,
        /// The account.
        account: String,
        /// How far below zero its balance may go (at most [`MAX_AMOUNT`]).
        overdraft: u128,
    },
    /// Issue `amount` of `asset` into `to` (created if missing).
    Mint {
        /// The asset.
        asset: String,
        /// The account credited.
        to: String,
        /// Minor units, 1 to [`MAX_AMOUNT`].
        amount: u128,
    },
    /// Retire `amount` of `asset` from `from` (at most what is in
    /// circulation: an overdraft cannot retire units never minted).
    Burn {
        /// The asset.
        asset: String,
        /// The account debited.
        from: String,
        /// Minor units, 1 to [`MAX_AMOUNT`].
        amount: u128,
    },
    /// Move `amount` from `from` to `to` (created if missing).
    Transfer {
        /// The asset.
        asset: String,
        /// The account debited.
        from: String,
        /// The account credited.
        to: String,
        /// Minor units, 1 to [`MAX_AMOUNT`].
        amount: u128,
    },
}

impl Op {
    /// The asset the operation is in.
    pub fn asset(&self) -> &str {
        match self {
            Op::Open { asset, .. }
            | Op::Mint { asset, .. }
            | Op::Burn { asset, .. }
            | Op::Transfer { asset, .. } => asset,
        }
    }

    /// Checks names and amounts (everything that does not need the ledger).
    pub fn validate(&self) -> Result<()> {
        valid_asset(self.asset())?;
        match self {
            Op::Open {
                account, overdraft, ..
            } => {
                valid_account(account)?;
                if *overdraft > MAX_AMOUNT {
                    return Err(Error::Invalid(format!(
                        "overdraft {overdraft} is above the most allowed, {MAX_AMOUNT}"
                    )));
                }
            }
            Op::Mint { to, amount, .. } => {
                valid_account(to)?;
                valid_amount(*amount)?;
            }
            Op::Burn { from, amount, .. } => {
                valid_account(from)?;
                valid_amount(*amount)?;
            }
            Op::Transfer {
                from, to, amount, ..
            } => {
                valid_account(from)?;
                valid_account(to)?;
                valid_amount(*amount)?;
                if from == to {
                    return Err(Error::Invalid(format!("transfer from {from} to itself")));
                }
            }
        }
        Ok(())
    }

    /// The balance changes the operation makes: `(account, delta)`, debits
    /// first. Empty for [`Op::Open`]. The deltas sum to zero.
    pub fn deltas(&self) -> Vec<(&str, i128)> {
        // Validated amounts are at most i128::MAX, so the casts are exact
        // (and saturate instead of wrapping for an unvalidated one).
        let signed = |a: u128| i128::try_from(a).unwrap_or(i128::MAX);
        match self {
            Op::Open { .. } => Vec::new(),
            Op::Mint { to, amount, .. } => {
                vec![(ISSUANCE, -signed(*amount)), (to.as_str(), signed(*amount))]
            }
            Op::Burn { from, amount, .. } => {
                vec![
                    (from.as_str(), -signed(*amount)),
                    (ISSUANCE, signed(*amount)),
                ]
            }
            Op::Transfer {
                from, to, amount, ..
            } => vec![
                (from.as_str(), -signed(*amount)),
                (to.as_str(), signed(*amount)),
            ],
        }
    }
}

/// One balance change of an [`Entry`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Posting {
    /// The account (in the entry's asset).
    pub account: String,
    /// The change: negative for a debit.
    pub delta: i128,
    /// The account's balance after the entry.
    pub balance: i128,
}

/// A committed operation: what [`Ledger::apply`] returns (and returns again
/// for a replayed idempotency key).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Entry {
    /// Its id.
    pub id: EntryId,
    /// The idempotency key it was applied with.
    pub key: String,
    /// The operation.
    pub op: Op,
    /// Its balance changes, summing to zero (none for [`Op::Open`]).
    pub postings: Vec<Posting>,
}

/// An account and its balance.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Account {
    /// The asset.
    pub asset: String,
    /// The account's name.
    pub name: String,
    /// Its balance, minor units.
    pub balance: i128,
    /// How far below zero the balance may go.
    pub overdraft: u128,
}

/// One row of an account's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HistoryRow {
    /// The entry.
    pub entry: EntryId,
    /// The change it made to the account.
    pub delta: i128,
    /// The account's balance after it.
    pub balance: i128,
}

/// One page of a listing; pass `next` back as `after` for the next page.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Page<T, C> {
    /// The rows, in order.
    pub rows: Vec<T>,
    /// The cursor of the last row when more follow.
    pub next: Option<C>,
}

/// A ledger backend. Every method is one transaction; implementations are
/// shared between threads and serialize writes.
pub trait Ledger: Send + Sync {
    /// Applies `op` under idempotency `key`; see the crate doc for replays.
    fn apply(&self, key: &str, op: &Op) -> Result<Entry>;

    /// The entry applied with `key`, if any.
    fn lookup(&self, key: &str) -> Result<Option<Entry>>;

    /// One entry.
    fn entry(&self, id: EntryId) -> Result<Option<Entry>>;

    /// One account (the issuance account is readable too).
    fn account(&self, asset: &str, account: &str) -> Result<Account>;

    /// An asset's accounts in name order, after the cursor `after`, at most
    /// `limit` (up to [`MAX_PAGE`]); the issuance account is not listed.
    fn accounts(
        &self,
        asset: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<Account, String>>;

    /// An account's postings in entry order, after entry `after`.
    fn history(
        &self,
        asset: &str,
        account: &str,
        after: Option<EntryId>,
        limit: usize,
    ) -> Result<Page<HistoryRow, EntryId>>;

    /// The account's balance right after entry `at` (0 before its first).
    fn balance_at(&self, asset: &str, account: &str, at: EntryId) -> Result<i128>;

    /// Checks every invariant over the whole ledger and returns what is
    /// wrong (empty: all holds): balances sum to zero per asset, none is
    /// below its overdraft, history chains end at the balances, postings
    /// match their operations, entry ids run from 1 without gaps. Reads
    /// everything: for tests and `toka ledger check`. An agent's view
    /// ([`Guarded`]) answers [`Error::AccessDenied`].
    fn check(&self) -> Result<Vec<String>>;

    /// The amount of `asset` in circulation (minted less burnt).
    fn issued(&self, asset: &str) -> Result<u128> {
        match self.account(asset, ISSUANCE) {
            Ok(a) => Ok(a.balance.unsigned_abs()),
            Err(Error::UnknownAccount { .. }) => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// [`Op::Open`].
    fn open(&self, key: &str, asset: &str, account: &str, overdraft: u128) -> Result<Entry> {
        self.apply(
            key,
            &Op::Open {
                asset: asset.into(),
                account: account.into(),
                overdraft,
            },
        )
    }

    /// [`Op::Mint`].
    fn mint(&self, key: &str, asset: &str, to: &str, amount: u128) -> Result<Entry> {
        self.apply(
            key,
            &Op::Mint {
                asset: asset.into(),
                to: to.into(),
                amount,
            },
        )
    }

    /// [`Op::Burn`].
    fn burn(&self, key: &str, asset: &str, from: &str, amount: u128) -> Result<Entry> {
        self.apply(
            key,
            &Op::Burn {
                asset: asset.into(),
                from: from.into(),
                amount,
            },
        )
    }

    /// [`Op::Transfer`].
    fn transfer(
        &self,
        key: &str,
        asset: &str,
        from: &str,
        to: &str,
        amount: u128,
    ) -> Result<Entry> {
        self.apply(
            key,
            &Op::Transfer {
                asset: asset.into(),
                from: from.into(),
                to: to.into(),
                amount,
            },
        )
    }
}

/// An exact sum of `i128` balances. Each balance fits an `i128` but a
/// partial sum of an asset's balances need not (one account at the maximum,
/// another in overdraft), so this counts the wraps too.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WideSum {
    low: i128,
    /// How many times `low` wrapped: upwards positive, downwards negative.
    wraps: i64,
}

impl WideSum {
    /// Adds `x`.
    pub fn add(&mut self, x: i128) {
        let (low, wrapped) = self.low.overflowing_add(x);
        if wrapped {
            self.wraps += if x > 0 { 1 } else { -1 };
        }
        self.low = low;
    }

    /// True when the sum is exactly zero.
    pub fn is_zero(&self) -> bool {
        self.low == 0 && self.wraps == 0
    }

    /// The sum, when it fits an `i128`.
    pub fn get(&self) -> Option<i128> {
        (self.wraps == 0).then_some(self.low)
    }
}

/// An asset name: 1-32 bytes of `A-Z a-z 0-9 _ - .`.
pub fn valid_asset(name: &str) -> Result<()> {
    valid_name("asset", name, MAX_ASSET_NAME, |c| {
        c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')
    })
}

/// An account name: 1-128 bytes of `A-Z a-z 0-9 _ - . / : @`.
pub fn valid_account(name: &str) -> Result<()> {
    valid_name("account", name, MAX_ACCOUNT_NAME, |c| {
        c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/' | ':' | '@')
    })
}

/// An idempotency key: 1-[`MAX_KEY`] bytes, no control characters.
pub fn valid_key(key: &str) -> Result<()> {
    valid_name("idempotency key", key, MAX_KEY, |c| !c.is_control())
}

fn valid_name(what: &str, name: &str, max: usize, ok: impl Fn(char) -> bool) -> Result<()> {
    if name.is_empty() || name.len() > max || !name.chars().all(ok) {
        let shown: String = name.chars().take(40).collect();
        return Err(Error::Invalid(format!(
            "{what} `{}`: use 1-{max} bytes of the allowed characters",
            shown.escape_debug()
        )));
    }
    Ok(())
}

/// One posting's new balance, or why not, as every backend checks it:
/// overflow, burning more than is issued (only issued units can be retired:
/// an account in overdraft burns nothing that was ever minted), minting
/// past [`MAX_AMOUNT`] in circulation (so `issued` and every amount a
/// caller sees fit one range), or a debit past the overdraft.
pub(crate) fn check_posting(
    asset: &str,
    account: &str,
    balance: i128,
    overdraft: u128,
    delta: i128,
) -> Result<i128> {
    let after = balance.checked_add(delta).ok_or_else(|| {
        Error::Invalid(format!(
            "{asset}/{account}: balance {balance} + {delta} overflows"
        ))
    })?;
    if account == ISSUANCE && after > 0 {
        return Err(Error::Invalid(format!(
            "{asset}: burning {delta} when {} is in circulation",
            balance.unsigned_abs()
        )));
    }
    if account == ISSUANCE && after.unsigned_abs() > MAX_AMOUNT {
        return Err(Error::Invalid(format!(
            "{asset}: minting {} would put more than {MAX_AMOUNT} in circulation",
            delta.unsigned_abs()
        )));
    }
    if account != ISSUANCE && after < 0 && after.unsigned_abs() > overdraft {
        return Err(Error::InsufficientFunds {
            asset: asset.to_owned(),
            account: account.to_owned(),
            balance,
            overdraft,
            amount: delta.unsigned_abs(),
        });
    }
    Ok(after)
}

fn valid_amount(amount: u128) -> Result<()> {
    if amount == 0 || amount > MAX_AMOUNT {
        return Err(Error::Invalid(format!(
            "amount {amount}: use 1 to {MAX_AMOUNT} minor units"
        )));
    }
    Ok(())
}
