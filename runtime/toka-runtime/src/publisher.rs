//! Publishing on an agent's behalf: every check between "an agent asked to
//! publish" and "the bus routes it", in one place for wasm and native agents.
//!
//! Order of checks: well-formed kind, not a runtime kind (first segment `toka`
//! in any case), inside the grant, payload size, rate. Denials are logged
//! with the agent's name (the first few at `warn`, then sampled, the kind
//! bounded by [`toka_core::text`]) so a guest hammering a denied kind cannot
//! flood the operator's logs.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use parking_lot::Mutex;
use toka_core::text::{MAX_ERROR, MAX_KIND, bounded};
use toka_core::topic::{is_system_kind, validate_kind};
use toka_core::{PatternSet, PublishError, Publisher};

use crate::bus::Bus;
use crate::host::limits::TokenBucket;

/// Denials logged at `warn` before sampling kicks in.
const LOUD_DENIALS: u64 = 10;
/// After that, one denial in this many is logged.
const DENIAL_SAMPLE: u64 = 1000;

/// What an agent may publish.
#[derive(Debug, Clone)]
pub enum PublishGrant {
    /// Kinds matching these patterns (wasm agents: the operator's `publish`).
    Patterns(PatternSet),
    /// Any non-runtime kind (native agents, which are part of the host).
    AnyUserKind,
}

/// Publishes for one agent, enforcing its grant and limits.
pub struct AgentPublisher {
    name: Arc<str>,
    grant: PublishGrant,
    max_payload: u64,
    rate: Option<Mutex<TokenBucket>>,
    bus: Bus,
    denied: AtomicU64,
    published: AtomicU64,
    /// Outside input (the embedder's injector): refused once shutdown begins.
    external: bool,
}

impl std::fmt::Debug for AgentPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentPublisher")
            .field("name", &self.name)
            .field("grant", &self.grant)
            .finish_non_exhaustive()
    }
}

impl AgentPublisher {
    /// A publisher for agent `name`. `rate` is `(per_second, burst)`; `None`
    /// means unlimited (native agents).
    pub fn new(
        name: Arc<str>,
        grant: PublishGrant,
        max_payload: u64,
        rate: Option<(u32, u32)>,
        bus: Bus,
    ) -> Self {
        AgentPublisher {
            name,
            grant,
            max_payload,
            rate: rate.map(|(r, b)| Mutex::new(TokenBucket::new(r, b))),
            bus,
            denied: AtomicU64::new(0),
            published: AtomicU64::new(0),
            external: false,
        }
    }

    /// Mark this publisher as outside input, refused once shutdown begins.
    pub fn external(mut self) -> Self {
        self.external = true;
        self
    }

    /// The agent's name.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// Events this agent published (accepted by the bus).
    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }

    /// Publish calls refused so far (any reason but `unavailable`).
    pub fn denied(&self) -> u64 {
        self.denied.load(Ordering::Relaxed)
    }

    fn refuse(&self, kind: &str, err: PublishError) -> PublishError {
        let n = self.denied.fetch_add(1, Ordering::Relaxed) + 1;
        if n <= LOUD_DENIALS || n.is_multiple_of(DENIAL_SAMPLE) {
            // The kind is the guest's: bounded and escaped like all guest text.
            let kind = bounded(kind, MAX_KIND);
            let error = err.to_string();
            let error = bounded(&error, MAX_ERROR);
            tracing::warn!(agent = %self.name, kind = ?kind, error = %error, refused_so_far = n, "publish refused");
        }
        err
    }

    /// Check and publish; returns the new event id.
    pub fn publish(&self, kind: &str, payload: Bytes) -> Result<u64, PublishError> {
        if self.external && !self.bus.accepts_intake() {
            return Err(PublishError::Unavailable);
        }
        if let Err(e) = validate_kind(kind) {
            let shown = bounded(kind, MAX_KIND);
            return Err(self.refuse(kind, PublishError::Invalid(format!("kind `{shown}` {e}"))));
        }
        let granted = !is_system_kind(kind)
            && match &self.grant {
                PublishGrant::Patterns(p) => p.matches(kind),
                PublishGrant::AnyUserKind => true,
            };
        if !granted {
            return Err(self.refuse(kind, PublishError::AccessDenied));
        }
        if payload.len() as u64 > self.max_payload {
            return Err(self.refuse(kind, PublishError::TooLarge(self.max_payload)));
        }
        if let Some(rate) = &self.rate
            && !rate.lock().try_take()
        {
            return Err(self.refuse(kind, PublishError::RateLimited));
        }
        let id = self.bus.publish_str(&self.name, kind, payload)?;
        self.published.fetch_add(1, Ordering::Relaxed);
        Ok(id)
    }
}

