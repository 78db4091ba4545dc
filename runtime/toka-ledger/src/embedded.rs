//! [`Embedded`]: the ledger in one redb file.
//!
//! Each operation is one write transaction (`Durability::Immediate`, quick
//! repair): redb runs one at a time, so operations are serializable without
//! locks of our own, and a refused operation aborts its transaction, so it
//! leaves nothing behind. Reads use read transactions (snapshots) and never
//! wait for a writer.
//!
//! # Tables
//! - `accounts`: `(asset, account)` → `(balance, overdraft)`;
//! - `history`: `(asset, account, entry)` → `(delta, balance after)`;
//! - `entries`: entry id → the [`Entry`] as JSON;
//! - `keys`: idempotency key → entry id;
//! - `meta`: `format` (the layout) and `next_entry`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use redb::{
    Database, DatabaseError, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    TableDefinition, WriteTransaction,
};

use crate::error::{Error, Result, storage};
use crate::{
    Account, Entry, EntryId, HistoryRow, ISSUANCE, Ledger, MAX_PAGE, Op, Page, Posting, WideSum,
    valid_account, valid_asset, valid_key,
};

const ACCOUNTS: TableDefinition<(&str, &str), (i128, u128)> = TableDefinition::new("accounts");
const HISTORY: TableDefinition<(&str, &str, u64), (i128, i128)> = TableDefinition::new("history");
const ENTRIES: TableDefinition<u64, &[u8]> = TableDefinition::new("entries");
const KEYS: TableDefinition<&str, u64> = TableDefinition::new("keys");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// The file layout this version writes (`meta` row `format`).
const FORMAT: u64 = 1;

/// redb's page cache: its default (1 GiB) is far more than a ledger needs.
const CACHE_BYTES: usize = 32 << 20;

/// The embedded ledger: one redb file. Share it with an `Arc`; every method
/// takes `&self`.
pub struct Embedded {
    db: Database,
    path: PathBuf,
}

