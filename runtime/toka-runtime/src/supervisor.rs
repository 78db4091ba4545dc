//! Restart policy: exponential backoff between restarts, quarantine after
//! too many faults within a window, whether consecutive or spread between
//! successes (an agent faulting on every other event is quarantined too).
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
    /// Stop restarting: `failures` faults within the window.
    Quarantine {
        /// How many faults within the window led here.
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
    /// Times of the faults within the window, oldest first; successes do
    /// not clear it, so the fault *rate* is what quarantines.
    faults: VecDeque<Instant>,
    /// How many of the newest `faults` came with no success in between:
    /// the backoff exponent.
    streak: usize,
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
            streak: 0,
        }
    }

    /// The agent handled something successfully: the backoff starts over
    /// (its faults still count towards quarantine until they leave the
    /// window).
    pub fn success(&mut self) {
        self.streak = 0;
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
        self.streak = (self.streak + 1).min(self.faults.len());
        let failures = self.faults.len() as u32;
        if failures > self.max_restarts {
            return Verdict::Quarantine { failures };
        }
        let exponent = u32::try_from(self.streak - 1).unwrap_or(u32::MAX);
        let factor = 1u32.checked_shl(exponent).unwrap_or(u32::MAX);
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
    fn faults_between_successes_still_quarantine() {
        let mut s = Supervisor::new(&limits());
        let t = Instant::now();
        for i in 0..3 {
            s.success();
            assert_eq!(
                s.fault(t + Duration::from_secs(i)),
                Verdict::Restart(Duration::from_millis(100)),
                "each success resets the backoff"
            );
        }
        s.success();
        assert_eq!(
            s.fault(t + Duration::from_secs(3)),
            Verdict::Quarantine { failures: 4 },
            "four faults in the window, successes or not"
        );
    }

    #[test]
    fn a_fault_rate_below_the_window_is_tolerated() {
        let mut s = Supervisor::new(&limits());
        let t = Instant::now();
        // One fault every 4 s: at most three in any 10 s window.
        for i in 0..20 {
            s.success();
            assert_eq!(
                s.fault(t + Duration::from_secs(4 * i)),
                Verdict::Restart(Duration::from_millis(100)),
                "fault {i}"
            );
        }
    }

    #[test]
    fn backoff_streak_restarts_after_old_faults_leave() {
        let mut s = Supervisor::new(&limits());
        let t = Instant::now();
        s.fault(t);
        s.fault(t);
        let later = t + Duration::from_secs(11);
        assert_eq!(s.fault(later), Verdict::Restart(Duration::from_millis(100)));
        assert_eq!(s.fault(later), Verdict::Restart(Duration::from_millis(200)));
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
