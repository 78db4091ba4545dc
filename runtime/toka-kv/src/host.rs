//! The host side of durable key-value (feature `host`): `wasi:keyvalue`
//! `store`, `atomics` and `batch` at `0.2.0-draft`, and the
//! `toka:runtime/kv` extension, on the [`Store`] named by `[kv] path`.
//!
//! # Grants
//! `kv = true` gives an agent its own bucket, named after it: `open("")` and
//! `open("<agent name>")` both open it. `kv_shared = ["sessions"]` grants
//! more buckets by name. `open` of anything else answers `access-denied`,
//! whether or not such a bucket exists, and so does every `open` of an agent
//! with no grant (its component still loads). Every call re-checks the
//! bucket against the grant.
//!
//! # Answers
//! | failure | `wasi:keyvalue` `error` | `toka:runtime/kv` `kv-error` |
//! |---|---|---|
//! | not granted / does not exist | `access-denied` | `access-denied` |
//! | over a quota | `other("quota exceeded: ...")` | `quota-exceeded("...")` |
//! | bad key, value size, TTL, batch length, non-counter value | `other("invalid: ...")` | `invalid("...")` |
//! | the store failed (logged for the operator) | `other("...")` | `other("...")` |
//! | the guest call's deadline passed while a write waited | a `deadline` fault | a `deadline` fault |
//!
//! `no-such-store` is never returned: it would tell a guest which names
//! exist. A write cut by the deadline was not acknowledged; it may still
//! commit.
//!
//! # Bounds
//! Keys up to `[kv] max_key_bytes` (default 1024), values up to
//! `max_value_kb` (default 1024 KiB); an agent's own bucket up to
//! `kv_quota_mb` (default 64 MiB) and `kv_max_keys` (default 100,000), each
//! shared bucket up to `[kv] shared_quota_mb` and `shared_max_keys` (same
//! defaults). `list-keys` and `list-prefix` pages hold at most
//! [`MAX_PAGE`](crate::MAX_PAGE) (1000) keys; batch calls name at most
//! [`MAX_BATCH_KEYS`](crate::MAX_BATCH_KEYS) (1000) keys and move at most
//! [`MAX_BATCH_BYTES`](crate::MAX_BATCH_BYTES) (16 MiB) of values; an
//! agent's instances hold at most [`MAX_OPEN_BUCKETS`] open buckets.
//!
//! `list-keys`' cursor is an offset: the number of keys the pages before it
//! returned. A key set or deleted between two pages may shift the page
//! boundary (the draft allows an out-of-date listing); `list-prefix` pages
//! by key instead and never repeats or skips a key that stayed.
//!
//! `increment` reads and writes the value as decimal text (`"42"`), as
//! wasmtime's and wasmCloud's hosts do; a value that is not one, or an
//! overflow, is an error value, never a wrap.

use std::sync::Arc;

use toka_capability::bindings::{atomics, batch, kv, store};
use toka_capability::resources::Bucket;
use toka_capability::{CapError, Capability, Has, OpenCx, View, wait};
use toka_core::{AgentConfig, RuntimeConfig};
use wasmtime::anyhow;
use wasmtime::component::{HasData, Linker, Resource};

use crate::config::{self, KvConfig, KvGrant};
use crate::{Error, Outcome, Quota, Store, Write};

/// Most buckets one agent's instances hold open at once; `open` past it
/// answers `other(...)` until the guest drops some.
pub const MAX_OPEN_BUCKETS: usize = 1024;

/// The `kv` capability: the store and the shared buckets' quota.
#[derive(Debug)]
pub struct Kv {
    store: Arc<Store>,
    shared: Quota,
}

impl Kv {
    /// The store (for an embedder, or the bench).
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }
}

