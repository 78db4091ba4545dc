//! The host impls called on a [`View`], without wasm: grants and denials
//! (the same answer for "not granted" and "does not exist"), the error
//! cases, the 128-bit halves, and writes bounded by the call's deadline.

use std::path::Path;
use std::time::Duration;

use toka_capability::wait::{WaitDeadline, WaitState};
use toka_core::config::Declared;
use wasmtime::component::ResourceTable;
use wit::Host as _;

use super::*;

/// `billing` (mints `credits` into `user/*`, moves between `user/*` and
/// `revenue`, reads everything), `shop` (may only read `user/1`) and
/// `nobody` (no grant).
struct Fixture {
    _dir: tempfile::TempDir,
    ledger: Ledger,
    ctxs: Ctxs,
    wait: WaitState,
}

fn config(dir: &Path, ledger: &str) -> RuntimeConfig {
    let text = format!(
        r#"
{ledger}

[[agents]]
name = "billing"
ledger_mint = ["credits"]
ledger_burn = ["credits"]
ledger_debit = ["user/*"]
ledger_credit = ["user/*", "revenue"]
ledger_read = ["*"]

[[agents]]
name = "shop"
ledger_read = ["user/1"]

[[agents]]
name = "nobody"
"#
    );
    RuntimeConfig::parse_declared(
        &text,
        Path::new("x.toml"),
        dir,
        &Declared {
            sections: &[config::SECTION],
            agent_keys: Ledger::AGENT_KEYS,
        },
        &|_| None,
    )
    .unwrap()
}

/// Each agent's name and state (`None`: no grant).
type Ctxs = Vec<(String, Option<LedgerCtx>)>;

fn open(config: &RuntimeConfig) -> Result<(Ledger, Ctxs), CapError> {
    let grants: Vec<_> = config
        .agents
        .iter()
        .map(|a| (a, Ledger::grant(a).unwrap()))
        .collect();
    let granted: Vec<_> = grants
        .iter()
        .filter_map(|(a, g)| g.as_ref().map(|g| (*a, g)))
        .collect();
    let ledger = Ledger::open(config, &granted, &mut OpenCx::default())?;
    let ctxs = grants
        .iter()
        .map(|(a, g)| {
            let ctx = g.clone().map(|g| ledger.for_agent(a, g).unwrap());
            (a.name.clone(), ctx)
        })
        .collect();
    Ok((ledger, ctxs))
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let (ledger, ctxs) = open(&config(dir.path(), "[ledger]\npath = \"l.redb\"")).unwrap();
    let mut wait = WaitState::default();
    wait.arm(Duration::from_secs(60));
    Fixture {
        _dir: dir,
        ledger,
        ctxs,
        wait,
    }
}

impl Fixture {
    fn host<'a>(&'a self, agent: &'a str, table: &'a mut ResourceTable) -> LedgerHost<'a> {
        let state = self
            .ctxs
            .iter()
            .find(|(n, _)| n == agent)
            .and_then(|(_, c)| c.as_ref());
        LedgerHost(View {
            agent,
            state,
            table,
            wait: &self.wait,
            // A test fixture's per-instance map; leaked, as tests are short.
            extensions: Box::leak(Box::default()),
        })
    }
}

fn amount(v: u128) -> wit::Amount {
    to_amount(v)
}

/// The error case of `r`, as `Debug` spells it (the bindings' types have
/// no `PartialEq`).
fn err<T: std::fmt::Debug>(r: Answer<T>) -> String {
    match r.unwrap() {
        Err(e) => format!("{e:?}"),
        Ok(v) => panic!("expected an error, got {v:?}"),
    }
}

fn dbg(v: impl std::fmt::Debug) -> String {
    format!("{v:?}")
}

