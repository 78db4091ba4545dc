//! Reuse of event allocations, so the dispatch hot path allocates nothing.
//!
//! Every published event is one `Arc<Event>`, allocated by the publishing
//! thread and released by the worker that handles its last copy. Left to the
//! allocator, that is a malloc on one core and a free on another for every
//! event, and the release also drops the event's kind and source on the
//! worker, whose reference counts the publisher is incrementing at the same
//! time: cache lines ping-pong between the two cores on every event.
//!
//! Instead a worker hands the allocations of the events it finished (those
//! it held the only reference to) back to a bounded process-wide list, once
//! per batch, after dropping their payloads. A publishing thread takes that
//! whole list into a thread-local cache when its cache is empty and reuses
//! the allocations in place. An allocation that already holds the new
//! event's kind and source (a stream's, nearly always) keeps them, so no
//! reference count changes at all; otherwise the old ones drop on the
//! publishing thread, where they were cloned. Allocations that do not fit
//! the bound are freed as usual, so memory stays bounded.

use std::cell::RefCell;
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use toka_core::{Event, Kind};

/// Most allocations kept on the shared list (about 128 bytes each).
const SHARED_MAX: usize = 4096;

/// Allocations returned by workers, waiting for a publishing thread.
static SHARED: Mutex<Vec<Arc<Event>>> = Mutex::new(Vec::new());

thread_local! {
    /// This thread's allocations to reuse.
    static LOCAL: RefCell<Vec<Arc<Event>>> = const { RefCell::new(Vec::new()) };
}

/// A new event behind an `Arc`, in a reused allocation when one is at hand.
pub(crate) fn new_event(
    id: u64,
    kind: &Kind,
    source: &Arc<str>,
    timestamp_ms: u64,
    payload: Bytes,
) -> Arc<Event> {
    let reused = LOCAL
        .try_with(|local| take(&mut *local.try_borrow_mut().ok()?, &SHARED))
        .ok()
        .flatten();
    reuse(reused, id, kind, source, timestamp_ms, payload)
}

/// Return finished events; the ones held elsewhere too are just dropped.
pub(crate) fn recycle(events: impl Iterator<Item = Arc<Event>>) {
    give(events, &SHARED);
}

fn take(local: &mut Vec<Arc<Event>>, shared: &Mutex<Vec<Arc<Event>>>) -> Option<Arc<Event>> {
    if local.is_empty() {
        // One lock per refill, not per event; skipped when contended.
        if let Some(mut shared) = shared.try_lock() {
            std::mem::swap(local, &mut *shared);
        }
    }
    local.pop()
}

fn reuse(
    reused: Option<Arc<Event>>,
    id: u64,
    kind: &Kind,
    source: &Arc<str>,
    timestamp_ms: u64,
    payload: Bytes,
) -> Arc<Event> {
    if let Some(mut arc) = reused
        && let Some(slot) = Arc::get_mut(&mut arc)
    {
        slot.id = id;
        slot.timestamp_ms = timestamp_ms;
        slot.payload = payload;
        // A stream reuses allocations that already hold its kind and source:
        // keep them rather than clone the new ones and drop the old. Their
        // reference counts then stay untouched, so the cache lines holding
        // the kind's and source's text (beside the counts) stay shared with
        // the worker reading them, instead of moving to this core and back
        // on every event. The old ones, when different, drop here, on the
        // thread that cloned them.
        if !same_text(slot.kind.as_str(), kind.as_str()) {
            slot.kind = kind.clone();
        }
        if !Arc::ptr_eq(&slot.source, source) {
            slot.source = source.clone();
        }
        return arc;
    }
    // No allocation at hand (or, never in practice, a shared one).
    Arc::new(Event {
        id,
        kind: kind.clone(),
        source: source.clone(),
        timestamp_ms,
        payload,
    })
}

/// Whether `a` and `b` are the same allocation: both are alive, so equal
/// addresses mean the same `Kind`.
fn same_text(a: &str, b: &str) -> bool {
    std::ptr::eq(a, b)
}

fn give(events: impl Iterator<Item = Arc<Event>>, shared: &Mutex<Vec<Arc<Event>>>) {
    let mut spare: Vec<Arc<Event>> = Vec::new();
    for mut event in events {
        if let Some(unique) = Arc::get_mut(&mut event) {
            // The payload can be large: release it now, not when reused.
            unique.payload = Bytes::new();
            spare.push(event);
        }
    }
    if spare.is_empty() {
        return;
    }
    let mut shared = shared.lock();
    spare.truncate(SHARED_MAX.saturating_sub(shared.len()));
    shared.append(&mut spare);
}

#[cfg(test)]
mod tests {
    use super::*;
    use toka_core::Kind;

    fn event(id: u64, payload: &'static [u8]) -> Event {
        Event {
            id,
            kind: Kind::new("a.b").unwrap(),
            source: "t".into(),
            timestamp_ms: 0,
            payload: Bytes::from_static(payload),
        }
    }

    #[test]
    fn reuses_only_unique_allocations_and_drops_payloads() {
        let shared = Mutex::new(Vec::new());
        let a = Arc::new(event(1, b"one"));
        let b = Arc::new(event(2, b"two"));
        let keep = b.clone();
        let a_ptr = Arc::as_ptr(&a);
        give([a, b].into_iter(), &shared);
        assert_eq!(
            keep.payload,
            Bytes::from_static(b"two"),
            "a shared event is untouched"
        );
        assert_eq!(shared.lock().len(), 1, "only the unique allocation is kept");
        assert!(
            shared.lock()[0].payload.is_empty(),
            "its payload is released"
        );

        let mut local = Vec::new();
        let kind = Kind::new("c.d").unwrap();
        let source: Arc<str> = "s".into();
        let new = |local: &mut Vec<_>, id| {
            let payload = Bytes::from_static(b"new");
            reuse(take(local, &shared), id, &kind, &source, 7, payload)
        };
        let reused = new(&mut local, 3);
        assert_eq!(Arc::as_ptr(&reused), a_ptr, "the allocation is reused");
        assert_eq!(
            (
                reused.id,
                reused.kind.as_str(),
                &*reused.source,
                reused.timestamp_ms
            ),
            (3, "c.d", "s", 7)
        );
        assert_eq!(reused.payload, Bytes::from_static(b"new"));
        assert!(shared.lock().is_empty() && local.is_empty());
        let fresh = new(&mut local, 4);
        assert_ne!(Arc::as_ptr(&fresh), a_ptr);
        assert_eq!((fresh.id, fresh.kind.as_str()), (4, "c.d"));
    }

    #[test]
    fn the_shared_list_is_bounded() {
        let shared = Mutex::new(Vec::new());
        give(
            (0..SHARED_MAX as u64 + 10).map(|i| Arc::new(event(i, b""))),
            &shared,
        );
        assert_eq!(shared.lock().len(), SHARED_MAX);
    }
}