impl Capability for Kv {
    const NAME: &'static str = "kv";
    const AGENT_KEYS: &'static [&'static str] = config::AGENT_KEYS;
    const INTERFACES: &'static [(&'static str, &'static str)] = &[
        (
            "wasi:keyvalue/store",
            "toka kv: durable buckets (the agent's own with `kv = true`, others by `kv_shared`)",
        ),
        (
            "wasi:keyvalue/atomics",
            "toka kv: atomic increment of a decimal counter in a granted bucket",
        ),
        (
            "wasi:keyvalue/batch",
            "toka kv: get/set/delete up to 1000 keys at once in a granted bucket",
        ),
        (
            "toka:runtime/kv",
            "toka kv: versions, compare-and-swap, TTLs and prefix listing in granted buckets",
        ),
    ];
    const SECTIONS: &'static [&'static str] = &[config::SECTION];
    type Grant = KvGrant;
    type AgentState = KvCtx;

    fn grant(agent: &AgentConfig) -> Result<Option<KvGrant>, CapError> {
        // The loader's error already names the file, line and key.
        KvGrant::from_agent(agent).map_err(|e| CapError::config(agent, e))
    }

    fn open(
        config: &RuntimeConfig,
        granted: &[(&AgentConfig, &KvGrant)],
        _cx: &mut OpenCx,
    ) -> Result<Self, CapError> {
        let kv = KvConfig::from_config(config).map_err(|e| CapError::shared(e.to_string()))?;
        for key in &kv.unknown {
            tracing::warn!(key = %key, "unknown key in [kv], ignored");
        }
        for (agent, grant) in granted {
            if let Some(name) = grant
                .shared
                .iter()
                .find(|n| config.agents.iter().any(|a| &a.name == *n))
            {
                return Err(CapError::agent(
                    agent,
                    format!(
                        "kv_shared: `{name}` is an agent's name, and so its own bucket; give shared buckets names of their own"
                    ),
                ));
            }
        }
        let Some(path) = kv.path else {
            return Err(CapError::shared(
                "an agent is granted `kv` but no key-value store is configured: set `[kv] path`",
            ));
        };
        // The file is configured; failing to open it is the store's (I/O,
        // held by another process, damaged): exit 1, not the operator's 2.
        let store = Store::open(&path, kv.limits)
            .map_err(|e| CapError::failure(format!("key-value store {}: {e}", path.display())))?;
        Ok(Kv {
            store: Arc::new(store),
            shared: kv.shared,
        })
    }

    fn for_agent(&self, agent: &AgentConfig, grant: KvGrant) -> Result<KvCtx, CapError> {
        Ok(KvCtx {
            agent: agent.name.as_str().into(),
            own: grant.own.then(|| agent.name.as_str().into()),
            own_quota: grant.quota,
            shared: grant.shared.iter().map(|s| s.as_str().into()).collect(),
            shared_quota: self.shared,
            store: Arc::clone(&self.store),
            open: Arc::new(()),
        })
    }

    fn link<T: Has<Self>>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
        store::add_to_linker::<T, KvData>(linker, |t| KvHost(t.view()))?;
        atomics::add_to_linker::<T, KvData>(linker, |t| KvHost(t.view()))?;
        batch::add_to_linker::<T, KvData>(linker, |t| KvHost(t.view()))?;
        kv::add_to_linker::<T, KvData>(linker, |t| KvHost(t.view()))
    }

    fn describe(grant: &KvGrant) -> String {
        let mut parts = Vec::new();
        if grant.own {
            parts.push(format!(
                "own bucket ({} MiB, {} keys)",
                grant.quota.max_bytes >> 20,
                grant.quota.max_keys
            ));
        }
        if !grant.shared.is_empty() {
            parts.push(format!("shared {}", grant.shared.join(", ")));
        }
        format!("kv: {}", parts.join("; "))
    }
}

/// One agent's view of the store: the buckets its grant names.
pub struct KvCtx {
    agent: Arc<str>,
    own: Option<Arc<str>>,
    own_quota: Quota,
    shared: Vec<Arc<str>>,
    shared_quota: Quota,
    store: Arc<Store>,
    /// Cloned into every bucket the agent's instances open (see
    /// [`Bucket::open`]).
    open: Arc<()>,
}

