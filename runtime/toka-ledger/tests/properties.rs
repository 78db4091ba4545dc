//! Property tests of the ledger's invariants, the same steps and checks
//! against both backends (a real redb file per case; a fresh database on a
//! real PostgreSQL per case), next to a model kept in plain maps:
//!
//! - total issued = the sum of the balances, per asset, after every step;
//! - no balance below zero unless its account has an overdraft, and never
//!   below that;
//! - replaying a key with its operation returns the original entry and
//!   changes nothing; reusing it for another operation is a conflict;
//! - an operation is all or nothing: a refused one (including one refused
//!   at its second posting, by an overflow) changes no balance, no history
//!   and no key;
//! - the backend agrees with the model on every answer and balance.

mod common;

use std::collections::{BTreeMap, HashMap};

use common::Backend;
use proptest::prelude::*;
use toka_ledger::{Entry, ErrorKind, ISSUANCE, Ledger, MAX_AMOUNT, Op, WideSum};

const ASSETS: [&str; 2] = ["usd", "eur"];
const ACCOUNTS: [&str; 4] = ["a", "b", "user/c", "d"];

#[derive(Debug, Clone)]
enum Step {
    /// A fresh key for an operation.
    Fresh(Op),
    /// Replay the n-th (modulo) key applied so far with its operation.
    Replay(usize),
    /// Reuse the n-th key applied so far for this operation.
    Reuse(usize, Op),
}

fn amount() -> impl Strategy<Value = u128> {
    // Mostly small (so funds run out and overdrafts bite), sometimes the
    // largest amount (so balances and issuance overflow).
    prop_oneof![
        8 => 1..=60u128,
        1 => Just(MAX_AMOUNT),
        1 => (MAX_AMOUNT - 5)..=MAX_AMOUNT,
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let asset = prop::sample::select(&ASSETS[..]).prop_map(String::from);
    let account = || prop::sample::select(&ACCOUNTS[..]).prop_map(String::from);
    prop_oneof![
        1 => (asset.clone(), account(), prop_oneof![Just(0u128), 1..=100u128])
            .prop_map(|(asset, account, overdraft)| Op::Open { asset, account, overdraft }),
        3 => (asset.clone(), account(), amount())
            .prop_map(|(asset, to, amount)| Op::Mint { asset, to, amount }),
        2 => (asset.clone(), account(), amount())
            .prop_map(|(asset, from, amount)| Op::Burn { asset, from, amount }),
        // from == to is allowed here: the backend must refuse it as invalid.
        5 => (asset, account(), account(), amount())
            .prop_map(|(asset, from, to, amount)| Op::Transfer { asset, from, to, amount }),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => op().prop_map(Step::Fresh),
        1 => any::<usize>().prop_map(Step::Replay),
        1 => (any::<usize>(), op()).prop_map(|(n, op)| Step::Reuse(n, op)),
    ]
}

/// The model: balances and overdrafts, keyed `(asset, account)`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Model {
    accounts: BTreeMap<(String, String), (i128, u128)>,
    entries: u64,
}

