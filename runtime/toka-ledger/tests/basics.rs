//! The model's rules, one case each, against both backends: each body
//! takes a `&dyn Ledger` and runs as `name::embedded` and `name::postgres`
//! (a fresh redb file, a fresh database on the test PostgreSQL).

mod common;

use toka_ledger::{Embedded, Error, ErrorKind, ISSUANCE, Ledger, MAX_AMOUNT};

both_backends!(
    mint_transfer_burn_post_double_entries,
    credits_create_accounts_debits_and_reads_do_not,
    no_negative_balance_without_an_overdraft,
    idempotency_keys_replay_or_conflict,
    invalid_arguments,
    amounts_round_trip_at_the_limits,
    history_pages_and_balance_at,
    accounts_pages_skip_issuance_and_other_assets,
);

fn kind<T: std::fmt::Debug>(r: Result<T, Error>) -> ErrorKind {
    r.unwrap_err().kind()
}

fn mint_transfer_burn_post_double_entries(l: &dyn Ledger) {
    let e = l.mint("k1", "usd", "alice", 100).unwrap();
    assert_eq!(e.id, 1);
    assert_eq!(e.postings.len(), 2);
    assert_eq!(e.postings[0].account, ISSUANCE);
    assert_eq!(e.postings[0].balance, -100);
    assert_eq!(e.postings[1].balance, 100);
    let e = l.transfer("k2", "usd", "alice", "bob", 30).unwrap();
    assert_eq!(e.postings.iter().map(|p| p.delta).sum::<i128>(), 0);
    l.burn("k3", "usd", "bob", 10).unwrap();
    assert_eq!(l.account("usd", "alice").unwrap().balance, 70);
    assert_eq!(l.account("usd", "bob").unwrap().balance, 20);
    assert_eq!(l.issued("usd").unwrap(), 90);
    assert_eq!(l.issued("eur").unwrap(), 0);
    assert!(l.check().unwrap().is_empty());
}

fn credits_create_accounts_debits_and_reads_do_not(l: &dyn Ledger) {
    assert_eq!(kind(l.account("usd", "alice")), ErrorKind::UnknownAccount);
    assert_eq!(
        kind(l.burn("k", "usd", "alice", 1)),
        ErrorKind::UnknownAccount
    );
    assert_eq!(
        kind(l.transfer("k", "usd", "alice", "bob", 1)),
        ErrorKind::UnknownAccount
    );
    // The refused ops left nothing, not even the credited side.
    assert_eq!(kind(l.account("usd", "bob")), ErrorKind::UnknownAccount);
    l.mint("k", "usd", "alice", 5).unwrap();
    l.transfer("k2", "usd", "alice", "bob", 5).unwrap();
    let bob = l.account("usd", "bob").unwrap();
    assert_eq!((bob.balance, bob.overdraft), (5, 0));
}