impl std::fmt::Debug for KvCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvCtx")
            .field("agent", &self.agent)
            .field("own", &self.own)
            .field("shared", &self.shared)
            .finish_non_exhaustive()
    }
}

impl KvCtx {
    /// The granted bucket `identifier` names (`""`: the agent's own).
    fn resolve(&self, identifier: &str) -> Option<Arc<str>> {
        if identifier.is_empty() || self.own.as_deref() == Some(identifier) {
            return self.own.clone();
        }
        self.shared.iter().find(|s| &***s == identifier).cloned()
    }

    /// The quota of `bucket`, if it is granted.
    fn quota(&self, bucket: &str) -> Option<Quota> {
        if self.own.as_deref() == Some(bucket) {
            Some(self.own_quota)
        } else if self.shared.iter().any(|s| &**s == bucket) {
            Some(self.shared_quota)
        } else {
            None
        }
    }

    fn fail(&self, e: Error) -> Fail {
        match e {
            Error::QuotaExceeded(m) => Fail::Quota(m),
            e if e.is_caller_error() => Fail::Invalid(e.to_string()),
            e => {
                tracing::error!(agent = %self.agent, error = %e, "key-value store failed");
                Fail::Other("the key-value store failed (the host's log says why)".into())
            }
        }
    }
}

/// Why a call failed, before it is spelled in one interface's error type.
#[derive(Debug)]
enum Fail {
    Denied,
    Quota(String),
    Invalid(String),
    Other(String),
    /// Ends the guest call (a wait past its deadline, a host bug).
    Trap(anyhow::Error),
}

/// A result in `wasi:keyvalue`'s terms.
fn wasi<T>(r: Result<T, Fail>) -> anyhow::Result<Result<T, store::Error>> {
    match r {
        Ok(v) => Ok(Ok(v)),
        Err(Fail::Trap(e)) => Err(e),
        Err(Fail::Denied) => Ok(Err(store::Error::AccessDenied)),
        Err(Fail::Quota(m)) => Ok(Err(store::Error::Other(format!("quota exceeded: {m}")))),
        Err(Fail::Invalid(m)) => Ok(Err(store::Error::Other(format!("invalid: {m}")))),
        Err(Fail::Other(m)) => Ok(Err(store::Error::Other(m))),
    }
}

/// A result in `toka:runtime/kv`'s terms.
fn ext<T>(r: Result<T, Fail>) -> anyhow::Result<Result<T, kv::KvError>> {
    match r {
        Ok(v) => Ok(Ok(v)),
        Err(Fail::Trap(e)) => Err(e),
        Err(Fail::Denied) => Ok(Err(kv::KvError::AccessDenied)),
        Err(Fail::Quota(m)) => Ok(Err(kv::KvError::QuotaExceeded(m))),
        Err(Fail::Invalid(m)) => Ok(Err(kv::KvError::Invalid(m))),
        Err(Fail::Other(m)) => Ok(Err(kv::KvError::Other(m))),
    }
}

/// The key-value interfaces as an agent calls them: its [`View`].
#[derive(Debug)]
pub struct KvHost<'a>(pub View<'a, Kv>);

/// The [`HasData`] marker linking [`KvHost`].
#[derive(Debug)]
pub struct KvData;

impl HasData for KvData {
    type Data<'a> = KvHost<'a>;
}

/// The host calls that wait for a commit, as the deadline fault names them.
mod calls {
    pub(super) const SET: &str = "wasi:keyvalue/store.[method]bucket.set";
    pub(super) const DELETE: &str = "wasi:keyvalue/store.[method]bucket.delete";
    pub(super) const INCREMENT: &str = "wasi:keyvalue/atomics.increment";
    pub(super) const SET_MANY: &str = "wasi:keyvalue/batch.set-many";
    pub(super) const DELETE_MANY: &str = "wasi:keyvalue/batch.delete-many";
    pub(super) const CAS: &str = "toka:runtime/kv.compare-and-swap";
    pub(super) const SET_WITH_TTL: &str = "toka:runtime/kv.set-with-ttl";
}

