//! An agent's view ([`Guarded`]): grants decide every call, "not granted"
//! reads the same whether or not the account exists, keys are per agent,
//! entries show only what the agent may read. The cases run against both
//! backends (the guard sits above the trait; this shows the backends give
//! it the same answers); the property runs on the embedded one.

mod common;

use toka_ledger::config::{Grant, Pattern};
use toka_ledger::{ErrorKind, Guarded, ISSUANCE, Ledger};

both_backends!(
    grants_decide_and_hide_existence,
    keys_are_per_agent_and_entries_are_redacted,
);

fn pats(list: &[&str]) -> Vec<Pattern> {
    list.iter()
        .map(|p| match p.strip_suffix('*') {
            Some(prefix) => Pattern::Prefix(prefix.into()),
            None => Pattern::Exact((*p).into()),
        })
        .collect()
}

fn billing() -> Grant {
    Grant {
        mint: pats(&["credits"]),
        burn: pats(&["credits"]),
        debit: pats(&["user/*"]),
        credit: pats(&["user/*", "revenue"]),
        read: pats(&["user/*"]),
    }
}

fn grants_decide_and_hide_existence(l: &dyn Ledger) {
    l.mint("op-1", "credits", "secret", 5).unwrap();
    let g = Guarded::new(l, "billing", billing());
    // A whole-ledger check reads every account: never an agent's.
    assert_eq!(g.check().unwrap_err().kind(), ErrorKind::AccessDenied);
    g.mint("m1", "credits", "user/1", 100).unwrap();
    g.transfer("t1", "credits", "user/1", "revenue", 10)
        .unwrap();
    g.burn("b1", "credits", "user/1", 1).unwrap();
    // The operator's mint counts too.
    assert_eq!(g.issued("credits").unwrap(), 5 + 100 - 1);

    // Not granted: access-denied, for an account that exists and one that
    // does not alike.
    for account in ["secret", "missing"] {
        assert_eq!(
            g.account("credits", account).unwrap_err().kind(),
            ErrorKind::AccessDenied
        );
        assert_eq!(
            g.transfer("t2", "credits", account, "user/1", 1)
                .unwrap_err()
                .kind(),
            ErrorKind::AccessDenied
        );
        assert_eq!(
            g.history("credits", account, None, 10).unwrap_err().kind(),
            ErrorKind::AccessDenied
        );
    }
    assert_eq!(
        g.mint("m2", "usd", "user/1", 1).unwrap_err().kind(),
        ErrorKind::AccessDenied
    );
    assert_eq!(g.issued("usd").unwrap_err().kind(), ErrorKind::AccessDenied);
    // A mint grant lets it read the asset's issuance account.
    assert_eq!(g.account("credits", ISSUANCE).unwrap().balance, -104);
    // Granted but missing: unknown-account.
    assert_eq!(
        g.account("credits", "user/nobody").unwrap_err().kind(),
        ErrorKind::UnknownAccount
    );
    // Listing shows only readable accounts.
    let names: Vec<String> = g
        .accounts("credits", None, 10)
        .unwrap()
        .rows
        .into_iter()
        .map(|a| a.name)
        .collect();
    assert_eq!(names, ["user/1"]);
    assert!(l.check().unwrap().is_empty());
}

fn keys_are_per_agent_and_entries_are_redacted(l: &dyn Ledger) {
    let a = Guarded::new(l, "a", billing());
    let b = Guarded::new(l, "b", billing());
    let ea = a.mint("k", "credits", "user/1", 10).unwrap();
    assert_eq!(ea.key, "k");
    // The same key from another agent is its own operation, not a replay.
    let eb = b.mint("k", "credits", "user/1", 10).unwrap();
    assert_ne!(ea.id, eb.id);
    assert_eq!(a.mint("k", "credits", "user/1", 10).unwrap(), ea);
    assert_eq!(a.lookup("k").unwrap(), Some(ea.clone()));
    // b sees a's entry (it touches user/1), without a's key.
    assert_eq!(b.entry(ea.id).unwrap().unwrap().key, "");
    // A transfer into revenue: the agent may credit it, not read it.
    let t = a.transfer("t", "credits", "user/1", "revenue", 3).unwrap();
    assert_eq!(t.postings.len(), 1);
    assert_eq!(t.postings[0].account, "user/1");
    // An entry touching nothing the agent may read is absent to it.
    let other = l.mint("op", "usd", "secret", 1).unwrap();
    assert_eq!(a.entry(other.id).unwrap(), None);
    // Keys too long for an agent, before scoping.
    let long = "x".repeat(toka_ledger::guard::MAX_AGENT_KEY + 1);
    assert_eq!(
        a.mint(&long, "credits", "user/1", 1).unwrap_err().kind(),
        ErrorKind::Invalid
    );
}

