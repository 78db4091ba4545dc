//! Restart policy: exponential backoff between restarts, quarantine after
//! too many consecutive faults within a window.
//!
//! Pure bookkeeping (no clocks of its own, no I/O) so the policy is unit
//! tested directly; the worker feeds it times and acts on its verdicts.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use toka_core::config::Limits;

/// What to do after a fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Restart no earlier than this delay from now.
    Restart(Duration),
    /// Stop restarting: `failures` consecutive faults within the window.
    Quarantine {
        /// How many consecutive faults led here.
        failures: u32,
    },
}

/// Fault history of one agent.
#[derive(Debug, Clone)]
pub struct Supervisor {
    max_restarts: u32,
    window: Duration,
    backoff: Duration,
    backoff_max: Duration,
    /// Times of consecutive faults (no success in between), oldest first.
    faults: VecDeque<Instant>,
}

impl Supervisor {
    /// A supervisor applying `limits`' restart policy.
    pub fn new(limits: &Limits) -> Self {
        Supervisor {
            max_restarts: limits.max_restarts,
            window: limits.restart_window,
            backoff: limits.backoff,
            backoff_max: limits.backoff_max,
            faults: VecDeque::new(),
        }
    }

    /// The agent handled something successfully: the fault streak is over.
    pub fn success(&mut self) {
        self.faults.clear();
    }

    /// Record a fault at `now` and decide what happens next.
    pub fn fault(&mut self, now: Instant) -> Verdict {
        while let Some(first) = self.faults.front() {
            if now.saturating_duration_since(*first) > self.window {
                self.faults.pop_front();
            } else {
                break;
            }
        }
        self.faults.push_back(now);
        let failures = self.faults.len() as u32;
        if failures > self.max_restarts {
            return Verdict::Quarantine { failures };
        }
        let factor = 1u32.checked_shl(failures - 1).unwrap_or(u32::MAX);
        Verdict::Restart(self.backoff.saturating_mul(factor).min(self.backoff_max))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_restarts: 3,
            restart_window: Duration::from_secs(10),
            backoff: Duration::from_millis(100),
            backoff_max: Duration::from_millis(300),
            ..Limits::default()
        }
    }

    #[test]
    fn backoff_doubles_up_to_max_then_quarantines() {
        let mut s = Supervisor::new(&limits());
        let t = Instant::now();
        assert_eq!(s.fault(t), Verdict::Restart(Duration::from_millis(100)));
        assert_eq!(s.fault(t), Verdict::Restart(Duration::from_millis(200)));
        assert_eq!(s.fault(t), Verdict::Restart(Duration::from_millis(300)));
        assert_eq!(s.fault(t), Verdict::Quarantine { failures: 4 });
    }

    #[test]
    fn success_resets_the_streak() {
        let mut s = Supervisor::new(&limits());
        let t = Instant::now();
        s.fault(t);
        s.fault(t);
        s.success();
        assert_eq!(s.fault(t), Verdict::Restart(Duration::from_millis(100)));
    }

    #[test]
    fn old_faults_leave_the_window() {
        let mut s = Supervisor::new(&limits());
        let t = Instant::now();
        for _ in 0..3 {
            s.fault(t);
        }
        let later = t + Duration::from_secs(11);
        assert_eq!(s.fault(later), Verdict::Restart(Duration::from_millis(100)));
    }
}
