//! What the suites share: a fresh ledger of either backend, so each suite
//! runs the identical checks against the embedded file and a real
//! PostgreSQL ([`pg`]).
// Each test binary includes this module and uses only part of it.
#![allow(dead_code)]

pub mod pg;

use std::sync::Arc;

use toka_ledger::{Embedded, Ledger, Postgres};

/// A fresh, empty ledger, and what keeps it alive (the embedded backend's
/// temporary directory).
pub struct Fresh {
    pub ledger: Arc<dyn Ledger>,
    _dir: Option<tempfile::TempDir>,
}

impl std::ops::Deref for Fresh {
    type Target = dyn Ledger;

    fn deref(&self) -> &(dyn Ledger + 'static) {
        &*self.ledger
    }
}

/// The two backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Embedded,
    Postgres,
}

impl Backend {
    /// A fresh ledger: a new redb file, or a new database on the test
    /// binary's PostgreSQL server.
    pub fn fresh(self) -> Fresh {
        match self {
            Backend::Embedded => {
                let dir = tempfile::tempdir().unwrap();
                let l = Embedded::open(&dir.path().join("ledger.redb")).unwrap();
                Fresh {
                    ledger: Arc::new(l),
                    _dir: Some(dir),
                }
            }
            Backend::Postgres => Fresh {
                ledger: Arc::new(Postgres::connect(&pg::fresh_database()).unwrap()),
                _dir: None,
            },
        }
    }
}

/// One `#[test]` per backend for a body taking `&dyn Ledger`: `name::embedded`
/// and `name::postgres`.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn embedded() {
                let l = $crate::common::Backend::Embedded.fresh();
                super::$name(&*l);
            }

            #[test]
            fn postgres() {
                let l = $crate::common::Backend::Postgres.fresh();
                super::$name(&*l);
            }
        }
    )*};
}
