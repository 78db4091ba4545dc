//! The one `bindgen!` of the host: Rust types and traits for the
//! `toka:runtime` WIT package in `wit/` and the `wasi:keyvalue` draft it
//! vendors in `wit/deps/`.
//!
//! Exports use borrowed parameter types so the kernel can hand an event's
//! kind, source and payload to the guest straight from the shared
//! `Arc<Event>`, without copying them into owned Rust values first.
//!
//! The key-value and ledger interfaces are `trappable`: their writes wait for a
//! durable commit through [`crate::wait::bounded`], and a wait cut by the
//! guest call's deadline must end the call as a `deadline` fault, which
//! only an error of the host function (not a WIT error value) can do.
//!
//! The world is `agent` (imports and `handler`); the `responder` export of
//! world `service` is looked up by the kernel on components that have it,
//! so an `agent` component needs none.

#![expect(
    missing_docs,
    reason = "generated code; the WIT itself is documented item by item"
)]

wasmtime::component::bindgen!({
    world: "agent",
    path: "../../wit",
    ownership: Borrowing { duplicate_if_necessary: true },
    anyhow: true,
    imports: {
        "wasi:keyvalue/store": trappable,
        "wasi:keyvalue/atomics": trappable,
        "wasi:keyvalue/batch": trappable,
        "toka:runtime/kv": trappable,
        "toka:runtime/ledger": trappable,
    },
    with: {
        "wasi:keyvalue/store.bucket": crate::resources::Bucket,
    },
});

pub use exports::toka::runtime::handler;
pub use toka::runtime::{auth, bus, kv, ledger, log, request, secrets, types, vault};
pub use wasi::keyvalue::{atomics, batch, store};
