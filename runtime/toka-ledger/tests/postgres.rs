//! What only the PostgreSQL backend has: versioned migrations (applied once
//! even when several processes connect at once), its connection errors,
//! `[ledger] backend = "postgres"`, and connections the server drops. The
//! ledger's semantics are the other suites' (basics, properties,
//! concurrency), which run against it too.

mod common;

use std::sync::{Arc, Barrier};
use std::thread;

use toka_ledger::config::{Backend, LedgerConfig, open_backend};
use toka_ledger::postgres::MIGRATIONS;
use toka_ledger::{Error, ErrorKind, Ledger, Postgres};

fn versions(url: &str) -> Vec<i64> {
    let mut c = postgres::Client::connect(url, postgres::NoTls).unwrap();
    c.query(
        "SELECT version FROM toka_ledger_schema ORDER BY version",
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

#[test]
fn migrations_run_once_when_many_connect_at_once() {
    let url = common::pg::fresh_database();
    let n = 6;
    let barrier = Arc::new(Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let (url, barrier) = (url.clone(), Arc::clone(&barrier));
            thread::spawn(move || {
                barrier.wait();
                let l = Postgres::connect(&url).unwrap();
                l.mint(&format!("k{i}"), "usd", "a", 1).unwrap();
                l.schema_version().unwrap()
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), MIGRATIONS.len() as u64);
    }
    let all: Vec<i64> = (1..=MIGRATIONS.len() as i64).collect();
    assert_eq!(versions(&url), all);
    // Connecting again applies nothing and keeps the data.
    let l = Postgres::connect(&url).unwrap();
    assert_eq!(versions(&url), all);
    assert_eq!(l.account("usd", "a").unwrap().balance, n as i128);
    assert!(l.check().unwrap().is_empty());
}

#[test]
fn a_newer_schema_is_refused() {
    let url = common::pg::fresh_database();
    drop(Postgres::connect(&url).unwrap());
    let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    c.execute(
        "INSERT INTO toka_ledger_schema (version) VALUES ($1)",
        &[&(MIGRATIONS.len() as i64 + 1)],
    )
    .unwrap();
    let err = Postgres::connect(&url).unwrap_err();
    assert!(matches!(err, Error::Corrupt(_)), "{err}");
    assert!(err.to_string().contains("schema version"), "{err}");
}

#[test]
fn connection_failures_are_typed() {
    let err = Postgres::connect("postgresql://u@127.0.0.1:notaport/x").unwrap_err();
    assert!(matches!(err, Error::Postgres { .. }), "{err}");
    assert_eq!(err.kind(), ErrorKind::Internal);
    // A port with nothing listening (bound and closed: free a moment ago).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = Postgres::connect(&format!(
        "host=127.0.0.1 port={port} user=postgres connect_timeout=5"
    ))
    .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Postgres {
                action: "connecting to the database",
                ..
            }
        ),
        "{err}"
    );
    // A database that does not exist.
    let url = common::pg::server().url("no_such_database");
    let err = Postgres::connect(&url).unwrap_err();
    assert!(err.to_string().contains("no_such_database"), "{err}");
}

#[test]
fn a_dropped_connection_is_replaced() {
    let url = common::pg::fresh_database();
    let l = Postgres::connect_with(&url, 1).unwrap();
    l.mint("k1", "usd", "a", 5).unwrap();
    let kill = || {
        // The server ends the pool's only connection, as a restart or an
        // idle timeout would; the 5 s argument waits until it is gone.
        // Client backends only: an autovacuum worker may be in the
        // database too.
        let mut admin = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        let killed: Vec<bool> = admin
            .query(
                "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity \
                 WHERE datname = current_database() AND pid <> pg_backend_pid() \
                 AND backend_type = 'client backend'",
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(killed, [true]);
    };
    // A read on the dead connection runs again on a fresh one.
    kill();
    assert_eq!(l.account("usd", "a").unwrap().balance, 5);
    assert_eq!(l.reconnects(), 1);
    // So does an operation, which lands once.
    kill();
    let e = l.mint("k2", "usd", "a", 1).unwrap();
    assert_eq!(l.reconnects(), 2);
    assert_eq!(l.mint("k2", "usd", "a", 1).unwrap(), e);
    assert_eq!(l.account("usd", "a").unwrap().balance, 6);
    assert!(l.check().unwrap().is_empty());
}

#[test]
fn the_config_opens_postgres() {
    let url = common::pg::fresh_database();
    let config = LedgerConfig {
        backend: Backend::Postgres,
        url: Some(url.clone()),
        ..LedgerConfig::default()
    };
    let l = open_backend(&config).unwrap();
    l.mint("k", "usd", "a", 3).unwrap();
    let again = Postgres::connect(&url).unwrap();
    assert_eq!(again.account("usd", "a").unwrap().balance, 3);
    let missing = LedgerConfig {
        backend: Backend::Postgres,
        ..LedgerConfig::default()
    };
    assert!(matches!(open_backend(&missing), Err(Error::Config(_))));
}