impl std::fmt::Debug for Embedded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedded")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Embedded {
    /// Opens (or creates) the ledger file at `path`, creating its directory.
    /// After an unclean shutdown redb repairs the file first (quickly: every
    /// commit saved its allocator state).
    pub fn open(path: &Path) -> Result<Embedded> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::Storage {
                action: "creating the ledger's directory",
                source: redb::Error::Io(e),
            })?;
        }
        let mut builder = Database::builder();
        builder.set_cache_size(CACHE_BYTES);
        let db = match builder.create(path) {
            Ok(db) => db,
            Err(DatabaseError::DatabaseAlreadyOpen) => {
                return Err(Error::InUse {
                    path: path.to_path_buf(),
                });
            }
            Err(e) => return Err(storage("opening the ledger")(e)),
        };
        let txn = begin(&db)?;
        {
            let mut meta = txn.open_table(META).map_err(storage("opening tables"))?;
            let format = meta
                .get("format")
                .map_err(storage("reading the format"))?
                .map(|g| g.value());
            match format {
                None => {
                    meta.insert("format", FORMAT)
                        .map_err(storage("writing the format"))?;
                    meta.insert("next_entry", 1)
                        .map_err(storage("writing the format"))?;
                }
                Some(FORMAT) => {}
                Some(other) => {
                    return Err(Error::Corrupt(format!(
                        "{} has layout {other}; this version reads layout {FORMAT}",
                        path.display()
                    )));
                }
            }
            // Create the other tables, so reads of a new ledger find them.
            txn.open_table(ACCOUNTS)
                .map_err(storage("opening tables"))?;
            txn.open_table(HISTORY).map_err(storage("opening tables"))?;
            txn.open_table(ENTRIES).map_err(storage("opening tables"))?;
            txn.open_table(KEYS).map_err(storage("opening tables"))?;
        }
        txn.commit().map_err(storage("committing the open"))?;
        Ok(Embedded {
            db,
            path: path.to_path_buf(),
        })
    }

    /// The ledger file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Checks every invariant over the whole file and returns what is wrong
    /// (empty: all holds). Reads everything: for tests and `toka ledger
    /// check`, not for a request path.
    ///
    /// - the balances of each asset sum to zero, and the issuance account's
    ///   is at most zero;
    /// - no balance is below its account's overdraft limit;
    /// - each account's balance is its last history row's, and the history
    ///   rows chain (each balance is the previous one plus its delta);
    /// - each entry's postings sum to zero, match its operation's deltas and
    ///   its history rows, and its key maps back to it; entry ids run from 1
    ///   to `next_entry - 1`.
    pub fn check(&self) -> Result<Vec<String>> {
        let txn = self.db.begin_read().map_err(storage("reading"))?;
        let accounts = txn.open_table(ACCOUNTS).map_err(storage("reading"))?;
        let history = txn.open_table(HISTORY).map_err(storage("reading"))?;
        let entries = txn.open_table(ENTRIES).map_err(storage("reading"))?;
        let keys = txn.open_table(KEYS).map_err(storage("reading"))?;
        let meta = txn.open_table(META).map_err(storage("reading"))?;
        let mut problems = Vec::new();

        let mut sums: HashMap<String, WideSum> = HashMap::new();
        for row in accounts.iter().map_err(storage("reading"))? {
            let (k, v) = row.map_err(storage("reading"))?;
            let (asset, name) = k.value();
            let (balance, overdraft) = v.value();
            sums.entry(asset.to_owned()).or_default().add(balance);
            if name == ISSUANCE {
                if balance > 0 {
                    problems.push(format!("{asset}: issuance balance {balance} is positive"));
                }
            } else if balance < 0 && balance.unsigned_abs() > overdraft {
                problems.push(format!(
                    "{asset}/{name}: balance {balance} is below its overdraft {overdraft}"
                ));
            }
            let mut last: i128 = 0;
            for h in history
                .range((asset, name, 0)..=(asset, name, u64::MAX))
                .map_err(storage("reading"))?
            {
                let (hk, hv) = h.map_err(storage("reading"))?;
                let (delta, after) = hv.value();
                if last.checked_add(delta) != Some(after) {
                    problems.push(format!(
                        "{asset}/{name}: entry {} takes {last} by {delta} to {after}",
                        hk.value().2
                    ));
                }
                last = after;
            }
            if last != balance {
                problems.push(format!(
                    "{asset}/{name}: balance {balance}, history ends at {last}"
                ));
            }
        }
        for (asset, sum) in &sums {
            if !sum.is_zero() {
                problems.push(format!("{asset}: the balances sum to {sum:?}, not 0"));
            }
        }

        let next = meta
            .get("next_entry")
            .map_err(storage("reading"))?
            .map_or(1, |g| g.value());
        let mut expected_id = 1;
        for row in entries.iter().map_err(storage("reading"))? {
            let (k, v) = row.map_err(storage("reading"))?;
            let id = k.value();
            if id != expected_id {
                problems.push(format!("entry {id} follows entry {}", expected_id - 1));
            }
            expected_id = id + 1;
            let entry = decode(id, v.value())?;
            if entry.id != id {
                problems.push(format!("entry {id} says it is {}", entry.id));
            }
            let asset = entry.op.asset();
            let deltas: Vec<(&str, i128)> = entry
                .postings
                .iter()
                .map(|p| (p.account.as_str(), p.delta))
                .collect();
            if deltas != entry.op.deltas() {
                problems.push(format!("entry {id}: postings do not match its operation"));
            }
            if entry.postings.iter().map(|p| p.delta).sum::<i128>() != 0 {
                problems.push(format!("entry {id}: postings do not sum to zero"));
            }
            for p in &entry.postings {
                let h = history
                    .get((asset, p.account.as_str(), id))
                    .map_err(storage("reading"))?
                    .map(|g| g.value());
                if h != Some((p.delta, p.balance)) {
                    problems.push(format!(
                        "entry {id}: {asset}/{}: history row {h:?}",
                        p.account
                    ));
                }
            }
            let mapped = keys
                .get(entry.key.as_str())
                .map_err(storage("reading"))?
                .map(|g| g.value());
            if mapped != Some(id) {
                problems.push(format!("entry {id}: its key maps to {mapped:?}"));
            }
        }
        if expected_id != next {
            problems.push(format!(
                "next_entry is {next}, the last entry {}",
                expected_id - 1
            ));
        }
        let key_count = keys.len().map_err(storage("reading"))?;
        if key_count != next - 1 {
            problems.push(format!("{key_count} keys for {} entries", next - 1));
        }
        Ok(problems)
    }

    fn read(&self) -> Result<redb::ReadTransaction> {
        self.db.begin_read().map_err(storage("starting a read"))
    }

    /// Stages `op` in `txn`: the replay check, the balance changes, the rows.
    fn stage(txn: &WriteTransaction, key: &str, op: &Op) -> Result<Staged> {
        let mut keys = txn.open_table(KEYS).map_err(storage("opening tables"))?;
        let mut entries = txn.open_table(ENTRIES).map_err(storage("opening tables"))?;
        if let Some(id) = keys
            .get(key)
            .map_err(storage("reading a key"))?
            .map(|g| g.value())
        {
            let raw = entries
                .get(id)
                .map_err(storage("reading an entry"))?
                .ok_or_else(|| Error::Corrupt(format!("key {key} names missing entry {id}")))?;
            let entry = decode(id, raw.value())?;
            if entry.op == *op {
                return Ok(Staged::Replay(entry));
            }
            return Err(Error::Conflict(format!(
                "idempotency key `{}` was used for another operation (entry {id})",
                key.escape_debug()
            )));
        }

        let mut accounts = txn
            .open_table(ACCOUNTS)
            .map_err(storage("opening tables"))?;
        let mut history = txn.open_table(HISTORY).map_err(storage("opening tables"))?;
        let mut meta = txn.open_table(META).map_err(storage("opening tables"))?;
        let asset = op.asset();
        let id = meta
            .get("next_entry")
            .map_err(storage("reading the entry counter"))?
            .map_or(1, |g| g.value());

        let mut postings = Vec::new();
        if let Op::Open {
            account, overdraft, ..
        } = op
        {
            let exists = accounts
                .get((asset, account.as_str()))
                .map_err(storage("reading an account"))?
                .is_some();
            if exists {
                return Err(Error::Conflict(format!("account {asset}/{account} exists")));
            }
            accounts
                .insert((asset, account.as_str()), (0, *overdraft))
                .map_err(storage("writing an account"))?;
        }
        for (account, delta) in op.deltas() {
            let row = accounts
                .get((asset, account))
                .map_err(storage("reading an account"))?
                .map(|g| g.value());
            let (balance, overdraft) = match row {
                Some(row) => row,
                // A credit opens a missing account; the issuance account
                // appears with the asset's first mint.
                None if delta > 0 || account == ISSUANCE => (0, 0),
                None => return Err(Error::unknown(asset, account)),
            };
            let after = crate::check_posting(asset, account, balance, overdraft, delta)?;
            accounts
                .insert((asset, account), (after, overdraft))
                .map_err(storage("writing an account"))?;
            history
                .insert((asset, account, id), (delta, after))
                .map_err(storage("writing history"))?;
            postings.push(Posting {
                account: account.to_owned(),
                delta,
                balance: after,
            });
        }

        let entry = Entry {
            id,
            key: key.to_owned(),
            op: op.clone(),
            postings,
        };
        let raw = serde_json::to_vec(&entry)
            .map_err(|e| Error::Corrupt(format!("encoding entry {id}: {e}")))?;
        entries
            .insert(id, raw.as_slice())
            .map_err(storage("writing an entry"))?;
        keys.insert(key, id).map_err(storage("writing a key"))?;
        meta.insert("next_entry", id + 1)
            .map_err(storage("writing the entry counter"))?;
        Ok(Staged::Fresh(entry))
    }
}