mod denied {
    //! Property: whatever the grant and the operation, the guard lets
    //! through exactly what `Grant::allows` does; a denied operation
    //! changes nothing; a read the grant does not cover answers the same
    //! whether or not the account exists.

    use proptest::prelude::*;
    use toka_ledger::config::{Grant, Pattern};
    use toka_ledger::{Embedded, ErrorKind, Guarded, Ledger, Op};

    const ACCOUNTS: [&str; 4] = ["user/1", "user/2", "revenue", "ghost"];

    fn patterns() -> impl Strategy<Value = Vec<Pattern>> {
        prop::collection::vec(
            prop_oneof![
                Just(Pattern::Prefix("user/".into())),
                Just(Pattern::Exact("revenue".into())),
                Just(Pattern::Exact("user/1".into())),
                Just(Pattern::Prefix(String::new())),
            ],
            0..2,
        )
    }

    fn grant() -> impl Strategy<Value = Grant> {
        let assets = prop::collection::vec(
            prop_oneof![
                Just(Pattern::Exact("credits".into())),
                Just(Pattern::Prefix(String::new()))
            ],
            0..2,
        );
        (assets.clone(), assets, patterns(), patterns(), patterns()).prop_map(
            |(mint, burn, debit, credit, read)| Grant {
                mint,
                burn,
                debit,
                credit,
                read,
            },
        )
    }

    fn op() -> impl Strategy<Value = Op> {
        let asset = prop::sample::select(&["credits", "usd"][..]).prop_map(String::from);
        let account = || prop::sample::select(&ACCOUNTS[..]).prop_map(String::from);
        prop_oneof![
            (asset.clone(), account(), 0..3u128).prop_map(|(asset, account, overdraft)| {
                Op::Open {
                    asset,
                    account,
                    overdraft,
                }
            }),
            (asset.clone(), account(), 1..20u128).prop_map(|(asset, to, amount)| Op::Mint {
                asset,
                to,
                amount
            }),
            (asset.clone(), account(), 1..20u128).prop_map(|(asset, from, amount)| Op::Burn {
                asset,
                from,
                amount
            }),
            (asset, account(), account(), 1..20u128).prop_map(|(asset, from, to, amount)| {
                Op::Transfer {
                    asset,
                    from,
                    to,
                    amount,
                }
            }),
        ]
    }

    /// Every balance, and how many entries there are.
    fn state(l: &Embedded) -> (Vec<Option<i128>>, u64) {
        let mut balances = Vec::new();
        for asset in ["credits", "usd"] {
            for a in ACCOUNTS {
                balances.push(l.account(asset, a).ok().map(|a| a.balance));
            }
        }
        let mut n = 0;
        while l.entry(n + 1).unwrap().is_some() {
            n += 1;
        }
        (balances, n)
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 64,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn the_guard_admits_exactly_the_grant(grant in grant(), ops in prop::collection::vec(op(), 1..30)) {
            let tmp = tempfile::tempdir().unwrap();
            let l = Embedded::open(&tmp.path().join("ledger.redb")).unwrap();
            // Every account but `ghost` exists, in both assets.
            for asset in ["credits", "usd"] {
                for a in &ACCOUNTS[..3] {
                    l.mint(&format!("seed/{asset}/{a}"), asset, a, 50).unwrap();
                }
            }
            let g = Guarded::new(&l, "agent", grant.clone());
            for (i, op) in ops.iter().enumerate() {
                let before = state(&l);
                let got = g.apply(&format!("k{i}"), op);
                if op.validate().is_err() {
                    prop_assert_eq!(got.unwrap_err().kind(), ErrorKind::Invalid);
                } else if !grant.allows(op) {
                    prop_assert_eq!(got.unwrap_err().kind(), ErrorKind::AccessDenied);
                    prop_assert_eq!(g.lookup(&format!("k{i}")).unwrap(), None);
                    prop_assert_eq!(state(&l), before.clone());
                } else if let Err(e) = got {
                    // Granted: the ledger's own answers, never a denial.
                    prop_assert_ne!(e.kind(), ErrorKind::AccessDenied);
                }
                prop_assert!(l.check().unwrap().is_empty());
            }
            for asset in ["credits", "usd"] {
                for a in ACCOUNTS {
                    let got = g.account(asset, a);
                    if !grant.may_read(asset, a) {
                        // `ghost` never exists; the others do: same answer.
                        prop_assert_eq!(got.unwrap_err().kind(), ErrorKind::AccessDenied);
                        prop_assert_eq!(
                            g.balance_at(asset, a, 1).unwrap_err().kind(),
                            ErrorKind::AccessDenied
                        );
                    } else if a == "ghost" && l.account(asset, a).is_err() {
                        prop_assert_eq!(got.unwrap_err().kind(), ErrorKind::UnknownAccount);
                    } else {
                        prop_assert_eq!(got.unwrap(), l.account(asset, a).unwrap());
                    }
                }
            }
        }
    }
}
