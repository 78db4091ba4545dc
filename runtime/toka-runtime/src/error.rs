//! The kernel's error type.

use crate::host::ModuleError;

/// Everything that can stop a [`Runtime`](crate::Runtime) from being built or run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is invalid (names file, line, column and key).
    #[error(transparent)]
    Config(#[from] toka_core::ConfigError),
    /// A module failed to load and the runtime is strict about it.
    #[error("agent `{agent}`: module {source}")]
    Module {
        /// The agent that needed the module.
        agent: String,
        /// What was wrong with it.
        #[source]
        source: ModuleError,
    },
    /// Two agents were given the same name.
    #[error("an agent named `{0}` is already registered")]
    DuplicateAgent(String),
    /// The agent name is not usable.
    #[error("invalid agent name `{0}`: use 1-64 characters of A-Z a-z 0-9 _ - (and not `toka`)")]
    InvalidName(String),
    /// A capability grant cannot be honoured (names the agent and key), or a
    /// store it needs cannot be opened.
    #[error("capabilities: {0}")]
    Capability(crate::host::caps::CapError),
    /// wasmtime could not be set up.
    #[error("wasmtime engine: {0:#}")]
    Engine(wasmtime::Error),
}

/// `Result` with the kernel's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
