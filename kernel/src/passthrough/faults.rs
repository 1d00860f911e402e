//! Fault accounting: a per-device counter that decays with time, a threshold past which the
//! device loses Bus Master Enable, and a rate limit on the fault log so a storm cannot drown
//! the console. Blocked interrupt requests count like DMA faults: an interrupt storm from a
//! quarantined device ends the same way (clearing Bus Master Enable stops its MSIs too).
use alloc::string::String;
use alloc::vec::Vec;

use lazaret_types::Sbdf;

use super::iommu::{DmaFault, FaultKind, Vendor};
use super::lock::DevicesGuard;

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

/// What one drain of the fault logs found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FaultReport {
    pub faults: usize,
    pub overflowed: usize,
    pub suppressed: usize,
    /// Devices that crossed the threshold in this drain and lost Bus Master Enable.
    pub disabled: Vec<Sbdf>,
    pub recorded: Vec<DmaFault>,
}

/// Drains the IOMMU's fault records: logs them (rate-limited) with the device and its owner,
/// counts them per device, and clears Bus Master Enable (through `disable_bus_master`) on
/// devices past the threshold.
pub fn drain_faults<V: Vendor>(
    g: &mut DevicesGuard<'_, V>,
    now_ms: u64,
    disable_bus_master: &mut dyn FnMut(Sbdf) -> bool,
) -> FaultReport {
    let (_, s) = g.split();
    let mut report = FaultReport::default();
    let mut faults = Vec::new();
    report.overflowed = s.vendor.drain_faults(&mut |f| faults.push(f));
    for f in faults {
        report.faults += 1;
        // The device that sent it (the group leader for a shared alias ID).
        let sender = s
            .device_by_requester(f.segment, f.requester)
            .map(|d| d.sbdf);
        let device = sender.and_then(|sbdf| s.devices.get_mut(&sbdf));
        let (owner, sbdf) = match device {
            Some(d) => {
                if matches!(f.kind, FaultKind::Interrupt { .. }) {
                    d.interrupt_faults += 1;
                }
                let score = d.faults.record(now_ms);
                if score >= THRESHOLD && !d.bus_master_disabled {
                    d.bus_master_disabled = disable_bus_master(d.sbdf);
                    if d.bus_master_disabled {
                        report.disabled.push(d.sbdf);
                        log::warn!(
                            "fault: {} exceeded {THRESHOLD} faults; Bus Master Enable cleared, its DMA is stopped",
                            d.sbdf
                        );
                    }
                }
                (Some(d.owner), Some(d.sbdf))
            }
            None => (None, None),
        };
        if s.stats.fault_log.allow(now_ms) {
            let owner_name = owner
                .and_then(|o| s.domains.get(o))
                .map_or("none", |d| d.name.as_str());
            log::warn!(
                "fault: {:04x}:{} {}: {} (device {}, domain {})",
                f.segment,
                f.requester,
                what_faulted(&f),
                f.reason,
                sbdf.map_or_else(|| String::from("unknown"), |s| alloc::format!("{s}")),
                owner_name
            );
        } else {
            report.suppressed += 1;
        }
        report.recorded.push(f);
    }
    if report.suppressed > 0 {
        log::warn!(
            "fault: {} more fault(s) not logged (rate limit)",
            report.suppressed
        );
    }
    if report.overflowed > 0 {
        log::warn!(
            "fault: the fault log overflowed; {} fault(s) were not recorded",
            report.overflowed
        );
    }
    report
}

/// "write at 0x…" (DMA) or "interrupt index N" / "interrupt at 0x…".
fn what_faulted(f: &DmaFault) -> String {
    match f.kind {
        FaultKind::Dma => alloc::format!(
            "{} at {:#x}",
            if f.write { "write" } else { "read" },
            f.address
        ),
        FaultKind::Interrupt { index: Some(i) } => alloc::format!("interrupt index {i}"),
        FaultKind::Interrupt { index: None } => {
            alloc::format!("interrupt at {:#x}", f.address)
        }
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