impl Model {
    /// Applies `op` to a copy and returns it, or the kind of refusal.
    fn apply(&self, op: &Op) -> Result<Model, ErrorKind> {
        let mut next = self.clone();
        let asset = op.asset().to_owned();
        let get = |m: &Model, a: &str| m.accounts.get(&(asset.clone(), a.to_owned())).copied();
        // Each posting, debit first: (account, delta, may create).
        let postings: Vec<(&str, i128, bool)> = match op {
            Op::Open {
                account, overdraft, ..
            } => {
                if get(self, account).is_some() {
                    return Err(ErrorKind::Conflict);
                }
                next.accounts
                    .insert((asset.clone(), account.clone()), (0, *overdraft));
                vec![]
            }
            Op::Mint { to, amount, .. } => {
                let a = *amount as i128;
                vec![(ISSUANCE, -a, true), (to, a, true)]
            }
            Op::Burn { from, amount, .. } => {
                let a = *amount as i128;
                vec![(from, -a, false), (ISSUANCE, a, true)]
            }
            Op::Transfer {
                from, to, amount, ..
            } => {
                if from == to {
                    return Err(ErrorKind::Invalid);
                }
                let a = *amount as i128;
                vec![(from, -a, false), (to, a, true)]
            }
        };
        for (account, delta, may_create) in postings {
            let (balance, overdraft) = match get(&next, account) {
                Some(row) => row,
                None if may_create => (0, 0),
                None => return Err(ErrorKind::UnknownAccount),
            };
            let after = balance.checked_add(delta).ok_or(ErrorKind::Invalid)?;
            if account == ISSUANCE && (after > 0 || after.unsigned_abs() > MAX_AMOUNT) {
                return Err(ErrorKind::Invalid);
            }
            if account != ISSUANCE && after < 0 && after.unsigned_abs() > overdraft {
                return Err(ErrorKind::InsufficientFunds);
            }
            next.accounts
                .insert((asset.clone(), account.to_owned()), (after, overdraft));
        }
        next.entries += 1;
        Ok(next)
    }
}

/// Everything the backend holds that an operation could change.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    accounts: BTreeMap<(String, String), (i128, u128)>,
    history: BTreeMap<(String, String), Vec<toka_ledger::HistoryRow>>,
    entries: u64,
}

fn snapshot(l: &dyn Ledger) -> Snapshot {
    let mut accounts = BTreeMap::new();
    let mut history = BTreeMap::new();
    for asset in ASSETS {
        let mut names: Vec<String> = ACCOUNTS.iter().map(|s| s.to_string()).collect();
        names.push(ISSUANCE.into());
        for name in names {
            if let Ok(a) = l.account(asset, &name) {
                accounts.insert((asset.to_owned(), name.clone()), (a.balance, a.overdraft));
                let h = l.history(asset, &name, None, 1000).unwrap();
                assert_eq!(h.next, None, "more history than one test makes");
                history.insert((asset.to_owned(), name), h.rows);
            }
        }
    }
    let mut entries = 0;
    while l.entry(entries + 1).unwrap().is_some() {
        entries += 1;
    }
    Snapshot {
        accounts,
        history,
        entries,
    }
}

/// The invariants, read back from the backend.
fn check_invariants(l: &dyn Ledger, model: &Model) -> Result<(), TestCaseError> {
    let problems = l.check().unwrap();
    prop_assert!(problems.is_empty(), "{:#?}", problems);
    for asset in ASSETS {
        let page = l.accounts(asset, None, 1000).unwrap();
        let mut sum = WideSum::default();
        for a in &page.rows {
            prop_assert!(
                a.balance >= 0 || a.balance.unsigned_abs() <= a.overdraft,
                "{}/{}: {} below overdraft {}",
                asset,
                a.name,
                a.balance,
                a.overdraft
            );
            if a.overdraft == 0 {
                prop_assert!(a.balance >= 0);
            }
            sum.add(a.balance);
            prop_assert_eq!(
                model.accounts.get(&(asset.to_owned(), a.name.clone())),
                Some(&(a.balance, a.overdraft))
            );
        }
        let issued = l.issued(asset).unwrap();
        let sum = sum.get();
        prop_assert_eq!(i128::try_from(issued).ok(), sum, "{}: issued", asset);
        let model_issued = model
            .accounts
            .get(&(asset.to_owned(), ISSUANCE.to_owned()))
            .map_or(0, |(b, _)| -b);
        prop_assert_eq!(Some(model_issued), sum);
        let model_count = model
            .accounts
            .keys()
            .filter(|(a, n)| a == asset && n != ISSUANCE)
            .count();
        prop_assert_eq!(model_count, page.rows.len());
    }
    Ok(())
}

