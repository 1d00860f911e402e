//! Fault accounting: a per-device counter that decays with time, a threshold past which the
//! device loses Bus Master Enable, and a rate limit on the fault log so a storm cannot drown
//! the console.

/// Faults within roughly one decay period that make a device lose bus mastering.
pub const THRESHOLD: u32 = 16;
/// The score halves every this many milliseconds. Long enough that a device faulting ten
/// times a second (QEMU's edu, one DMA per 100 ms) crosses the threshold.
pub const DECAY_MS: u64 = 10_000;
/// Fault lines logged per [`LOG_WINDOW_MS`]; the rest are counted as suppressed.
pub const LOG_BURST: u32 = 8;
pub const LOG_WINDOW_MS: u64 = 1000;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultCounter {
    /// Faults ever recorded.
    pub total: u64,
    /// The decaying score compared with [`THRESHOLD`].
    pub score: u32,
    last_ms: u64,
}

impl FaultCounter {
    /// Records one fault at `now_ms`; returns the new score.
    pub fn record(&mut self, now_ms: u64) -> u32 {
        let halvings = now_ms.saturating_sub(self.last_ms) / DECAY_MS;
        self.score = if halvings >= 32 {
            0
        } else {
            self.score >> halvings
        };
        // Keep the part-period already elapsed: the next halving is due DECAY_MS after the
        // last one, not after this fault.
        self.last_ms += halvings.saturating_mul(DECAY_MS);
        self.score = self.score.saturating_add(1);
        self.total += 1;
        self.score
    }
}

/// Rate limit for fault log lines: [`LOG_BURST`] per [`LOG_WINDOW_MS`], machine-wide.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogLimiter {
    window_start_ms: u64,
    lines: u32,
}

impl LogLimiter {
    /// Whether one more line may be logged at `now_ms`.
    pub fn allow(&mut self, now_ms: u64) -> bool {
        if now_ms.saturating_sub(self.window_start_ms) >= LOG_WINDOW_MS {
            self.window_start_ms = now_ms;
            self.lines = 0;
        }
        self.lines += 1;
        self.lines <= LOG_BURST
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn score_accumulates_and_decays() {
        let mut c = FaultCounter::default();
        for _ in 0..10 {
            c.record(5);
        }
        assert_eq!(c.score, 10);
        assert_eq!(c.record(5 + DECAY_MS), 6, "halved once, plus this fault");
        assert_eq!(
            c.record(5 + 100 * DECAY_MS),
            1,
            "long quiet resets the score"
        );
        assert_eq!(c.total, 12);
    }

    #[test]
    fn log_limiter_allows_a_burst_per_window() {
        let mut l = LogLimiter::default();
        let allowed = (0..20).filter(|_| l.allow(10)).count();
        assert_eq!(allowed, LOG_BURST as usize);
        assert!(l.allow(10 + LOG_WINDOW_MS), "a new window starts");
    }
}
