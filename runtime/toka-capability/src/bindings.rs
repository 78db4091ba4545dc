//! The one `bindgen!` of the host: Rust types and traits for the
//! `toka:runtime` WIT package in `wit/`.
//!
//! Exports use borrowed parameter types so the kernel can hand an event's
//! kind, source and payload to the guest straight from the shared
//! `Arc<Event>`, without copying them into owned Rust values first.

#![expect(
    missing_docs,
    reason = "generated code; the WIT itself is documented item by item"
)]

wasmtime::component::bindgen!({
    world: "agent",
    path: "../../wit",
    ownership: Borrowing { duplicate_if_necessary: true },
    anyhow: true,
});

pub use exports::toka::runtime::handler;
pub use toka::runtime::{auth, bus, log, secrets, types, vault};