/// What [`Embedded::stage`] did.
enum Staged {
    /// The key was applied before with this operation: nothing written.
    Replay(Entry),
    /// A new entry, written to the transaction.
    Fresh(Entry),
}

impl Ledger for Embedded {
    fn apply(&self, key: &str, op: &Op) -> Result<Entry> {
        valid_key(key)?;
        op.validate()?;
        let txn = begin(&self.db)?;
        let staged = Self::stage(&txn, key, op);
        match staged {
            // A replay wrote nothing: nothing to commit.
            Ok(Staged::Replay(entry)) => {
                txn.abort().map_err(storage("ending a replay"))?;
                Ok(entry)
            }
            Ok(Staged::Fresh(entry)) => {
                txn.commit().map_err(storage("committing"))?;
                Ok(entry)
            }
            Err(e) => {
                // Refused: nothing of it may land.
                txn.abort().map_err(storage("aborting"))?;
                Err(e)
            }
        }
    }

    fn lookup(&self, key: &str) -> Result<Option<Entry>> {
        valid_key(key)?;
        let txn = self.read()?;
        let keys = txn.open_table(KEYS).map_err(storage("reading"))?;
        let Some(id) = keys
            .get(key)
            .map_err(storage("reading a key"))?
            .map(|g| g.value())
        else {
            return Ok(None);
        };
        let entries = txn.open_table(ENTRIES).map_err(storage("reading"))?;
        let raw = entries
            .get(id)
            .map_err(storage("reading an entry"))?
            .ok_or_else(|| Error::Corrupt(format!("key {key} names missing entry {id}")))?;
        decode(id, raw.value()).map(Some)
    }

