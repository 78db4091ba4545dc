//! The `toka:runtime` bindings, generated once in the capability seam
//! (`toka_capability::bindings`) so the capability crates and the kernel
//! share one set of WIT types.

pub use toka_capability::bindings::*;