impl Publisher for AgentPublisher {
    fn publish(&self, kind: &str, payload: Bytes) -> Result<u64, PublishError> {
        AgentPublisher::publish(self, kind, payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publisher(grant: &[&str], max: u64, rate: Option<(u32, u32)>) -> AgentPublisher {
        AgentPublisher::new(
            "a".into(),
            PublishGrant::Patterns(PatternSet::parse(grant).unwrap()),
            max,
            rate,
            Bus::new(),
        )
    }

    #[test]
    fn checks_in_order() {
        let p = publisher(&["orders.>", "*"], 4, None);
        assert!(matches!(
            p.publish("bad kind", Bytes::new()),
            Err(PublishError::Invalid(_))
        ));
        assert_eq!(
            p.publish("toka.tick", Bytes::new()),
            Err(PublishError::AccessDenied)
        );
        assert_eq!(
            p.publish("orders.created", Bytes::from_static(b"12345")),
            Err(PublishError::TooLarge(4))
        );
        assert!(
            p.publish("orders.created", Bytes::from_static(b"1234"))
                .is_ok()
        );
        assert_eq!(p.denied(), 3);
    }

    #[test]
    fn empty_grant_denies_everything() {
        let p = publisher(&[], 1024, None);
        assert_eq!(
            p.publish("orders.created", Bytes::new()),
            Err(PublishError::AccessDenied)
        );
    }

    #[test]
    fn runtime_kinds_are_reserved_in_any_case() {
        let p = publisher(&["*"], 1024, None);
        for kind in ["TOKA.tick", "Toka.x", "tOkA.agent.failed", "TOKA"] {
            assert_eq!(
                p.publish(kind, Bytes::new()),
                Err(PublishError::AccessDenied),
                "{kind}"
            );
        }
        assert!(p.publish("tokamak.tick", Bytes::new()).is_ok());
    }

    #[test]
    fn invalid_kind_is_echoed_bounded() {
        let p = publisher(&["*"], 1024, None);
        let kind = "k".repeat(1 << 20);
        let Err(PublishError::Invalid(msg)) = p.publish(&kind, Bytes::new()) else {
            panic!("an over-long kind is invalid");
        };
        assert!(msg.len() < 1024, "{} bytes", msg.len());
        assert!(msg.contains("…[cut "), "{msg}");
    }

    #[test]
    fn native_grant_still_excludes_runtime_kinds() {
        let p = AgentPublisher::new("n".into(), PublishGrant::AnyUserKind, 10, None, Bus::new());
        assert!(p.publish("anything.at.all", Bytes::new()).is_ok());
        assert_eq!(
            p.publish("toka.agent.started", Bytes::new()),
            Err(PublishError::AccessDenied)
        );
    }

    #[test]
    fn rate_limit_applies() {
        let p = publisher(&["a.>"], 10, Some((1, 2)));
        assert!(p.publish("a.b", Bytes::new()).is_ok());
        assert!(p.publish("a.b", Bytes::new()).is_ok());
        assert_eq!(
            p.publish("a.b", Bytes::new()),
            Err(PublishError::RateLimited)
        );
    }
}