    fn entry(&self, id: EntryId) -> Result<Option<Entry>> {
        let txn = self.read()?;
        let entries = txn.open_table(ENTRIES).map_err(storage("reading"))?;
        let raw = entries.get(id).map_err(storage("reading an entry"))?;
        raw.map(|raw| decode(id, raw.value())).transpose()
    }

    fn account(&self, asset: &str, account: &str) -> Result<Account> {
        valid_asset(asset)?;
        if account != ISSUANCE {
            valid_account(account)?;
        }
        let txn = self.read()?;
        let accounts = txn.open_table(ACCOUNTS).map_err(storage("reading"))?;
        let (balance, overdraft) = accounts
            .get((asset, account))
            .map_err(storage("reading an account"))?
            .map(|g| g.value())
            .ok_or_else(|| Error::unknown(asset, account))?;
        Ok(Account {
            asset: asset.to_owned(),
            name: account.to_owned(),
            balance,
            overdraft,
        })
    }

    fn accounts(
        &self,
        asset: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<Account, String>> {
        valid_asset(asset)?;
        let limit = limit.clamp(1, MAX_PAGE);
        let txn = self.read()?;
        let accounts = txn.open_table(ACCOUNTS).map_err(storage("reading"))?;
        let mut rows = Vec::new();
        let mut next = None;
        // `#` sorts before every character an account name may use, so
        // starting at the issuance account's name starts at the asset's first.
        let start = after.unwrap_or(ISSUANCE);
        for row in accounts
            .range((asset, start)..)
            .map_err(storage("listing accounts"))?
        {
            let (k, v) = row.map_err(storage("listing accounts"))?;
            let (a, name) = k.value();
            if a != asset {
                break;
            }
            if name == ISSUANCE || Some(name) == after {
                continue;
            }
            if rows.len() == limit {
                next = rows.last().map(|r: &Account| r.name.clone());
                break;
            }
            let (balance, overdraft) = v.value();
            rows.push(Account {
                asset: asset.to_owned(),
                name: name.to_owned(),
                balance,
                overdraft,
            });
        }
        Ok(Page { rows, next })
    }

    fn history(
        &self,
        asset: &str,
        account: &str,
        after: Option<EntryId>,
        limit: usize,
    ) -> Result<Page<HistoryRow, EntryId>> {
        self.account(asset, account)?;
        let limit = limit.clamp(1, MAX_PAGE);
        let txn = self.read()?;
        let history = txn.open_table(HISTORY).map_err(storage("reading"))?;
        let from = after.map_or(0, |a| a.saturating_add(1));
        let mut rows = Vec::new();
        let mut next = None;
        for row in history
            .range((asset, account, from)..=(asset, account, u64::MAX))
            .map_err(storage("reading history"))?
        {
            let (k, v) = row.map_err(storage("reading history"))?;
            if rows.len() == limit {
                next = rows.last().map(|r: &HistoryRow| r.entry);
                break;
            }
            let (delta, balance) = v.value();
            rows.push(HistoryRow {
                entry: k.value().2,
                delta,
                balance,
            });
        }
        Ok(Page { rows, next })
    }

    fn balance_at(&self, asset: &str, account: &str, at: EntryId) -> Result<i128> {
        self.account(asset, account)?;
        let txn = self.read()?;
        let history = txn.open_table(HISTORY).map_err(storage("reading"))?;
        let last = history
            .range((asset, account, 0)..=(asset, account, at))
            .map_err(storage("reading history"))?
            .next_back()
            .transpose()
            .map_err(storage("reading history"))?;
        Ok(last.map_or(0, |(_, v)| v.value().1))
    }

    fn check(&self) -> Result<Vec<String>> {
        Embedded::check(self)
    }
}

/// A durable write transaction that saves redb's allocator state, so a
/// reopen after a crash need not walk the file.
fn begin(db: &Database) -> Result<WriteTransaction> {
    let mut txn = db
        .begin_write()
        .map_err(storage("starting a transaction"))?;
    txn.set_quick_repair(true);
    Ok(txn)
}

fn decode(id: EntryId, raw: &[u8]) -> Result<Entry> {
    serde_json::from_slice(raw).map_err(|e| Error::Corrupt(format!("entry {id}: {e}")))
}
