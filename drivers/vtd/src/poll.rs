//! Bounded waiting: the shared vocabulary of `lazaret_types::poll`.
pub use lazaret_types::poll::{poll_until, Clock, TimedOut};

#[cfg(test)]
pub(crate) mod test_clock {
    pub use lazaret_types::poll::StepClock;
}
