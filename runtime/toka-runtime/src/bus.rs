//! The event bus: assigns ids, routes each event to the mailboxes of the
//! subscribers whose patterns match its kind, and tracks in-flight work so
//! shutdown can drain.
//!
//! Routing is the hot path. Matching every subscriber's patterns on every
//! publish would cost O(agents) per event, so the subscriber list for each
//! kind is computed once and cached; the cache is bounded so an agent
//! publishing endless distinct kinds cannot grow host memory without bound.
//! Grants are *not* checked here: callers (the wasm host's `publish`, a
//! native agent's [`Context`](toka_core::Context), the scheduler) check them
//! before calling in.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use parking_lot::RwLock;
use toka_core::event::{kinds, now_ms};
use toka_core::{Event, Kind, PatternSet, PublishError};
use tokio::sync::Notify;

use crate::mailbox::{Delivery, Mailbox};

/// Most distinct kinds whose routes are cached before the cache is reset.
const ROUTE_CACHE_LIMIT: usize = 4096;

type Route = Arc<[Arc<Mailbox>]>;

/// Index of a subscriber on the bus (stable for the runtime's life).
pub(crate) type SubscriberId = usize;

#[derive(Clone)]
pub(crate) struct Subscriber {
    pub(crate) patterns: PatternSet,
    /// Agents with their own `every` period get ticks from their own timer,
    /// not from the global `toka.tick`.
    pub(crate) own_ticks: bool,
    pub(crate) mailbox: Arc<Mailbox>,
}

fn runtime_source() -> &'static Arc<str> {
    static SOURCE: std::sync::OnceLock<Arc<str>> = std::sync::OnceLock::new();
    SOURCE.get_or_init(|| Arc::from(kinds::RUNTIME_SOURCE))
}

/// Counters describing what the bus did, for reports and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BusStats {
    /// Events published (accepted by the bus).
    pub published: u64,
    /// Copies queued into mailboxes.
    pub delivered: u64,
    /// Copies dropped because a mailbox was full.
    pub dropped: u64,
}

/// A cheaply clonable handle to the bus.
#[derive(Clone)]
pub struct Bus {
    inner: Arc<Inner>,
}

struct Inner {
    next_id: AtomicU64,
    /// Outside input (embedder injections, ticks) accepted.
    intake: AtomicBool,
    /// Any publish accepted; false once the drain is over.
    open: AtomicBool,
    subscribers: RwLock<Vec<Subscriber>>,
    /// kind -> the mailboxes it goes to; built on first use of each kind.
    routes: RwLock<HashMap<Kind, Route>>,
    published: AtomicU64,
    /// Copies queued but not yet handled (or discarded); shutdown waits for 0.
    in_flight: AtomicU64,
    idle: Notify,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus").field("stats", &self.stats()).finish()
    }
}

impl Default for Bus {
    fn default() -> Self {
        Self::new()
    }
}

impl Bus {
    /// An empty, open bus.
    pub fn new() -> Self {
        Bus {
            inner: Arc::new(Inner {
                next_id: AtomicU64::new(1),
                intake: AtomicBool::new(true),
                open: AtomicBool::new(true),
                subscribers: RwLock::new(Vec::new()),
                routes: RwLock::new(HashMap::new()),
                published: AtomicU64::new(0),
                in_flight: AtomicU64::new(0),
                idle: Notify::new(),
            }),
        }
    }

    pub(crate) fn add_subscriber(&self, sub: Subscriber) -> SubscriberId {
        let mut subs = self.inner.subscribers.write();
        subs.push(sub);
        self.inner.routes.write().clear();
        subs.len() - 1
    }

    /// Whether the bus still accepts events.
    pub fn is_open(&self) -> bool {
        self.inner.open.load(Ordering::Acquire)
    }

    /// Whether outside input (embedder injections, ticks) is accepted.
    pub fn accepts_intake(&self) -> bool {
        self.inner.intake.load(Ordering::Acquire) && self.is_open()
    }

    /// Stop outside input. Agents may still publish while queued work drains,
    /// so follow-up events of work already accepted are not lost.
    pub fn stop_intake(&self) {
        self.inner.intake.store(false, Ordering::Release);
    }

