//! Toka's shared vocabulary, free of wasmtime: what an event is, how topics and
//! grants are matched, what the operator's configuration says, and the native
//! [`Agent`] trait.
//!
//! # Layout
//! - [`topic`]: event kinds and the `orders.*` / `orders.>` pattern grammar;
//! - [`event`]: the [`Event`] record and the runtime's own kinds;
//! - [`agent`]: the native [`Agent`] trait and its [`Context`];
//! - [`config`]: loading `toka.toml` with file/line/key errors and `${VAR}`
//!   interpolation, and the located getters a capability parses its own
//!   sections and `[[agents]]` keys with;
//! - [`text`]: bounding and escaping guest-controlled text before the host
//!   logs or republishes it.
#![deny(missing_docs)]

pub mod agent;
pub mod config;
pub mod event;
pub mod text;
pub mod topic;

pub use agent::{Agent, Context, PublishError, Publisher};
pub use config::{
    AgentConfig, ConfigError, Declared, RuntimeConfig, SecretsConfig, TrustConfig, VaultConfig,
};
pub use event::Event;
pub use topic::{Kind, Pattern, PatternSet, TopicError};
