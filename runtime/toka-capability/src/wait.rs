//! Host calls that wait, bounded by the calling instance's deadline: the
//! one mechanism every waiting host call uses, the kernel's (`wasi:io/poll`,
//! `request`) and the capabilities' (a key-value commit, an HTTP request)
//! alike, through [`View::wait`](crate::View::wait).
//!
//! Epoch interruption stops guest code, not a guest parked inside a host
//! call: a guest that sleeps through `wasi:io/poll` (`std::thread::sleep`,
//! `subscribe-duration` + `poll`, `pollable.block`) would otherwise hold its
//! worker thread for as long as it asks, past `timeout_ms`, through shutdown.
//! Every waiting host call goes through [`bounded`], which
//!
//! 1. gives the wait at most the call's remaining deadline (the `timeout_ms`
//!    of the `init`/`handle` call it happens in, armed by [`WaitState::arm`]),
//!    and past it fails the call with a [`WaitDeadline`] error, which the
//!    instance reports as a `deadline` fault, as for a looping guest;
//! 2. on a worker thread, starts a stand-in worker for the time of the wait
//!    (the kernel's worker pool sets how, with [`set_stand_in`]), so a waiting guest never takes a worker from
//!    the other agents, even with `workers = 1`;
//! 3. refuses to wait at all (a `deadline` fault at once) when
//!    [`MAX_WAITING`] guests already wait: stand-ins are threads, and an
//!    unbounded number of them would be the next resource to exhaust.
//!
//! The remaining deadline is computed from a coarse clock that the epoch
//! ticker advances, so arming a call costs one relaxed atomic load, not a
//! clock read, on the dispatch path.

use std::any::Any;
use std::cell::RefCell;
use std::future::Future;
use std::rc::Rc;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Most guests that may wait in host calls at once (process-wide); each
/// costs a parked worker and a stand-in thread.
pub const MAX_WAITING: usize = 256;

static ORIGIN: LazyLock<Instant> = LazyLock::new(Instant::now);

/// [`now_ms`] as of the last epoch tick (0: never ticked).
static COARSE_MS: AtomicU64 = AtomicU64::new(0);

/// Milliseconds since [`ORIGIN`], plus one so that 0 means "never".
fn now_ms() -> u64 {
    ORIGIN.elapsed().as_millis() as u64 + 1
}

/// Advance the coarse clock; called by the kernel's epoch ticker on every tick.
pub fn tick() {
    COARSE_MS.store(now_ms(), Ordering::Relaxed);
}

/// Where a call armed when the coarse clock reads `coarse` starts.
fn start_ms(coarse: u64) -> u64 {
    match coarse {
        // Armed before the first tick (a request served in the first few
        // milliseconds of a process): the precise clock, or the deadline
        // would count from the clock's origin and be long past once it ticks.
        0 => now_ms(),
        ms => ms,
    }
}

/// The deadline of the call an instance is in, for the host calls it makes.
#[derive(Debug, Clone, Copy, Default)]
pub struct WaitState {
    /// Coarse milliseconds (see [`COARSE_MS`]) at which the call's deadline
    /// passes; 0 before the first call is armed.
    deadline_ms: u64,
    /// The call's whole budget, used where the coarse clock never ticked
    /// (an instance driven without a runtime).
    timeout_ms: u64,
}

impl WaitState {
    /// A call with `timeout` begins now.
    #[inline]
    pub fn arm(&mut self, timeout: Duration) {
        let timeout_ms = timeout.as_millis() as u64;
        // The coarse clock lags real time by up to one tick; the epoch
        // deadline is counted in the same ticks, so the two agree.
        let start = start_ms(COARSE_MS.load(Ordering::Relaxed));
        self.timeout_ms = timeout_ms;
        self.deadline_ms = start.saturating_add(timeout_ms);
    }

    /// What is left of the call's deadline.
    pub fn remaining(&self) -> Duration {
        if COARSE_MS.load(Ordering::Relaxed) == 0 {
            return Duration::from_millis(self.timeout_ms);
        }
        Duration::from_millis(self.deadline_ms.saturating_sub(now_ms()))
    }
}