    /// Refuse every later publish with `unavailable`.
    pub fn close(&self) {
        self.inner.intake.store(false, Ordering::Release);
        self.inner.open.store(false, Ordering::Release);
    }

    fn route(&self, kind: &Kind) -> Route {
        if let Some(route) = self.inner.routes.read().get(kind) {
            return route.clone();
        }
        let is_tick = kind.as_str() == kinds::TICK;
        let route: Route = self
            .inner
            .subscribers
            .read()
            .iter()
            .filter(|s| !(is_tick && s.own_ticks) && s.patterns.matches(kind.as_str()))
            .map(|s| s.mailbox.clone())
            .collect();
        let mut routes = self.inner.routes.write();
        if routes.len() >= ROUTE_CACHE_LIMIT {
            routes.clear();
        }
        routes.insert(kind.clone(), route.clone());
        route
    }

    fn make_event(&self, source: &Arc<str>, kind: &Kind, payload: Bytes) -> Arc<Event> {
        crate::recycle::new_event(
            self.inner.next_id.fetch_add(1, Ordering::Relaxed),
            kind,
            source,
            now_ms(),
            payload,
        )
    }

    /// [`Bus::publish_unchecked`] for a kind given as text. A kind already
    /// routed is published with its cached `Kind`, borrowed under the route
    /// cache's read lock: no allocation, no second validation, and (see
    /// `recycle`) usually no reference count touched.
    pub(crate) fn publish_str(
        &self,
        source: &Arc<str>,
        kind: &str,
        payload: Bytes,
    ) -> Result<u64, PublishError> {
        if !self.is_open() {
            return Err(PublishError::Unavailable);
        }
        let routes = self.inner.routes.read();
        if let Some((cached, route)) = routes.get_key_value(kind) {
            let route = route.clone();
            let event = self.make_event(source, cached, payload);
            drop(routes);
            return Ok(self.deliver(event, &route));
        }
        drop(routes);
        let kind =
            Kind::new(kind).map_err(|e| PublishError::Invalid(format!("kind `{kind}` {e}")))?;
        let route = self.route(&kind);
        let event = self.make_event(source, &kind, payload);
        Ok(self.deliver(event, &route))
    }

    /// Publish without any grant check (callers check grants). Returns the id.
    pub(crate) fn publish_unchecked(
        &self,
        source: &Arc<str>,
        kind: Kind,
        payload: Bytes,
    ) -> Result<u64, PublishError> {
        if !self.is_open() {
            return Err(PublishError::Unavailable);
        }
        let route = self.route(&kind);
        let event = self.make_event(source, &kind, payload);
        Ok(self.deliver(event, &route))
    }

    /// Queue `event` into every mailbox of `route`; returns its id.
    fn deliver(&self, event: Arc<Event>, route: &[Arc<Mailbox>]) -> u64 {
        let id = event.id;
        self.inner.published.fetch_add(1, Ordering::Relaxed);
        let Some((last, rest)) = route.split_last() else {
            return id;
        };
        // Count every copy before pushing any (a consumer may finish one
        // before the push returns), in one update rather than one per copy.
        self.inner
            .in_flight
            .fetch_add(route.len() as u64, Ordering::AcqRel);
        let mut dropped = 0;
        for mailbox in rest {
            dropped += u64::from(mailbox.push(event.clone()) == Delivery::Dropped);
        }
        dropped += u64::from(last.push(event) == Delivery::Dropped);
        self.done(dropped);
        id
    }

    /// Publish one of the runtime's own events (`toka.*`), source `toka`.
    pub(crate) fn publish_system(&self, kind: &'static str, payload: Bytes) -> Option<u64> {
        let kind = Kind::new(kind).expect("runtime kinds are valid");
        self.publish_unchecked(runtime_source(), kind, payload).ok()
    }

    /// Deliver a runtime event to one subscriber only (per-agent ticks).
    pub(crate) fn send_to(&self, to: SubscriberId, kind: &'static str, payload: Bytes) {
        if !self.accepts_intake() {
            return;
        }
        let event = self.make_event(runtime_source(), &Kind::new(kind).expect("valid"), payload);
        self.inner.published.fetch_add(1, Ordering::Relaxed);
        let mailbox = self.inner.subscribers.read()[to].mailbox.clone();
        self.offer(&mailbox, event);
    }

