//! The bounded set of Stripe event ids already published: the webhook
//! dedup. It remembers the last [`CAPACITY`] ids (first in, first out), in
//! the service agent's memory, so a redelivery of one of them (Stripe
//! retries until it gets a 2xx, and may deliver an event more than once) is
//! answered `duplicate` and not published again. A restart of the agent
//! forgets them.

use std::collections::{HashSet, VecDeque};

/// How many ids are remembered.
pub const CAPACITY: usize = 10_000;

/// Ids in arrival order, and the same as a set.
#[derive(Default)]
pub struct Seen {
    order: VecDeque<String>,
    set: HashSet<String>,
    capacity: usize,
}

impl Seen {
    /// An empty set remembering at most `capacity` ids.
    pub fn new(capacity: usize) -> Self {
        Seen {
            order: VecDeque::new(),
            set: HashSet::new(),
            capacity: capacity.max(1),
        }
    }

    /// Whether `id` is remembered.
    pub fn contains(&self, id: &str) -> bool {
        self.set.contains(id)
    }

    /// Remember `id`, forgetting the oldest when full.
    pub fn insert(&mut self, id: &str) {
        if !self.set.insert(id.to_owned()) {
            return;
        }
        self.order.push_back(id.to_owned());
        while self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
    }

    /// How many ids are remembered.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forgets_the_oldest_past_capacity() {
        let mut seen = Seen::new(2);
        seen.insert("a");
        seen.insert("b");
        seen.insert("a");
        assert_eq!(seen.len(), 2);
        seen.insert("c");
        assert!(!seen.contains("a") && seen.contains("b") && seen.contains("c"));
        assert_eq!(seen.len(), 2);
    }
}