/// Applies `steps` to a fresh ledger of `backend` and to the model,
/// checking everything after each step.
fn run_steps(backend: Backend, steps: &[Step]) -> Result<(), TestCaseError> {
    let fresh = backend.fresh();
    let l: &dyn Ledger = &*fresh;
    let mut model = Model::default();
    let mut applied: Vec<(String, Entry)> = Vec::new();
    let mut keys: HashMap<String, Op> = HashMap::new();
    for (i, step) in steps.iter().enumerate() {
        let before = snapshot(l);
        match step {
            Step::Fresh(op) => {
                let key = format!("key-{i}");
                let got = l.apply(&key, op);
                match (model.apply(op), got) {
                    (Ok(next), Ok(entry)) => {
                        prop_assert_eq!(entry.id, next.entries);
                        prop_assert_eq!(&entry.op, op);
                        for p in &entry.postings {
                            prop_assert_eq!(
                                next.accounts
                                    .get(&(op.asset().to_owned(), p.account.clone()))
                                    .map(|r| r.0),
                                Some(p.balance)
                            );
                        }
                        model = next;
                        keys.insert(key.clone(), op.clone());
                        applied.push((key, entry));
                    }
                    (Err(kind), Err(e)) => {
                        prop_assert_eq!(kind, e.kind(), "{}", e);
                        // All or nothing, and the key stays free.
                        prop_assert_eq!(&snapshot(l), &before);
                        prop_assert_eq!(l.lookup(&key).unwrap(), None);
                    }
                    (want, got) => {
                        prop_assert!(false, "model {:?}, backend {:?}", want.map(|_| ()), got)
                    }
                }
            }
            Step::Replay(n) => {
                if applied.is_empty() {
                    continue;
                }
                let (key, entry) = &applied[n % applied.len()];
                let again = l.apply(key, &entry.op).unwrap();
                prop_assert_eq!(&again, entry);
                prop_assert_eq!(&snapshot(l), &before);
            }
            Step::Reuse(n, op) => {
                if applied.is_empty() {
                    continue;
                }
                let (key, entry) = &applied[n % applied.len()];
                let got = l.apply(key, op);
                if op.validate().is_err() {
                    // Arguments are checked before the key is looked up.
                    prop_assert_eq!(got.unwrap_err().kind(), ErrorKind::Invalid);
                } else if *op == keys[key] {
                    prop_assert_eq!(&got.unwrap(), entry);
                } else {
                    prop_assert_eq!(got.unwrap_err().kind(), ErrorKind::Conflict);
                }
                prop_assert_eq!(&snapshot(l), &before);
            }
        }
        check_invariants(l, &model)?;
    }
    // balance_at agrees with a replay of the journal.
    let mut running: HashMap<(String, String), i128> = HashMap::new();
    for (_, entry) in &applied {
        for p in &entry.postings {
            let key = (entry.op.asset().to_owned(), p.account.clone());
            let b = running.entry(key.clone()).or_default();
            *b += p.delta;
            prop_assert_eq!(*b, p.balance);
            prop_assert_eq!(l.balance_at(&key.0, &key.1, entry.id).unwrap(), *b);
        }
    }
    Ok(())
}

proptest! {
    // No regressions file: a failure prints its minimal input, which a
    // case in tests/basics.rs should then pin.
    #![proptest_config(ProptestConfig {
        cases: 128,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn embedded_invariants_hold_at_every_step(steps in prop::collection::vec(step(), 1..60)) {
        run_steps(Backend::Embedded, &steps)?;
    }
}

proptest! {
    // Fewer cases: each is a new database and every step a few round
    // trips, and the suite should stay well under a minute.
    #![proptest_config(ProptestConfig {
        cases: 24,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn postgres_invariants_hold_at_every_step(steps in prop::collection::vec(step(), 1..60)) {
        run_steps(Backend::Postgres, &steps)?;
    }
}