    fn offer(&self, mailbox: &Mailbox, event: Arc<Event>) {
        // Count before pushing: the consumer may finish the event before push returns.
        self.inner.in_flight.fetch_add(1, Ordering::AcqRel);
        if mailbox.push(event) == Delivery::Dropped {
            self.done(1);
        }
    }

    /// Mark `n` queued copies as finished (handled or discarded).
    pub(crate) fn done(&self, n: u64) {
        if n > 0 && self.inner.in_flight.fetch_sub(n, Ordering::AcqRel) == n {
            self.inner.idle.notify_waiters();
        }
    }

    /// Copies queued or being handled right now.
    pub fn in_flight(&self) -> u64 {
        self.inner.in_flight.load(Ordering::Acquire)
    }

    /// Wait until nothing is queued or being handled.
    pub async fn wait_idle(&self) {
        loop {
            let notified = self.inner.idle.notified();
            if self.in_flight() == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> BusStats {
        let subs = self.inner.subscribers.read();
        BusStats {
            published: self.inner.published.load(Ordering::Relaxed),
            delivered: subs.iter().map(|s| s.mailbox.delivered()).sum(),
            dropped: subs.iter().map(|s| s.mailbox.dropped()).sum(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mailbox::Wake;
    use std::collections::VecDeque;

    struct NoWake;
    impl Wake for NoWake {
        fn wake(&self) {}
    }

    fn sub(bus: &Bus, patterns: &[&str], cap: usize) -> Arc<Mailbox> {
        let mailbox = Arc::new(Mailbox::new("a".into(), cap, Arc::new(NoWake)));
        bus.add_subscriber(Subscriber {
            patterns: PatternSet::parse(patterns).unwrap(),
            own_ticks: false,
            mailbox: mailbox.clone(),
        });
        mailbox
    }

    fn kinds_in(mb: &Mailbox) -> Vec<String> {
        let mut out = VecDeque::new();
        mb.drain_into(&mut out, usize::MAX);
        out.iter().map(|e| e.kind.to_string()).collect()
    }

    #[test]
    fn routes_by_pattern() {
        let bus = Bus::new();
        let orders = sub(&bus, &["orders.*"], 16);
        let all = sub(&bus, &["*"], 16);
        let none = sub(&bus, &[], 16);
        let src: Arc<str> = "p".into();
        for k in ["orders.created", "orders.eu.created", "payments.done"] {
            bus.publish_unchecked(&src, Kind::new(k).unwrap(), Bytes::new())
                .unwrap();
        }
        assert_eq!(kinds_in(&orders), vec!["orders.created"]);
        assert_eq!(
            kinds_in(&all),
            vec!["orders.created", "orders.eu.created", "payments.done"]
        );
        assert!(kinds_in(&none).is_empty());
        assert_eq!(bus.stats().published, 3);
        assert_eq!(bus.in_flight(), 4);
    }

    #[test]
    fn closed_bus_refuses_publishes() {
        let bus = Bus::new();
        bus.close();
        let src: Arc<str> = "p".into();
        assert_eq!(
            bus.publish_unchecked(&src, Kind::new("a.b").unwrap(), Bytes::new()),
            Err(PublishError::Unavailable)
        );
    }

    #[test]
    fn drops_are_not_in_flight() {
        let bus = Bus::new();
        let mb = sub(&bus, &["a.>"], 1);
        let src: Arc<str> = "p".into();
        for _ in 0..3 {
            bus.publish_unchecked(&src, Kind::new("a.b").unwrap(), Bytes::new())
                .unwrap();
        }
        assert_eq!(mb.len(), 1);
        assert_eq!(bus.in_flight(), 1);
        assert_eq!(bus.stats().dropped, 2);
    }

    #[test]
    fn route_cache_is_bounded() {
        let bus = Bus::new();
        let _mb = sub(&bus, &["x.>"], 1);
        let src: Arc<str> = "p".into();
        for i in 0..(ROUTE_CACHE_LIMIT * 2) {
            bus.publish_unchecked(&src, Kind::new(&format!("k{i}")).unwrap(), Bytes::new())
                .unwrap();
        }
        assert!(bus.inner.routes.read().len() <= ROUTE_CACHE_LIMIT);
    }
}
