//! An agent's view ([`Guarded`]): grants decide every call, "not granted"
//! reads the same whether or not the account exists, keys are per agent,
//! entries show only what the agent may read.

use toka_ledger::config::{Grant, Pattern};
use toka_ledger::{Embedded, ErrorKind, Guarded, ISSUANCE, Ledger};

fn pats(list: &[&str]) -> Vec<Pattern> {
    list.iter()
        .map(|p| match p.strip_suffix('*') {
            Some(prefix) => Pattern::Prefix(prefix.into()),
            None => Pattern::Exact((*p).into()),
        })
        .collect()
}

fn setup() -> (tempfile::TempDir, Embedded) {
    let tmp = tempfile::tempdir().unwrap();
    let l = Embedded::open(&tmp.path().join("ledger.redb")).unwrap();
    (tmp, l)
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

#[test]
fn grants_decide_and_hide_existence() {
    let (_tmp, l) = setup();
    l.mint("op-1", "credits", "secret", 5).unwrap();
    let g = Guarded::new(&l, "billing", billing());
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

#[test]
fn keys_are_per_agent_and_entries_are_redacted() {
    let (_tmp, l) = setup();
    let a = Guarded::new(&l, "a", billing());
    let b = Guarded::new(&l, "b", billing());
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
