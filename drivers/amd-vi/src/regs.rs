//! MMIO register offsets and typed decoders (AMD IOMMU spec §3.4 "IOMMU MMIO Registers").

use core::fmt;

use lazaret_types::PhysAddr;

use crate::levels::Levels;

/// §3.4.1 Device Table Base Address: base 51:12, Size 8:0 (4 KiB pages - 1).
pub const DEVICE_TABLE_BASE: usize = 0x0000;
/// §3.4.2 Command Buffer Base Address: base 51:12, ComLen 59:56.
pub const COMMAND_BUFFER_BASE: usize = 0x0008;
/// §3.4.3 Event Log Base Address: base 51:12, EventLen 59:56.
pub const EVENT_LOG_BASE: usize = 0x0010;
/// §3.4.4 IOMMU Control.
pub const CONTROL: usize = 0x0018;
/// §3.4.5 Exclusion Base (ExEn bit 0, Allow bit 1, base 51:12).
pub const EXCLUSION_BASE: usize = 0x0020;
/// §3.4.5 Exclusion Range Limit (limit 51:12).
pub const EXCLUSION_LIMIT: usize = 0x0028;
/// §3.4.6 Extended Feature Register.
pub const EXTENDED_FEATURE: usize = 0x0030;
/// §3.4.7 Command Buffer Head Pointer: byte offset 18:4.
pub const COMMAND_HEAD: usize = 0x2000;
/// §3.4.7 Command Buffer Tail Pointer: byte offset 18:4.
pub const COMMAND_TAIL: usize = 0x2008;
/// §3.4.8 Event Log Head Pointer: byte offset 18:4.
pub const EVENT_HEAD: usize = 0x2010;
/// §3.4.8 Event Log Tail Pointer: byte offset 18:4.
pub const EVENT_TAIL: usize = 0x2018;
/// §3.4.9 IOMMU Status.
pub const STATUS: usize = 0x2020;

/// Base-address field, bits 51:12, of the table base registers.
pub const BASE_MASK: u64 = 0x000f_ffff_ffff_f000;
/// Head/tail pointer field, bits 18:4 (a byte offset into the ring).
pub const RING_POINTER_MASK: u64 = 0x7fff0;

/// Control register bits (§3.4.4).
pub mod control {
    /// IommuEn: translate and check DMA, remap interrupts.
    pub const IOMMU_EN: u64 = 1 << 0;
    /// HtTunEn: HyperTransport tunnel translation.
    pub const HT_TUN_EN: u64 = 1 << 1;
    /// EventLogEn: record events in the event log.
    pub const EVENT_LOG_EN: u64 = 1 << 2;
    /// EventIntEn: interrupt when an event is logged.
    pub const EVENT_INT_EN: u64 = 1 << 3;
    /// ComWaitIntEn: interrupt on COMPLETION_WAIT with I=1.
    pub const COM_WAIT_INT_EN: u64 = 1 << 4;
    /// InvTimeOut, bits 7:5: invalidation time-out (0 = none).
    pub const INV_TIMEOUT_MASK: u64 = 0b111 << 5;
    /// Coherent: device-table / page-table fetches snoop the CPU caches.
    pub const COHERENT: u64 = 1 << 10;
    /// CmdBufEn: fetch and execute commands.
    pub const CMD_BUF_EN: u64 = 1 << 12;
    /// GAEn: guest virtual APIC mode; interrupt remapping table entries are 128 bits (the
    /// format QEMU and current hardware use), 32 bits while clear.
    pub const GA_EN: u64 = 1 << 17;
}

/// Status register bits (§3.4.9). Bits 0..2 are write-1-to-clear; 3 and 4 are read-only.
pub mod status {
    /// EventOverflow: the log filled up, logging stopped (W1C).
    pub const EVENT_OVERFLOW: u64 = 1 << 0;
    /// EventLogInt: an event was logged (W1C).
    pub const EVENT_LOG_INT: u64 = 1 << 1;
    /// ComWaitInt: a COMPLETION_WAIT with I=1 completed (W1C).
    pub const COM_WAIT_INT: u64 = 1 << 2;
    /// EventLogRun: the unit is writing events (read-only).
    pub const EVENT_LOG_RUN: u64 = 1 << 3;
    /// CmdBufRun: the unit is fetching commands (read-only).
    pub const CMD_BUF_RUN: u64 = 1 << 4;
}

/// Decoded Extended Feature Register (§3.4.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExtendedFeatures(pub u64);

impl ExtendedFeatures {
    const fn bit(self, n: u32) -> bool {
        self.0 & (1 << n) != 0
    }

