//! Time from the TSC, calibrated once against the PIT.
//!
//! Log timestamps, boot-time figures and every bounded hardware wait use it. Calibration
//! counts TSC ticks across a 2 ms PIT one-shot (channel 2, gate via port 0x61), which QEMU
//! TCG and real hardware both provide. 2 ms is 2,386 PIT counts: the count quantises the rate
//! to 0.05 % and the polling of port 0x61 adds microseconds, well inside what timestamps and
//! time-outs need; the 10 ms it used to take was the largest single item of the boot.
use core::sync::atomic::{AtomicU64, Ordering};

use lazaret_rt::port::{inb, outb};

static ENTRY_TSC: AtomicU64 = AtomicU64::new(0);
/// TSC ticks per millisecond; 0 until calibrated (then timestamps read 0).
static TICKS_PER_MS: AtomicU64 = AtomicU64::new(0);

const PIT_HZ: u64 = 1_193_182;
const CALIBRATION_MS: u64 = 2;
/// Fallback when the PIT never signals (no PIT, broken gate): 1 GHz, logged as a guess.
const FALLBACK_TICKS_PER_MS: u64 = 1_000_000;

pub fn now() -> u64 {
    // SAFETY: rdtsc only reads the time-stamp counter.
    unsafe { x86::time::rdtsc() }
}

pub fn set_entry(tsc: u64) {
    ENTRY_TSC.store(tsc, Ordering::Relaxed);
}

pub fn ticks_per_ms() -> u64 {
    TICKS_PER_MS.load(Ordering::Relaxed)
}

/// Nanoseconds in `ticks` (0 before calibration).
pub fn ticks_to_nanos(ticks: u64) -> u128 {
    match ticks_per_ms() {
        0 => 0,
        t => u128::from(ticks) * 1_000_000 / u128::from(t),
    }
}

/// Microseconds in `ticks` (0 before calibration).
pub fn ticks_to_micros(ticks: u64) -> u64 {
    (ticks_to_nanos(ticks) / 1000) as u64
}

pub fn micros_since_entry() -> u64 {
    ticks_to_micros(now().saturating_sub(ENTRY_TSC.load(Ordering::Relaxed)))
}

/// A deadline `ms` milliseconds from now, for bounded waits.
pub fn deadline_after_ms(ms: u64) -> u64 {
    now().saturating_add(ms.saturating_mul(ticks_per_ms().max(1)))
}

pub fn passed(deadline: u64) -> bool {
    now() >= deadline
}

/// Measures the TSC rate; returns ticks per ms and whether the PIT answered.
pub fn calibrate() -> (u64, bool) {
    let count = (PIT_HZ * CALIBRATION_MS / 1000) as u16;
    // SAFETY: ports 0x61 (NMI status / speaker gate) and 0x42/0x43 (PIT channel 2) belong to
    // the legacy platform, which the kernel owns; the speaker output stays disabled (bit 1).
    let (start, end, answered) = unsafe {
        outb(0x61, (inb(0x61) & !0x02) | 0x01);
        outb(0x43, 0b1011_0000); // channel 2, lobyte/hibyte, mode 0 (one-shot), binary
        outb(0x42, count as u8);
        outb(0x42, (count >> 8) as u8);
        let start = now();
        let mut spins: u64 = 0;
        // OUT2 (port 0x61 bit 5) goes high when the count reaches zero.
        while inb(0x61) & 0x20 == 0 && spins < 50_000_000 {
            spins += 1;
        }
        (start, now(), spins < 50_000_000)
    };
    let per_ms = if answered {
        (end - start) / CALIBRATION_MS
    } else {
        FALLBACK_TICKS_PER_MS
    };
    TICKS_PER_MS.store(per_ms.max(1), Ordering::Relaxed);
    (per_ms, answered)
}

/// The TSC as the microsecond clock the IOMMU drivers bound their waits with.
pub struct TscClock;

impl lazaret_vtd::Clock for TscClock {
    fn now_us(&self) -> u64 {
        micros_since_entry()
    }
}