fn no_negative_balance_without_an_overdraft(l: &dyn Ledger) {
    l.mint("m", "usd", "alice", 10).unwrap();
    let err = l.transfer("t", "usd", "alice", "bob", 11).unwrap_err();
    assert!(
        matches!(
            err,
            Error::InsufficientFunds {
                balance: 10,
                amount: 11,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(l.account("usd", "alice").unwrap().balance, 10);
    // The refused key is free: a retry with another amount succeeds.
    l.transfer("t", "usd", "alice", "bob", 10).unwrap();
    assert_eq!(
        kind(l.burn("b", "usd", "alice", 1)),
        ErrorKind::InsufficientFunds
    );

    l.open("o", "usd", "carol", 50).unwrap();
    l.transfer("c1", "usd", "carol", "bob", 50).unwrap();
    assert_eq!(l.account("usd", "carol").unwrap().balance, -50);
    assert_eq!(
        kind(l.transfer("c2", "usd", "carol", "bob", 1)),
        ErrorKind::InsufficientFunds
    );
    assert_eq!(kind(l.open("o2", "usd", "carol", 1)), ErrorKind::Conflict);
    assert!(l.check().unwrap().is_empty());
}

fn idempotency_keys_replay_or_conflict(l: &dyn Ledger) {
    let first = l.mint("pay-1", "usd", "alice", 10).unwrap();
    let again = l.mint("pay-1", "usd", "alice", 10).unwrap();
    assert_eq!(first, again);
    assert_eq!(l.account("usd", "alice").unwrap().balance, 10);
    assert_eq!(
        kind(l.mint("pay-1", "usd", "alice", 11)),
        ErrorKind::Conflict
    );
    assert_eq!(
        kind(l.burn("pay-1", "usd", "alice", 10)),
        ErrorKind::Conflict
    );
    // A replay answers with the original balances, not today's.
    l.mint("pay-2", "usd", "alice", 5).unwrap();
    assert_eq!(l.mint("pay-1", "usd", "alice", 10).unwrap(), first);
    assert_eq!(l.lookup("pay-1").unwrap(), Some(first));
    assert_eq!(l.lookup("nope").unwrap(), None);
    assert_eq!(l.entry(3).unwrap(), None);
}

fn invalid_arguments(l: &dyn Ledger) {
    for r in [
        l.mint("k", "usd", "alice", 0),
        l.mint("k", "usd", "alice", MAX_AMOUNT + 1),
        l.mint("k", "usd", ISSUANCE, 1),
        l.mint("k", "", "alice", 1),
        l.mint("k", "us d", "alice", 1),
        l.mint("", "usd", "alice", 1),
        l.mint("k\n", "usd", "alice", 1),
        l.transfer("k", "usd", "alice", "alice", 1),
        l.open("k", "usd", "alice", MAX_AMOUNT + 1),
    ] {
        assert_eq!(kind(r), ErrorKind::Invalid);
    }
    l.mint("k", "usd", "alice", MAX_AMOUNT).unwrap();
    // MAX_AMOUNT is in circulation now: no more can be minted.
    assert_eq!(kind(l.mint("k2", "usd", "bob", 1)), ErrorKind::Invalid);
    l.burn("k3", "usd", "alice", 1).unwrap();
    l.mint("k4", "usd", "bob", 1).unwrap();
    assert!(l.check().unwrap().is_empty());
}

fn amounts_round_trip_at_the_limits(l: &dyn Ledger) {
    // i128's extremes survive storage exactly (PostgreSQL: NUMERIC(39,0)).
    let max = i128::MAX;
    l.open("o", "usd", "deep", MAX_AMOUNT).unwrap();
    let e = l.mint("m", "usd", "alice", MAX_AMOUNT).unwrap();
    assert_eq!(e.postings[0].balance, -max);
    let e = l.transfer("t", "usd", "deep", "bob", MAX_AMOUNT).unwrap();
    assert_eq!(e.postings[0].balance, -max);
    assert_eq!(l.account("usd", "deep").unwrap().balance, -max);
    assert_eq!(l.account("usd", "deep").unwrap().overdraft, MAX_AMOUNT);
    assert_eq!(l.account("usd", "alice").unwrap().balance, max);
    assert_eq!(l.account("usd", "bob").unwrap().balance, max);
    assert_eq!(l.issued("usd").unwrap(), MAX_AMOUNT);
    assert_eq!(l.lookup("t").unwrap(), Some(e.clone()));
    assert_eq!(l.entry(e.id).unwrap(), Some(e));
    assert_eq!(l.balance_at("usd", "deep", 3).unwrap(), -max);
    // bob + 1 would overflow i128: refused as invalid, nothing written.
    assert_eq!(
        kind(l.transfer("t2", "usd", "alice", "bob", 1)),
        ErrorKind::Invalid
    );
    assert_eq!(l.account("usd", "bob").unwrap().balance, max);
    assert!(l.check().unwrap().is_empty());
}

fn history_pages_and_balance_at(l: &dyn Ledger) {
    let mut ids = Vec::new();
    for i in 1..=25u128 {
        ids.push(l.mint(&format!("m{i}"), "usd", "alice", i).unwrap().id);
        // Entries of other accounts in between, so ids are not contiguous.
        l.mint(&format!("o{i}"), "usd", "bob", 1).unwrap();
    }
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = l.history("usd", "alice", after, 10).unwrap();
        assert!(page.rows.len() <= 10);
        seen.extend(page.rows.iter().map(|r| r.entry));
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(seen, ids);
    let mut expected = 0;
    for (i, id) in ids.iter().enumerate() {
        expected += i as i128 + 1;
        assert_eq!(l.balance_at("usd", "alice", *id).unwrap(), expected);
        // The next entry is bob's: alice's balance stays.
        assert_eq!(l.balance_at("usd", "alice", id + 1).unwrap(), expected);
    }
    assert_eq!(l.balance_at("usd", "alice", 0).unwrap(), 0);
    assert_eq!(
        kind(l.balance_at("usd", "nobody", 1)),
        ErrorKind::UnknownAccount
    );
}

fn accounts_pages_skip_issuance_and_other_assets(l: &dyn Ledger) {
    for n in ["a", "b", "c", "d", "e"] {
        l.mint(&format!("usd-{n}"), "usd", n, 1).unwrap();
        l.mint(&format!("eur-{n}"), "eur", n, 1).unwrap();
    }
    l.mint("zz", "usdx", "zzz", 1).unwrap();
    let p1 = l.accounts("usd", None, 2).unwrap();
    let names = |p: &toka_ledger::Page<toka_ledger::Account, String>| {
        p.rows.iter().map(|a| a.name.clone()).collect::<Vec<_>>()
    };
    assert_eq!(names(&p1), ["a", "b"]);
    let p2 = l.accounts("usd", p1.next.as_deref(), 2).unwrap();
    assert_eq!(names(&p2), ["c", "d"]);
    let p3 = l.accounts("usd", p2.next.as_deref(), 2).unwrap();
    assert_eq!(names(&p3), ["e"]);
    assert_eq!(p3.next, None);
}

#[test]
fn reopen_keeps_everything_and_refuses_a_second_handle() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("sub/ledger.redb");
    let first = {
        let l = Embedded::open(&path).unwrap();
        assert!(matches!(Embedded::open(&path), Err(Error::InUse { .. })));
        l.mint("k", "usd", "alice", 7).unwrap()
    };
    let l = Embedded::open(&path).unwrap();
    assert_eq!(l.account("usd", "alice").unwrap().balance, 7);
    assert_eq!(l.lookup("k").unwrap(), Some(first.clone()));
    let e = l.mint("k2", "usd", "alice", 1).unwrap();
    assert_eq!(e.id, first.id + 1);
}