    /// PrefSup: PREFETCH_IOMMU_PAGES supported.
    pub const fn prefetch(self) -> bool {
        self.bit(0)
    }
    /// PPRSup: peripheral page requests.
    pub const fn ppr(self) -> bool {
        self.bit(1)
    }
    /// XTSup: x2APIC interrupt remapping.
    pub const fn x2apic(self) -> bool {
        self.bit(2)
    }
    /// NXSup: no-execute protection in PTEs.
    pub const fn no_execute(self) -> bool {
        self.bit(3)
    }
    /// GTSup: guest (nested, v2) translation.
    pub const fn guest_translation(self) -> bool {
        self.bit(4)
    }
    /// IASup: INVALIDATE_IOMMU_ALL supported.
    pub const fn invalidate_all(self) -> bool {
        self.bit(6)
    }
    /// GASup: guest virtual APIC.
    pub const fn guest_apic(self) -> bool {
        self.bit(7)
    }
    /// HESup: hardware error registers.
    pub const fn hardware_error_regs(self) -> bool {
        self.bit(8)
    }
    /// PCSup: performance counters.
    pub const fn perf_counters(self) -> bool {
        self.bit(9)
    }

    /// HATS, bits 11:10: host address translation size, i.e. the deepest host page table the
    /// unit walks (00b = 4 levels, 01b = 5, 10b = 6, 11b reserved). `None` when reserved.
    /// QEMU's amd-iommu reports 10b (6 levels).
    pub const fn max_levels(self) -> Option<Levels> {
        match (self.0 >> 10) & 0b11 {
            0 => Some(Levels::FOUR),
            1 => Some(Levels::FIVE),
            2 => Some(Levels::SIX),
            _ => None,
        }
    }

    /// GATS, bits 13:12: guest address translation size (levels 4 + GATS), for the record.
    pub const fn guest_levels(self) -> u32 {
        4 + ((self.0 >> 12) & 0b11) as u32
    }
}

impl fmt::Display for ExtendedFeatures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EFR {:#x}", self.0)?;
        match self.max_levels() {
            Some(l) => write!(f, " host tables up to {l}")?,
            None => write!(f, " host table size reserved")?,
        }
        if self.invalidate_all() {
            write!(f, " IA")?;
        }
        if self.guest_translation() {
            write!(f, " GT")?;
        }
        Ok(())
    }
}

/// Length of the command buffer or event log: 2^n 16-byte entries, n in 8..=15
/// (§3.4.2 ComLen / §3.4.3 EventLen; values below 1000b are reserved).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingLength(u8);

impl RingLength {
    /// 256 entries: exactly one 4 KiB frame, so a plain [`lazaret_types::FrameAllocator`]
    /// provides it.
    pub const ONE_PAGE: RingLength = RingLength(8);

    /// `None` for reserved encodings.
    pub const fn from_encoding(n: u8) -> Option<RingLength> {
        match n {
            8..=15 => Some(RingLength(n)),
            _ => None,
        }
    }

    pub const fn encoding(self) -> u8 {
        self.0
    }

    pub const fn entries(self) -> u32 {
        1 << self.0
    }

    pub const fn bytes(self) -> u64 {
        (self.entries() as u64) * 16
    }

    /// The base register value: base address plus this length in bits 59:56.
    pub const fn base_register(self, base: PhysAddr) -> u64 {
        (base.0 & BASE_MASK) | ((self.0 as u64) << 56)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// QEMU 7.2's AMDVI_EXT_FEATURES: PREFETCH | PPR | GT | IA | GA | HE | GATS=2 | HATS=2.
    const QEMU_EFR: u64 = 1 | 2 | (1 << 4) | (1 << 6) | (1 << 7) | (1 << 8) | (2 << 12) | (2 << 10);

    #[test]
    fn decodes_what_qemu_reports() {
        let efr = ExtendedFeatures(QEMU_EFR);
        assert_eq!(efr.max_levels(), Some(Levels::SIX));
        assert!(efr.invalidate_all());
        assert!(efr.guest_translation());
        assert!(efr.prefetch() && efr.ppr() && efr.guest_apic() && efr.hardware_error_regs());
        assert!(!efr.no_execute() && !efr.x2apic() && !efr.perf_counters());
        assert_eq!(efr.guest_levels(), 6);
    }

    #[test]
    fn hats_encodings() {
        assert_eq!(ExtendedFeatures(0).max_levels(), Some(Levels::FOUR));
        assert_eq!(ExtendedFeatures(1 << 10).max_levels(), Some(Levels::FIVE));
        assert_eq!(ExtendedFeatures(3 << 10).max_levels(), None);
    }

    #[test]
    fn ring_length_encoding() {
        assert_eq!(RingLength::from_encoding(7), None);
        assert_eq!(RingLength::from_encoding(16), None);
        assert_eq!(RingLength::ONE_PAGE.bytes(), 4096);
        assert_eq!(
            RingLength::ONE_PAGE.base_register(PhysAddr(0x1234_5000)),
            0x0800_0000_1234_5000
        );
        assert_eq!(
            RingLength::from_encoding(15).map(RingLength::entries),
            Some(32768)
        );
    }
}
