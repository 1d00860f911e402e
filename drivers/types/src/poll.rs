//! Bounded waiting for hardware, shared by every driver: nothing spins forever; every
//! handshake takes a caller-supplied clock and time-out and returns [`TimedOut`] instead.

use core::fmt;

/// A monotonic microsecond clock supplied by the caller (TSC-based in the kernel).
pub trait Clock {
    fn now_us(&self) -> u64;
}

/// A bounded wait ran out of time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimedOut {
    pub waited_us: u64,
}

impl fmt::Display for TimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "hardware did not respond within {} us", self.waited_us)
    }
}

/// Calls `step` until it returns `Some`, or until `timeout_us` have passed on `clock`.
/// `step` is tried once more after the deadline, so a slow clock read cannot turn a completed
/// operation into a time-out.
pub fn poll_until<T>(
    clock: &(impl Clock + ?Sized),
    timeout_us: u64,
    mut step: impl FnMut() -> Option<T>,
) -> Result<T, TimedOut> {
    let start = clock.now_us();
    loop {
        if let Some(v) = step() {
            return Ok(v);
        }
        let waited_us = clock.now_us().saturating_sub(start);
        if waited_us >= timeout_us {
            return step().ok_or(TimedOut { waited_us });
        }
        core::hint::spin_loop();
    }
}

/// Advances one microsecond per reading, so time-outs happen after a bounded number of polls.
#[cfg(any(test, feature = "sim"))]
#[derive(Default)]
pub struct StepClock(pub core::cell::Cell<u64>);

#[cfg(any(test, feature = "sim"))]
impl Clock for StepClock {
    fn now_us(&self) -> u64 {
        let t = self.0.get();
        self.0.set(t + 1);
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::cell::Cell;

    #[test]
    fn succeeds_when_the_condition_becomes_true() {
        let tries = Cell::new(0);
        let r = poll_until(&StepClock::default(), 100, || {
            tries.set(tries.get() + 1);
            (tries.get() == 3).then_some(42)
        });
        assert_eq!(r, Ok(42));
    }

    #[test]
    fn times_out_after_the_budget() {
        let tries = Cell::new(0u32);
        let r: Result<(), _> = poll_until(&StepClock::default(), 10, || {
            tries.set(tries.get() + 1);
            None
        });
        assert_eq!(r, Err(TimedOut { waited_us: 10 }));
        assert!(
            tries.get() <= 12,
            "bounded number of polls: {}",
            tries.get()
        );
    }
}
