//! The one mapping from an error to `toka`'s exit code.
//!
//! - `0`: success;
//! - `1`: a runtime failure: something failed that the operator's input
//!   does not explain (I/O, a store's data corrupt, wasmtime could not be
//!   set up), or a command whose job is to find failures found one
//!   (`toka compile`: a module does not compile; `toka verify`: a signature
//!   does not verify);
//! - `2`: the operator's input is wrong: usage (clap's own exit), the
//!   configuration, a module that fails to load, a capability grant that
//!   cannot be honoured (a capability error of kind `Config`; one of kind
//!   `Failure`, a store that cannot be read, is a `1`), a key, name or file
//!   that is wrong or missing.
//!
//! Every command returns an [`anyhow::Error`]; [`Kind::of`] walks its chain,
//! outermost first, and the first error with a say decides, else `1`. The
//! errors of the crates `toka` drives are classified here by type and
//! variant, in one place, so every command gives the same code for the same
//! mistake (`toka run` and `toka check` on one configuration, say); the
//! CLI's own judgements are marked with [`bad`].

use std::error::Error as StdError;
use std::fmt;
use std::process::ExitCode;

/// Which exit code an error gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Exit 1: a runtime failure.
    Failure,
    /// Exit 2: the operator's input is wrong.
    BadInput,
}

impl Kind {
    /// The kind of `error`: the first error in its chain that has a say.
    pub(crate) fn of(error: &anyhow::Error) -> Kind {
        error.chain().find_map(classify).unwrap_or(Kind::Failure)
    }

    /// The process's exit code.
    pub(crate) fn exit_code(self) -> ExitCode {
        match self {
            Kind::Failure => ExitCode::from(1),
            Kind::BadInput => ExitCode::from(2),
        }
    }
}

/// Marks `e` as the operator's input being wrong (exit 2), for the
/// judgements only the CLI makes (a missing argument, a file that exists).
pub(crate) fn bad(e: impl Into<anyhow::Error>) -> anyhow::Error {
    anyhow::Error::new(BadInput(e.into()))
}

/// What [`bad`] wraps an error in. It shows the error whole and hides its
/// chain, so that nothing inside can change the verdict.
#[derive(Debug)]
struct BadInput(anyhow::Error);

impl fmt::Display for BadInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

impl StdError for BadInput {}

/// One error's say, if it has one; `None` passes the question to its source.
fn classify(e: &(dyn StdError + 'static)) -> Option<Kind> {
    use Kind::{BadInput as Input, Failure};
    if e.is::<BadInput>() || e.is::<toka_core::ConfigError>() {
        return Some(Input);
    }
    if let Some(e) = e.downcast_ref::<toka_runtime::Error>() {
        use toka_runtime::Error as E;
        return Some(match e {
            E::Config(_) | E::Module { .. } | E::DuplicateAgent(_) | E::InvalidName(_) => Input,
            // The capability says whose fault it is: a grant or store the
            // operator got wrong, or a store that failed.
            E::Capability(c) if c.is_config() => Input,
            E::Capability(_) | E::Engine(_) => Failure,
        });
    }
    #[cfg(feature = "secrets")]
    if let Some(kind) = capabilities::classify(e) {
        return Some(kind);
    }
    None
}

/// The capability crates' errors.
#[cfg(feature = "secrets")]
mod capabilities {
    use std::error::Error as StdError;

    use super::Kind::{self, BadInput as Input, Failure};

    pub(super) fn classify(e: &(dyn StdError + 'static)) -> Option<Kind> {
        if let Some(e) = e.downcast_ref::<toka_keyring::KeyError>() {
            return Some(key(e));
        }
        if e.is::<toka_keyring::UnsupportedError>() {
            return Some(Input);
        }
        if let Some(e) = e.downcast_ref::<toka_keyring::Error>() {
            use toka_keyring::Error as E;
            return match e {
                E::Key(k) => Some(key(k)),
                E::WouldStrand { .. } | E::Undecidable { .. } | E::HoldsData { .. } => Some(Input),
                E::Io { .. } | E::Announce(_) => Some(Failure),
                // The store's own error (the source) decides.
                _ => None,
            };
        }
        if let Some(e) = e.downcast_ref::<toka_secrets::Error>() {
            return Some(operator(e.is_operator_error()));
        }
        #[cfg(feature = "vault")]
        if let Some(e) = e.downcast_ref::<toka_vault::Error>() {
            return Some(operator(e.is_operator_error()));
        }
        None
    }

    fn key(e: &toka_keyring::KeyError) -> Kind {
        operator(e.is_operator_error())
    }

    /// Each crate judges its own errors (`is_operator_error`), so the host
    /// and the CLI agree on them.
    fn operator(is_operator_error: bool) -> Kind {
        if is_operator_error { Input } else { Failure }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_error_with_a_say_decides() {
        assert_eq!(Kind::of(&anyhow::anyhow!("io")), Kind::Failure);
        let marked = bad(anyhow::anyhow!("no such file")).context("reading it");
        assert_eq!(Kind::of(&marked), Kind::BadInput);
        // `bad` hides what it wraps.
        let hidden = bad(anyhow::Error::new(std::io::Error::other("x")));
        assert_eq!(Kind::of(&hidden), Kind::BadInput);
    }

    #[test]
    fn a_capability_error_exits_by_its_kind() {
        use toka_runtime::host::caps::CapError;
        let config = toka_runtime::Error::Capability(CapError::shared("no vault is configured"));
        assert_eq!(Kind::of(&config.into()), Kind::BadInput);
        let failed = toka_runtime::Error::Capability(CapError::failure("vault v: I/O error"));
        let failed = anyhow::Error::new(failed).context("starting the runtime");
        assert_eq!(Kind::of(&failed), Kind::Failure);
    }

    #[cfg(feature = "secrets")]
    #[test]
    fn a_store_error_inside_a_keyring_error_decides() {
        let wrong = toka_keyring::Error::Store {
            action: "re-keying",
            store: "the secret store at s".into(),
            source: Box::new(toka_secrets::Error::WrongKey),
        };
        assert_eq!(Kind::of(&wrong.into()), Kind::BadInput);
        let corrupt = toka_keyring::Error::Store {
            action: "re-keying",
            store: "the secret store at s".into(),
            source: Box::new(toka_secrets::Error::Corrupt { name: "a".into() }),
        };
        assert_eq!(Kind::of(&corrupt.into()), Kind::Failure);
        let missing = toka_keyring::KeyError::KeyFileMissing { path: "k".into() };
        assert_eq!(Kind::of(&anyhow::Error::new(missing)), Kind::BadInput);
    }
}
