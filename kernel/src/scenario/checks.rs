//! A scenario's checks: each prints one `RESULT` line; the run fails if any failed. RESULT
//! lines are sentences a person reads on a projector: values go through the `Display`
//! helpers here, never through `Debug` (`Ok(..)`, `None`, `Some(..)`).
use core::fmt;

use lazaret_edu::EduError;

use crate::console::result;
use crate::passthrough::iommu::Inspect;
use crate::passthrough::DeviceLock;

#[derive(Default)]
pub struct Checks {
    pub passed: usize,
    pub failed: usize,
}

impl Checks {
    pub fn check(&mut self, name: &str, pass: bool, details: fmt::Arguments) -> bool {
        result(name, pass, details);
        if pass {
            self.passed += 1;
        } else {
            self.failed += 1;
        }
        pass
    }

    /// Fails when any owner switch so far ended with a timed-out invalidation wait: the
    /// IOMMU's caches may then still hold the previous owner's translations.
    pub fn invalidation_waits_completed<V: Inspect>(&mut self, lock: &DeviceLock<V>) -> bool {
        let (switches, timeouts) = {
            let g = lock.lock();
            let stats = g.state().stats();
            (stats.owner_switches, stats.switch_timeouts)
        };
        self.check(
            "invalidation-waits",
            timeouts == 0,
            format_args!(
                "{} of {switches} owner switch(es) ended with a timed-out invalidation wait",
                Count(timeouts)
            ),
        )
    }
}

/// How a DMA ended, as words.
pub struct Dma<'a>(pub &'a Result<(), EduError>);

impl fmt::Display for Dma<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Ok(()) => f.write_str("the DMA completed"),
            Err(e) => write!(f, "the DMA failed: {e}"),
        }
    }
}

/// An outcome of the passthrough API, as words.
pub struct Outcome<'a, T, E>(pub &'a Result<T, E>);

impl<T, E: fmt::Display> fmt::Display for Outcome<'_, T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Ok(_) => f.write_str("done"),
            Err(e) => write!(f, "refused: {e}"),
        }
    }
}

/// A count where zero reads "none".
pub struct Count(pub u64);

impl fmt::Display for Count {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            0 => f.write_str("none"),
            n => write!(f, "{n}"),
        }
    }
}

/// `yes` / `NO` for a property in a sentence ("sentinels intact yes").
pub struct YesNo(pub bool);

impl fmt::Display for YesNo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0 { "yes" } else { "NO" })
    }
}
