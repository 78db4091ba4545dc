//! Test and benchmark guest for the `ledger` capability.
//!
//! - An event whose kind ends in `.transfer` moves 1 unit of the `asset`
//!   its `init` config names from `from` to `to`, under the idempotency key
//!   `e<event id>`, and publishes nothing (`toka bench`'s `ledger_transfer`);
//!   a refused transfer fails the event.
//! - Any other event's payload is a command; its outcome is published as
//!   `ledger.result`: `ok:<text>` or `err:<ledger-error case>`.
//!
//! Commands (arguments separated by single spaces; amounts in decimal):
//! `open KEY ASSET ACCOUNT OVERDRAFT`, `mint KEY ASSET TO AMOUNT`,
//! `burn KEY ASSET FROM AMOUNT`, `transfer KEY ASSET FROM TO AMOUNT`,
//! `balance ASSET ACCOUNT`, `history ASSET ACCOUNT [AFTER]`, `lookup KEY`,
//! `issued ASSET`, `accounts ASSET`, `at ASSET ACCOUNT ENTRY`.
//! An entry reads `entry=<id> <account>=<balance after>...`.

wit_bindgen::generate!({ world: "agent", path: "../../wit", generate_all });

use std::cell::RefCell;

use exports::toka::runtime::handler::Guest;
use toka::runtime::bus::publish;
use toka::runtime::ledger::{self, Amount, Balance, Entry, LedgerError};
use toka::runtime::types::Event;

thread_local! {
    /// `(asset, from, to)` for `.transfer` events.
    static TRANSFER: RefCell<(String, String, String)> = RefCell::default();
}

fn amount(text: &str) -> Result<Amount, String> {
    let v: u128 = text.parse().map_err(|e| format!("amount {text}: {e}"))?;
    Ok(Amount {
        hi: (v >> 64) as u64,
        lo: v as u64,
    })
}

fn balance(b: Balance) -> i128 {
    (i128::from(b.hi) << 64) | i128::from(b.lo)
}

fn describe(e: LedgerError) -> String {
    match e {
        LedgerError::AccessDenied => "access-denied".into(),
        LedgerError::InsufficientFunds => "insufficient-funds".into(),
        LedgerError::Conflict => "conflict".into(),
        LedgerError::UnknownAccount => "unknown-account".into(),
        LedgerError::Invalid(m) => format!("invalid:{m}"),
        LedgerError::Other(m) => format!("other:{m}"),
    }
}

fn entry(e: &Entry) -> String {
    let mut out = format!("entry={}", e.id);
    for p in &e.postings {
        out.push_str(&format!(" {}={}", p.account, balance(p.balance_after)));
    }
    out
}

fn run(command: &str) -> Result<Result<String, LedgerError>, String> {
    let w: Vec<&str> = command.split(' ').collect();
    let arg = |i: usize| w.get(i).copied().unwrap_or("");
    Ok(match w[0] {
        "open" => ledger::open(arg(1), arg(2), arg(3), amount(arg(4))?).map(|e| entry(&e)),
        "mint" => ledger::mint(arg(1), arg(2), arg(3), amount(arg(4))?).map(|e| entry(&e)),
        "burn" => ledger::burn(arg(1), arg(2), arg(3), amount(arg(4))?).map(|e| entry(&e)),
        "transfer" => {
            ledger::transfer(arg(1), arg(2), arg(3), arg(4), amount(arg(5))?).map(|e| entry(&e))
        }
        "balance" => ledger::get_account(arg(1), arg(2)).map(|a| balance(a.balance).to_string()),
        "history" => {
            let after = w.get(3).map(|s| s.parse::<u64>()).transpose();
            let after = after.map_err(|e| e.to_string())?;
            ledger::history(arg(1), arg(2), after, 1000).map(|p| {
                p.rows
                    .iter()
                    .map(|r| format!("{}:{}", r.entry, balance(r.delta)))
                    .collect::<Vec<_>>()
                    .join(",")
            })
        }
        "at" => {
            let at = arg(3).parse::<u64>().map_err(|e| e.to_string())?;
            ledger::balance_at(arg(1), arg(2), at).map(|b| balance(b).to_string())
        }
        "lookup" => ledger::lookup(arg(1)).map(|e| e.map_or("none".into(), |e| entry(&e))),
        "issued" => ledger::issued(arg(1))
            .map(|a| ((u128::from(a.hi) << 64) | u128::from(a.lo)).to_string()),
        "accounts" => ledger::list_accounts(arg(1), None, 1000).map(|p| {
            p.rows
                .iter()
                .map(|a| format!("{}={}", a.name, balance(a.balance)))
                .collect::<Vec<_>>()
                .join(",")
        }),
        other => return Err(format!("unknown command {other}")),
    })
}

struct Probe;

impl Guest for Probe {
    fn init(config: Vec<(String, String)>) -> Result<(), String> {
        let get = |k: &str| {
            config
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        TRANSFER.set((get("asset"), get("from"), get("to")));
        Ok(())
    }

    fn handle(event: Event) -> Result<(), String> {
        if event.kind.ends_with(".transfer") {
            let one = Amount { hi: 0, lo: 1 };
            return TRANSFER.with_borrow(|(asset, from, to)| {
                ledger::transfer(&format!("e{}", event.id), asset, from, to, one)
                    .map(drop)
                    .map_err(describe)
            });
        }
        let command = String::from_utf8_lossy(&event.payload).into_owned();
        let text = match run(&command)? {
            Ok(ok) => format!("ok:{ok}"),
            Err(e) => format!("err:{}", describe(e)),
        };
        publish("ledger.result", text.as_bytes()).map_err(|e| format!("{e:?}"))?;
        Ok(())
    }
}

export!(Probe);