#[test]
fn halves_round_trip_at_the_extremes() {
    for v in [0, 1, u64::MAX as u128, (u64::MAX as u128) + 1, u128::MAX] {
        assert_eq!(from_amount(to_amount(v)), v);
    }
    for v in [0, 1, -1, i128::MIN, i128::MAX, -(1 << 64), (1 << 64) - 1] {
        assert_eq!(from_balance(to_balance(v)), v, "{v}");
    }
    let b = to_balance(-1);
    assert_eq!((b.hi, b.lo), (-1, u64::MAX));
    let a = to_amount(1 << 64);
    assert_eq!((a.hi, a.lo), (1, 0));
}

#[test]
fn a_granted_agent_mints_transfers_and_reads() {
    let f = fixture();
    let mut table = ResourceTable::new();
    let mut h = f.host("billing", &mut table);
    let big = (u64::MAX as u128) * 3;
    let e = h
        .mint("m1".into(), "credits".into(), "user/1".into(), amount(big))
        .unwrap()
        .unwrap();
    assert_eq!(
        (e.id, e.key.as_str(), e.asset.as_str()),
        (1, "m1", "credits")
    );
    // A replay answers the same entry and changes nothing.
    let again = h
        .mint("m1".into(), "credits".into(), "user/1".into(), amount(big))
        .unwrap()
        .unwrap();
    assert_eq!(dbg(&again), dbg(&e));
    let t = h
        .transfer(
            "t1".into(),
            "credits".into(),
            "user/1".into(),
            "revenue".into(),
            amount(5),
        )
        .unwrap()
        .unwrap();
    assert_eq!(t.postings.len(), 2);
    assert_eq!(from_balance(t.postings[0].delta), -5);
    assert_eq!(from_balance(t.postings[0].balance_after), big as i128 - 5);
    let a = h
        .get_account("credits".into(), "user/1".into())
        .unwrap()
        .unwrap();
    assert_eq!(from_balance(a.balance), big as i128 - 5);
    assert_eq!(
        from_amount(h.issued("credits".into()).unwrap().unwrap()),
        big
    );
    let page = h
        .history("credits".into(), "user/1".into(), None, 0)
        .unwrap()
        .unwrap();
    assert_eq!(
        page.rows.iter().map(|r| r.entry).collect::<Vec<_>>(),
        [1, 2]
    );
    assert_eq!(
        from_balance(
            h.balance_at("credits".into(), "user/1".into(), 1)
                .unwrap()
                .unwrap()
        ),
        big as i128
    );
    let accounts = h
        .list_accounts("credits".into(), None, 10)
        .unwrap()
        .unwrap();
    let names: Vec<_> = accounts.rows.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["revenue", "user/1"]);
    assert_eq!(
        h.lookup("t1".into()).unwrap().unwrap().map(|e| e.id),
        Some(2)
    );
    // Each error case is its own answer.
    assert_eq!(
        err(h.transfer(
            "t2".into(),
            "credits".into(),
            "user/2".into(),
            "revenue".into(),
            amount(1)
        )),
        dbg(wit::LedgerError::UnknownAccount)
    );
    assert_eq!(
        err(h.burn("b1".into(), "credits".into(), "user/1".into(), amount(big))),
        dbg(wit::LedgerError::InsufficientFunds)
    );
    assert_eq!(
        err(h.mint("m1".into(), "credits".into(), "user/1".into(), amount(1))),
        dbg(wit::LedgerError::Conflict)
    );
    assert!(
        err(h.mint("m2".into(), "credits".into(), "user/1".into(), amount(0))).contains("Invalid("),
    );
}