/// A guest's wait in a host call ran into its call's deadline (or could not
/// start): reported as a `deadline` fault.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{call}: {why}")]
pub struct WaitDeadline {
    /// The host call, e.g. `wasi:io/poll.poll`.
    pub call: &'static str,
    /// What ended it.
    pub why: String,
}

/// Guests waiting in host calls right now, process-wide.
static WAITING: AtomicUsize = AtomicUsize::new(0);

/// Guests waiting in host calls right now, process-wide (at most
/// [`MAX_WAITING`] are let in).
pub fn waiting() -> usize {
    WAITING.load(Ordering::Relaxed)
}

/// Starts a stand-in for the calling worker thread; the returned guard ends
/// it when dropped.
pub type StartStandIn = Rc<dyn Fn() -> Result<Box<dyn Any>, String>>;

thread_local! {
    /// Set on the kernel's worker threads, none elsewhere.
    static STAND_IN: RefCell<Option<StartStandIn>> = const { RefCell::new(None) };
}

/// Set (or clear) how a wait on this thread keeps the worker pool at size
/// (called by the kernel's worker threads).
pub fn set_stand_in(start: Option<StartStandIn>) {
    STAND_IN.with_borrow_mut(|s| *s = start);
}

/// One counted wait, and the stand-in serving for it (if on a worker).
struct Waiting {
    _stand_in: Option<Box<dyn Any>>,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        WAITING.fetch_sub(1, Ordering::AcqRel);
    }
}

fn begin_wait() -> Result<Waiting, String> {
    let waiting = WAITING.fetch_add(1, Ordering::AcqRel);
    let mut guard = Waiting { _stand_in: None };
    if waiting >= MAX_WAITING {
        return Err(format!(
            "{waiting} guests are already waiting in host calls (the most allowed)"
        ));
    }
    if let Some(start) = STAND_IN.with_borrow(Clone::clone) {
        guard._stand_in = Some(start()?);
    }
    Ok(guard)
}

/// Run the host-side wait `wait` for the guest call `call` under `state`'s
/// deadline (see the module docs).
pub fn bounded<F: Future>(
    state: &WaitState,
    call: &'static str,
    wait: F,
) -> Result<F::Output, WaitDeadline> {
    let remaining = state.remaining();
    let past = |waited: Duration| WaitDeadline {
        call,
        why: format!(
            "the guest waited in a host call until its deadline (timeout_ms = {}, waited {} ms)",
            state.timeout_ms,
            waited.as_millis()
        ),
    };
    if remaining.is_zero() {
        return Err(past(Duration::ZERO));
    }
    let _stand_in = begin_wait().map_err(|why| WaitDeadline { call, why })?;
    let started = Instant::now();
    wasmtime_wasi::runtime::in_tokio(async { tokio::time::timeout(remaining, wait).await })
        .map_err(|_| past(started.elapsed()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_ends_at_the_remaining_deadline() {
        tick();
        let mut state = WaitState::default();
        state.arm(Duration::from_millis(50));
        let started = Instant::now();
        let err = bounded(&state, "test.wait", std::future::pending::<()>())
            .expect_err("a wait that never ends is cut at the deadline");
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(err.to_string().contains("deadline"), "{err}");
        state.arm(Duration::from_secs(10));
        assert_eq!(bounded(&state, "test.ready", async { 7 }).ok(), Some(7));
    }

    #[test]
    fn a_call_armed_before_the_first_tick_starts_now() {
        let _ = now_ms();
        std::thread::sleep(Duration::from_millis(30));
        // Not ORIGIN (which is 30 ms and more in the past): the present.
        assert!(start_ms(0) >= 30, "{}", start_ms(0));
        assert_eq!(start_ms(1234), 1234, "a ticking clock is used as is");
    }

    #[test]
    fn a_spent_deadline_refuses_to_wait() {
        tick();
        let mut state = WaitState::default();
        state.arm(Duration::ZERO);
        assert!(bounded(&state, "test.wait", async {}).is_err());
    }
}
