//! [`Guarded`]: one agent's view of a ledger, what the capability will hand
//! each agent. Every call is checked against the agent's [`Grant`] before
//! it reaches the backend, and the agent's idempotency keys are scoped to
//! it, so agents can neither replay nor probe each other's keys.
//!
//! - An operation the grant does not allow is [`Error::AccessDenied`],
//!   whether or not its accounts exist; a read of an account the agent may
//!   not read likewise. Only an agent granted an account learns that it is
//!   missing ([`Error::UnknownAccount`]).
//! - An [`Entry`] the agent sees lists only the postings of accounts it may
//!   read (so a transfer's counterparty balance does not leak); an entry
//!   that is neither its own nor touches an account it may read reads as
//!   absent, and another agent's key reads as empty.

use crate::config::Grant;
use crate::{
    Account, Entry, EntryId, Error, HistoryRow, ISSUANCE, Ledger, MAX_PAGE, Op, Page, Result,
    valid_asset, valid_key,
};

/// Longest idempotency key an agent may use, in bytes.
pub const MAX_AGENT_KEY: usize = 256;

/// An agent's view of `L`, checked against its grant.
#[derive(Debug)]
pub struct Guarded<L> {
    ledger: L,
    /// The prefix of every key the agent uses: `<len>:<agent>/`, so one
    /// agent's keys never collide with another's, whatever the names.
    scope: String,
    grant: Grant,
}

impl<L: Ledger> Guarded<L> {
    /// `agent`'s view of `ledger` (an `Arc` or a reference to a backend).
    pub fn new(ledger: L, agent: &str, grant: Grant) -> Self {
        Guarded {
            ledger,
            scope: format!("{}:{agent}/", agent.len()),
            grant,
        }
    }

    /// The grant it checks against.
    pub fn grant(&self) -> &Grant {
        &self.grant
    }

    fn scoped(&self, key: &str) -> Result<String> {
        if key.len() > MAX_AGENT_KEY {
            return Err(Error::Invalid(format!(
                "idempotency key of {} bytes: use at most {MAX_AGENT_KEY}",
                key.len()
            )));
        }
        valid_key(key)?;
        let scoped = format!("{}{key}", self.scope);
        valid_key(&scoped)?;
        Ok(scoped)
    }

    /// The entry as the agent may see it, if at all.
    fn view(&self, mut entry: Entry) -> Option<Entry> {
        let own = match entry.key.strip_prefix(&self.scope) {
            Some(key) => {
                entry.key = key.to_owned();
                true
            }
            None => {
                entry.key.clear();
                false
            }
        };
        let asset = entry.op.asset().to_owned();
        let touches = !entry.postings.is_empty()
            && entry
                .postings
                .iter()
                .any(|p| self.grant.may_read(&asset, &p.account));
        entry
            .postings
            .retain(|p| self.grant.may_read(&asset, &p.account));
        (own || touches).then_some(entry)
    }

    fn readable(&self, asset: &str, account: &str) -> Result<()> {
        valid_asset(asset)?;
        if self.grant.may_read(asset, account) {
            Ok(())
        } else {
            Err(Error::AccessDenied)
        }
    }
}

impl<L: Ledger> Ledger for Guarded<L> {
    fn apply(&self, key: &str, op: &Op) -> Result<Entry> {
        let scoped = self.scoped(key)?;
        op.validate()?;
        if !self.grant.allows(op) {
            return Err(Error::AccessDenied);
        }
        let entry = self.ledger.apply(&scoped, op)?;
        // Its own entry is always visible.
        self.view(entry)
            .ok_or_else(|| Error::Corrupt("an agent's own entry is hidden from it".into()))
    }

    fn lookup(&self, key: &str) -> Result<Option<Entry>> {
        let scoped = self.scoped(key)?;
        Ok(self.ledger.lookup(&scoped)?.and_then(|e| self.view(e)))
    }

    fn entry(&self, id: EntryId) -> Result<Option<Entry>> {
        Ok(self.ledger.entry(id)?.and_then(|e| self.view(e)))
    }

    fn account(&self, asset: &str, account: &str) -> Result<Account> {
        self.readable(asset, account)?;
        self.ledger.account(asset, account)
    }

    fn accounts(
        &self,
        asset: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<Account, String>> {
        valid_asset(asset)?;
        let limit = limit.clamp(1, MAX_PAGE);
        let mut rows = Vec::new();
        let mut cursor = after.map(str::to_owned);
        loop {
            let page = self.ledger.accounts(asset, cursor.as_deref(), MAX_PAGE)?;
            for a in page.rows {
                if !self.grant.may_read(asset, &a.name) {
                    continue;
                }
                if rows.len() == limit {
                    let next = rows.last().map(|r: &Account| r.name.clone());
                    return Ok(Page { rows, next });
                }
                rows.push(a);
            }
            match page.next {
                Some(n) => cursor = Some(n),
                None => return Ok(Page { rows, next: None }),
            }
        }
    }

    fn history(
        &self,
        asset: &str,
        account: &str,
        after: Option<EntryId>,
        limit: usize,
    ) -> Result<Page<HistoryRow, EntryId>> {
        self.readable(asset, account)?;
        self.ledger.history(asset, account, after, limit)
    }

    fn balance_at(&self, asset: &str, account: &str, at: EntryId) -> Result<i128> {
        self.readable(asset, account)?;
        self.ledger.balance_at(asset, account, at)
    }

    fn issued(&self, asset: &str) -> Result<u128> {
        self.readable(asset, ISSUANCE)?;
        self.ledger.issued(asset)
    }

    /// Not for an agent: a check reads every account.
    fn check(&self) -> Result<Vec<String>> {
        Err(Error::AccessDenied)
    }
}

/// A ledger behind a reference or a shared pointer is a ledger: every
/// method forwards to the one behind it.
macro_rules! forward_ledger {
    ($($ty:ty),*) => {$(
        impl<L: Ledger + ?Sized> Ledger for $ty {
            fn apply(&self, key: &str, op: &Op) -> Result<Entry> {
                (**self).apply(key, op)
            }
            fn lookup(&self, key: &str) -> Result<Option<Entry>> {
                (**self).lookup(key)
            }
            fn entry(&self, id: EntryId) -> Result<Option<Entry>> {
                (**self).entry(id)
            }
            fn account(&self, asset: &str, account: &str) -> Result<Account> {
                (**self).account(asset, account)
            }
            fn accounts(
                &self,
                asset: &str,
                after: Option<&str>,
                limit: usize,
            ) -> Result<Page<Account, String>> {
                (**self).accounts(asset, after, limit)
            }
            fn history(
                &self,
                asset: &str,
                account: &str,
                after: Option<EntryId>,
                limit: usize,
            ) -> Result<Page<HistoryRow, EntryId>> {
                (**self).history(asset, account, after, limit)
            }
            fn balance_at(&self, asset: &str, account: &str, at: EntryId) -> Result<i128> {
                (**self).balance_at(asset, account, at)
            }
            fn issued(&self, asset: &str) -> Result<u128> {
                (**self).issued(asset)
            }
            fn check(&self) -> Result<Vec<String>> {
                (**self).check()
            }
        }
    )*};
}

forward_ledger!(&L, std::sync::Arc<L>);
