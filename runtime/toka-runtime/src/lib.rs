//! placeholder
pub mod bus;
pub mod host;
pub(crate) mod mailbox;
pub mod publisher;
