//! Fault accounting: a per-device counter that decays with time, a threshold past which the
//! device loses Bus Master Enable, and a rate limit on the fault log so a storm cannot drown
//! the console.

/// Faults within roughly one decay period that make a device lose bus mastering.
pub const THRESHOLD: u32 = 32;
/// The counter halves every this many milliseconds without faults.
pub const DECAY_MS: u64 = 1000;
/// Fault lines logged per drain; the rest are counted as suppressed.
pub const LOG_BURST: usize = 8;

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
        self.score = if halvings >= 32 { 0 } else { self.score >> halvings };
        if halvings > 0 {
            self.last_ms = now_ms;
        }
        self.score = self.score.saturating_add(1);
        self.total += 1;
        self.score
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
        assert_eq!(c.record(5 + 100 * DECAY_MS), 1, "long quiet resets the score");
        assert_eq!(c.total, 12);
    }
}