#[test]
fn denied_calls_are_denied_whether_the_account_exists_or_not() {
    let f = fixture();
    let mut table = ResourceTable::new();
    let mut h = f.host("billing", &mut table);
    h.mint("m".into(), "credits".into(), "user/1".into(), amount(10))
        .unwrap()
        .unwrap();
    // Outside billing's grant: `revenue` may be credited, never debited;
    // `usd` may not be minted.
    assert_eq!(
        err(h.transfer(
            "x".into(),
            "credits".into(),
            "revenue".into(),
            "user/1".into(),
            amount(1)
        )),
        dbg(wit::LedgerError::AccessDenied)
    );
    assert_eq!(
        err(h.mint("y".into(), "usd".into(), "user/1".into(), amount(1))),
        dbg(wit::LedgerError::AccessDenied)
    );

    // `shop` reads user/1 only: user/2 reads as denied whether it exists
    // (after a mint) or not, exactly as an account that never existed.
    let mut table = ResourceTable::new();
    let mut shop = f.host("shop", &mut table);
    assert_eq!(
        from_balance(
            shop.get_account("credits".into(), "user/1".into())
                .unwrap()
                .unwrap()
                .balance
        ),
        10
    );
    let missing = err(shop.get_account("credits".into(), "user/9".into()));
    let mut table = ResourceTable::new();
    f.host("billing", &mut table)
        .mint("m2".into(), "credits".into(), "user/2".into(), amount(1))
        .unwrap()
        .unwrap();
    let mut table = ResourceTable::new();
    let mut shop = f.host("shop", &mut table);
    let existing = err(shop.get_account("credits".into(), "user/2".into()));
    assert_eq!(missing, dbg(wit::LedgerError::AccessDenied));
    assert_eq!(existing, missing);
    assert_eq!(
        err(shop.history("credits".into(), "user/2".into(), None, 10)),
        dbg(wit::LedgerError::AccessDenied)
    );
    assert_eq!(
        err(shop.issued("credits".into())),
        dbg(wit::LedgerError::AccessDenied)
    );
    assert_eq!(
        err(shop.mint("z".into(), "credits".into(), "user/1".into(), amount(1))),
        dbg(wit::LedgerError::AccessDenied)
    );
    // Its listing holds only what it may read.
    let page = shop
        .list_accounts("credits".into(), None, 100)
        .unwrap()
        .unwrap();
    assert_eq!(
        page.rows
            .iter()
            .map(|a| a.name.as_str())
            .collect::<Vec<_>>(),
        ["user/1"]
    );
    // Another agent's key is not its own: the lookup finds nothing.
    assert!(shop.lookup("m".into()).unwrap().unwrap().is_none());

    // No grant at all: every call, read or write.
    let mut table = ResourceTable::new();
    let mut h = f.host("nobody", &mut table);
    assert_eq!(
        err(h.get_account("credits".into(), "user/1".into())),
        dbg(wit::LedgerError::AccessDenied)
    );
    assert_eq!(
        err(h.mint("k".into(), "credits".into(), "user/1".into(), amount(1))),
        dbg(wit::LedgerError::AccessDenied)
    );
    assert_eq!(
        err(h.lookup("m".into())),
        dbg(wit::LedgerError::AccessDenied)
    );
    assert_eq!(
        f.ledger
            .backend()
            .account("credits", "user/1")
            .unwrap()
            .balance,
        10
    );
}

#[test]
fn a_write_past_the_calls_deadline_faults_and_writes_nothing() {
    let mut f = fixture();
    f.wait.arm(Duration::ZERO);
    let mut table = ResourceTable::new();
    let mut h = f.host("billing", &mut table);
    let e = h
        .mint("m".into(), "credits".into(), "user/1".into(), amount(1))
        .expect_err("a spent deadline refuses to wait");
    assert!(e.downcast_ref::<WaitDeadline>().is_some(), "{e:#}");
    assert!(e.to_string().contains("toka:runtime/ledger.mint"), "{e}");
    assert_eq!(f.ledger.backend().lookup("7:billing/m").unwrap(), None);
}

#[test]
fn a_grant_without_a_ledger_is_the_operators_error() {
    let dir = tempfile::tempdir().unwrap();
    let e = open(&config(dir.path(), "")).unwrap_err();
    assert!(e.is_config(), "{e}");
    assert!(e.to_string().contains("set `[ledger] path`"), "{e}");
    assert!(
        Ledger::describe(
            &Ledger::grant(&config(dir.path(), "").agents[0])
                .unwrap()
                .unwrap()
        )
        .starts_with("ledger: mint credits; burn credits; debit user/*;"),
    );
}
