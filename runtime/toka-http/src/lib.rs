//! Outbound HTTP for Toka agents: which destinations an agent may reach, and
//! the checks every request passes before a byte leaves the host.
//!
//! The core is wasmtime-free, so `toka check` and the tests use it as is:
//! - an agent's `allowed_hosts` ([`AllowedHosts`], Spin's
//!   `scheme://host[:port]` grammar) decides on the (scheme, host, port) the
//!   guest asked for;
//! - the host the guest wrote is parsed strictly ([`Target::parse`]), so
//!   `2130706433`, `0177.0.0.1`, `127.1`, `0x7f.1` and `user@host` never reach
//!   a resolver that would read them as loopback;
//! - every address the name resolves to is then checked against the private
//!   and special-purpose ranges ([`AddressPolicy`]), IPv4 embedded in IPv6
//!   included, with only the operator's `[http] allow_private` CIDRs excepted.
//!
//! Behind the `host` feature, [`host::Http`] is the capability the kernel
//! links: `wasi:http/outgoing-handler` with a guard in
//! `WasiHttpHooks::send_request` that resolves once, checks every address,
//! connects to exactly those addresses, verifies TLS against the name and
//! enforces the agent's limits.
//!
//! # Layout
//! - [`allowed`]: [`AllowedHosts`], the allowlist grammar and its matching;
//! - [`target`]: [`Target`], the destination a request names, parsed strictly;
//! - [`ranges`]: [`AddressPolicy`], the blocked ranges and the exceptions;
//! - [`error`]: the [`Error`] type;
//! - `host` (feature `host`): the capability, its grant, limits and guard.
#![deny(missing_docs)]

pub mod allowed;
pub mod error;
pub mod ranges;
pub mod target;

#[cfg(feature = "host")]
pub mod host;

pub use allowed::{AllowedHost, AllowedHosts};
pub use error::{Error, Result};
pub use ranges::{AddressPolicy, Blocked};
pub use target::{Host, Target};
