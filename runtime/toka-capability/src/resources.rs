//! The host types behind the WIT resources the bindings name (`with` in
//! [`crate::bindings`]), shared by the capability that creates them and the
//! kernel's resource table.

use std::sync::Arc;

/// An open `wasi:keyvalue/store.bucket`: the bucket a guest opened, checked
/// against its grant when it was opened and again on every call.
#[derive(Debug, Clone)]
pub struct Bucket {
    /// The bucket's identifier, as passed to `open` (`""` or the agent's
    /// own name for its own bucket, resolved by the capability).
    pub name: Arc<str>,
}