impl KvHost<'_> {
    fn ctx(&self) -> Result<&KvCtx, Fail> {
        self.0.state.ok_or_else(|| {
            tracing::warn!(agent = %self.0.agent, "key-value access denied: agent holds no `kv` grant");
            Fail::Denied
        })
    }

    /// The agent's state, the bucket's name and its quota, re-checked
    /// against the grant.
    fn bucket(&self, bucket: &Resource<Bucket>) -> Result<(&KvCtx, Arc<str>, Quota), Fail> {
        let cx = self.ctx()?;
        let name = Arc::clone(
            &self
                .0
                .table
                .get(bucket)
                .map_err(|e| Fail::Trap(e.into()))?
                .name,
        );
        match cx.quota(&name) {
            Some(quota) => Ok((cx, name, quota)),
            None => {
                tracing::warn!(agent = %cx.agent, bucket = %name, "key-value access denied: bucket not granted");
                Err(Fail::Denied)
            }
        }
    }

    /// Queue `write` on `bucket` and wait, within the guest call's deadline,
    /// for it to be durable.
    fn write(
        &self,
        call: &'static str,
        bucket: &Resource<Bucket>,
        write: Write,
    ) -> Result<Outcome, Fail> {
        let (cx, name, quota) = self.bucket(bucket)?;
        let store = Arc::clone(&cx.store);
        // Queued only once the wait has started: a wait refused up front
        // (a spent deadline) writes nothing.
        let answer = wait::bounded(self.0.wait, call, async move {
            store.submit(&name, quota, write).await
        })
        .map_err(|e| Fail::Trap(e.into()))?;
        answer.map_err(|e| cx.fail(e))
    }

    fn read<T>(
        &self,
        bucket: &Resource<Bucket>,
        read: impl FnOnce(&Store, &str) -> crate::Result<T>,
    ) -> Result<T, Fail> {
        let (cx, name, _) = self.bucket(bucket)?;
        read(&cx.store, &name).map_err(|e| cx.fail(e))
    }

    fn open_bucket(&mut self, identifier: &str) -> Result<Resource<Bucket>, Fail> {
        let cx = self.ctx()?;
        let Some(name) = cx.resolve(identifier) else {
            let asked = toka_core::text::bounded(identifier, 80);
            tracing::warn!(agent = %cx.agent, bucket = %asked, "key-value access denied: bucket not granted");
            return Err(Fail::Denied);
        };
        // One reference is the agent's own; the others are open buckets.
        if Arc::strong_count(&cx.open) > MAX_OPEN_BUCKETS {
            return Err(Fail::Other(format!(
                "{MAX_OPEN_BUCKETS} buckets are already open; drop some first"
            )));
        }
        let open = Arc::clone(&cx.open);
        self.0
            .table
            .push(Bucket { name, open })
            .map_err(|e| Fail::Trap(e.into()))
    }
}

fn outcome_mismatch(call: &str, outcome: Outcome) -> Fail {
    Fail::Trap(anyhow::Error::msg(format!(
        "{call}: the store answered {outcome:?}"
    )))
}

impl store::Host for KvHost<'_> {
    fn open(
        &mut self,
        identifier: String,
    ) -> anyhow::Result<Result<Resource<Bucket>, store::Error>> {
        wasi(self.open_bucket(&identifier))
    }
}

