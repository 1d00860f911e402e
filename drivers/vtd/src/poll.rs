//! Bounded waiting: the shared vocabulary of `lazaret_types::poll`.
pub use lazaret_types::poll::{poll_until, Clock, TimedOut};

#[cfg(any(test, feature = "sim"))]
pub use lazaret_types::poll::StepClock;
