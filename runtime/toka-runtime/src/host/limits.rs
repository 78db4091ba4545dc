//! Per-agent resource limits: the store limiter (memory, tables, instances)
//! and the publish rate limiter.

use std::time::Instant;

use toka_core::config::Limits;
use wasmtime::{StoreLimits, StoreLimitsBuilder};

/// Instances, memories and tables one agent's store may hold. A Rust guest
/// needs a handful of each (the component's own plus the WASI adapter's);
/// the caps stop a component from instantiating without bound.
const MAX_INSTANCES: usize = 32;
const MAX_MEMORIES: usize = 8;
const MAX_TABLES: usize = 32;
pub(crate) const MAX_TABLE_ELEMENTS: usize = 100_000;

/// Build the store limiter for an agent with `limits`.
pub fn store_limits(limits: &Limits) -> StoreLimits {
    StoreLimitsBuilder::new()
        .memory_size((limits.memory_mb as usize).saturating_mul(1 << 20))
        .table_elements(MAX_TABLE_ELEMENTS)
        .instances(MAX_INSTANCES)
        .memories(MAX_MEMORIES)
        .tables(MAX_TABLES)
        // A failed grow becomes a trap naming the limit, instead of a -1 the
        // guest's allocator turns into an anonymous abort.
        .trap_on_grow_failure(true)
        .build()
}

/// A token bucket: `rate` tokens per second, at most `burst` banked.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: u32, burst: u32) -> Self {
        TokenBucket {
            rate: f64::from(rate.max(1)),
            burst: f64::from(burst.max(1)),
            tokens: f64::from(burst.max(1)),
            last: Instant::now(),
        }
    }

    /// Take one token if there is one.
    pub fn try_take(&mut self) -> bool {
        self.try_take_at(Instant::now())
    }

    fn try_take_at(&mut self, now: Instant) -> bool {
        if self.tokens < 1.0 {
            let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
            self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
            self.last = now;
        }
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bucket_allows_burst_then_refills_at_rate() {
        let start = Instant::now();
        let mut b = TokenBucket::new(10, 5);
        b.last = start;
        for _ in 0..5 {
            assert!(b.try_take_at(start));
        }
        assert!(!b.try_take_at(start), "burst exhausted");
        assert!(
            b.try_take_at(start + Duration::from_millis(100)),
            "one token after 1/rate"
        );
        assert!(!b.try_take_at(start + Duration::from_millis(100)));
        for _ in 0..5 {
            assert!(b.try_take_at(start + Duration::from_secs(60)));
        }
        assert!(
            !b.try_take_at(start + Duration::from_secs(60)),
            "never more than burst"
        );
    }
}