impl store::HostBucket for KvHost<'_> {
    fn get(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> anyhow::Result<Result<Option<Vec<u8>>, store::Error>> {
        wasi(self.read(&bucket, |s, b| Ok(s.get(b, &key)?.map(|e| e.value))))
    }

    fn set(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        value: Vec<u8>,
    ) -> anyhow::Result<Result<(), store::Error>> {
        let write = Write::Set {
            key,
            value,
            ttl_ms: None,
        };
        wasi(self.write(calls::SET, &bucket, write).map(drop))
    }

    fn delete(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> anyhow::Result<Result<(), store::Error>> {
        wasi(
            self.write(calls::DELETE, &bucket, Write::Delete { key })
                .map(drop),
        )
    }

    fn exists(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> anyhow::Result<Result<bool, store::Error>> {
        wasi(self.read(&bucket, |s, b| s.exists(b, &key)))
    }

    fn list_keys(
        &mut self,
        bucket: Resource<Bucket>,
        cursor: Option<u64>,
    ) -> anyhow::Result<Result<store::KeyResponse, store::Error>> {
        wasi(self.read(&bucket, |s, b| {
            let (keys, cursor) = s.list_from(b, cursor.unwrap_or(0))?;
            Ok(store::KeyResponse { keys, cursor })
        }))
    }

    fn drop(&mut self, bucket: Resource<Bucket>) -> anyhow::Result<()> {
        self.0.table.delete(bucket)?;
        Ok(())
    }
}

impl atomics::Host for KvHost<'_> {
    fn increment(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        delta: u64,
    ) -> anyhow::Result<Result<u64, store::Error>> {
        wasi(
            self.write(calls::INCREMENT, &bucket, Write::Increment { key, delta })
                .and_then(|o| match o {
                    Outcome::Incremented(n) => Ok(n),
                    o => Err(outcome_mismatch(calls::INCREMENT, o)),
                }),
        )
    }
}

impl batch::Host for KvHost<'_> {
    fn get_many(
        &mut self,
        bucket: Resource<Bucket>,
        keys: Vec<String>,
    ) -> anyhow::Result<Result<Vec<Option<(String, Vec<u8>)>>, store::Error>> {
        wasi(self.read(&bucket, |s, b| {
            let values = s.get_many(b, &keys)?;
            Ok(keys
                .into_iter()
                .zip(values)
                .map(|(k, v)| v.map(|v| (k, v)))
                .collect())
        }))
    }

    fn set_many(
        &mut self,
        bucket: Resource<Bucket>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> anyhow::Result<Result<(), store::Error>> {
        wasi(
            self.write(calls::SET_MANY, &bucket, Write::SetMany(key_values))
                .map(drop),
        )
    }

    fn delete_many(
        &mut self,
        bucket: Resource<Bucket>,
        keys: Vec<String>,
    ) -> anyhow::Result<Result<(), store::Error>> {
        wasi(
            self.write(calls::DELETE_MANY, &bucket, Write::DeleteMany(keys))
                .map(drop),
        )
    }
}

impl kv::Host for KvHost<'_> {
    fn get_entry(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> anyhow::Result<Result<Option<kv::Entry>, kv::KvError>> {
        ext(self.read(&bucket, |s, b| {
            Ok(s.get(b, &key)?.map(|e| kv::Entry {
                value: e.value,
                version: e.version,
            }))
        }))
    }

    fn compare_and_swap(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        version: u64,
        value: Vec<u8>,
    ) -> anyhow::Result<Result<Option<u64>, kv::KvError>> {
        let write = Write::CompareAndSwap {
            key,
            version,
            value,
        };
        ext(self
            .write(calls::CAS, &bucket, write)
            .and_then(|o| match o {
                Outcome::Swapped(v) => Ok(v),
                o => Err(outcome_mismatch(calls::CAS, o)),
            }))
    }

    fn set_with_ttl(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        value: Vec<u8>,
        ttl_ms: u64,
    ) -> anyhow::Result<Result<(), kv::KvError>> {
        let write = Write::Set {
            key,
            value,
            ttl_ms: Some(ttl_ms),
        };
        ext(self.write(calls::SET_WITH_TTL, &bucket, write).map(drop))
    }

    fn list_prefix(
        &mut self,
        bucket: Resource<Bucket>,
        prefix: String,
        cursor: Option<String>,
        limit: u32,
    ) -> anyhow::Result<Result<kv::KeyPage, kv::KvError>> {
        ext(self.read(&bucket, |s, b| {
            let page = s.list_prefix(b, &prefix, cursor.as_deref(), limit as usize)?;
            Ok(kv::KeyPage {
                keys: page.keys,
                cursor: page.next,
            })
        }))
    }
}

#[cfg(test)]
mod tests;
