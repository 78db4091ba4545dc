//! The host types behind the WIT resources the bindings name (`with` in
//! [`crate::bindings`]), shared by the capability that creates them and the
//! kernel's resource table.

use std::sync::Arc;

/// An open `wasi:keyvalue/store.bucket`: the bucket a guest opened, checked
/// against its grant when it was opened and again on every call.
///
/// Every open bucket holds a clone of its agent's `open` token, so the
/// token's count is the number of buckets the agent's instances hold open,
/// bounded by the capability; a bucket dropped with a faulted instance's
/// table is counted out with it.
#[derive(Debug, Clone)]
pub struct Bucket {
    /// The bucket's name, resolved by the capability: the agent's own name
    /// for its own bucket (opened as `""` or by that name), else the shared
    /// bucket's name.
    pub name: Arc<str>,
    /// The agent's count of open buckets.
    pub open: Arc<()>,
}
