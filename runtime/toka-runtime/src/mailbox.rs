//! Per-agent bounded mailboxes.
//!
//! Each agent has exactly one mailbox and exactly one consumer at a time, so
//! an agent sees its events in the order they were delivered to it. A full
//! mailbox drops the *newest* event for that agent only (the publisher and
//! every other subscriber are unaffected), counts it, and logs one warning per
//! overflow episode rather than one per event, so a flood cannot turn into a
//! log flood.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;
use toka_core::Event;

/// Told when a mailbox goes from "nothing to do" to "has work".
pub(crate) trait Wake: Send + Sync {
    fn wake(&self);
}

/// Outcome of offering an event to a mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Delivery {
    Queued,
    Dropped,
}

pub(crate) struct Mailbox {
    agent: Arc<str>,
    capacity: usize,
    queue: Mutex<VecDeque<Arc<Event>>>,
    waker: Arc<dyn Wake>,
    dropped: AtomicU64,
    delivered: AtomicU64,
    /// Set once the agent is quarantined: pushes are refused without waking it.
    closed: AtomicBool,
    /// Set while the mailbox is overflowing, so only the first drop of an
    /// episode is logged.
    overflowing: AtomicBool,
}

impl Mailbox {
    pub(crate) fn new(agent: Arc<str>, capacity: usize, waker: Arc<dyn Wake>) -> Self {
        Mailbox {
            agent,
            capacity: capacity.max(1),
            queue: Mutex::new(VecDeque::new()),
            waker,
            dropped: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            overflowing: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        }
    }

    /// Queue `event`, or drop it if the mailbox is full.
    pub(crate) fn push(&self, event: Arc<Event>) -> Delivery {
        if self.closed.load(Ordering::Relaxed) {
            return Delivery::Dropped;
        }
        {
            let mut queue = self.queue.lock();
            if queue.len() >= self.capacity {
                drop(queue);
                self.dropped.fetch_add(1, Ordering::Relaxed);
                if !self.overflowing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        agent = %self.agent,
                        capacity = self.capacity,
                        kind = %event.kind,
                        "mailbox full: dropping new events for this agent until it catches up"
                    );
                }
                return Delivery::Dropped;
            }
            queue.push_back(event);
        }
        self.delivered.fetch_add(1, Ordering::Relaxed);
        self.waker.wake();
        Delivery::Queued
    }

    /// Move up to `max` queued events into `out`, oldest first.
    pub(crate) fn drain_into(&self, out: &mut VecDeque<Arc<Event>>, max: usize) {
        let mut queue = self.queue.lock();
        let n = queue.len().min(max);
        out.extend(queue.drain(..n));
        if n > 0 && self.overflowing.load(Ordering::Relaxed) {
            self.overflowing.store(false, Ordering::Relaxed);
        }
    }

    /// Refuse all further events (the agent is gone for good).
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.queue.lock().is_empty()
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.queue.lock().len()
    }

    /// Discard everything queued (quarantined agent, abandoned drain); returns how many.
    pub(crate) fn clear(&self) -> usize {
        let mut queue = self.queue.lock();
        let n = queue.len();
        queue.clear();
        n
    }

    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    pub(crate) fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use toka_core::Kind;

    struct CountWakes(AtomicUsize);
    impl Wake for CountWakes {
        fn wake(&self) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn ev(id: u64) -> Arc<Event> {
        Arc::new(Event {
            id,
            kind: Kind::new("a.b").unwrap(),
            source: "t".into(),
            timestamp_ms: 0,
            payload: Default::default(),
        })
    }

    #[test]
    fn full_mailbox_drops_newest_and_counts() {
        let wakes = Arc::new(CountWakes(AtomicUsize::new(0)));
        let mb = Mailbox::new("a".into(), 2, wakes.clone());
        assert_eq!(mb.push(ev(1)), Delivery::Queued);
        assert_eq!(mb.push(ev(2)), Delivery::Queued);
        assert_eq!(mb.push(ev(3)), Delivery::Dropped);
        assert_eq!(mb.dropped(), 1);
        assert_eq!(wakes.0.load(Ordering::Relaxed), 2);
        let mut out = VecDeque::new();
        mb.drain_into(&mut out, 10);
        let ids: Vec<u64> = out.iter().map(|e| e.id).collect();
        assert_eq!(
            ids,
            vec![1, 2],
            "oldest kept, newest dropped, order preserved"
        );
        assert!(mb.is_empty());
        assert_eq!(mb.push(ev(4)), Delivery::Queued);
    }

    #[test]
    fn drain_respects_batch_limit() {
        let mb = Mailbox::new("a".into(), 10, Arc::new(CountWakes(AtomicUsize::new(0))));
        for i in 0..5 {
            mb.push(ev(i));
        }
        let mut out = VecDeque::new();
        mb.drain_into(&mut out, 3);
        assert_eq!(out.len(), 3);
        assert_eq!(mb.len(), 2);
    }
}
