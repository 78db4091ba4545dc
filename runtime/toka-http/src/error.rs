//! The errors of the wasmtime-free core: a malformed allowlist entry or CIDR
//! (the operator's, reported when the config is checked) and a request
//! destination refused before any lookup (the guest's, answered with
//! `HttpRequestDenied`).

/// What is wrong with an allowlist entry, a CIDR or a request's destination.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// An `allowed_hosts` entry that does not follow the grammar.
    #[error("`{entry}`: {why}")]
    AllowedHost {
        /// The entry as written.
        entry: String,
        /// What is wrong, and how to write it instead.
        why: String,
    },
    /// An `allow_private` entry that is neither an address nor a CIDR.
    #[error("`{entry}`: not an IP address or CIDR (`127.0.0.1/32`, `fd00::/8`): {why}")]
    Cidr {
        /// The entry as written.
        entry: String,
        /// The parser's reason.
        why: String,
    },
    /// A request's destination that is refused as written (userinfo, a
    /// numeric host in a form resolvers disagree on, a bad port...).
    #[error("destination refused: {0}")]
    Destination(String),
}

/// The core's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
