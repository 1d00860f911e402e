//! Register offsets and bit layouts of one remapping unit (§10.4), and typed decoders for the
//! Capability and Extended Capability registers.

use crate::levels::Levels;

/// Version register (§10.4.1).
pub const VER: usize = 0x00;
/// Capability register (§10.4.2).
pub const CAP: usize = 0x08;
/// Extended capability register (§10.4.3).
pub const ECAP: usize = 0x10;
/// Global command register, write-only (§10.4.4).
pub const GCMD: usize = 0x18;
/// Global status register (§10.4.5).
pub const GSTS: usize = 0x1C;
/// Root table address register (§10.4.6).
pub const RTADDR: usize = 0x20;
/// Context command register (§10.4.7).
pub const CCMD: usize = 0x28;
/// Fault status register (§10.4.9).
pub const FSTS: usize = 0x34;
/// Fault event control register (§10.4.10).
pub const FECTL: usize = 0x38;
/// Fault event data register (§10.4.11).
pub const FEDATA: usize = 0x3C;
/// Fault event address register (§10.4.12).
pub const FEADDR: usize = 0x40;
/// Fault event upper address register (§10.4.13).
pub const FEUADDR: usize = 0x44;
/// Protected memory enable register (§10.4.16).
pub const PMEN: usize = 0x64;
/// Invalidation queue head (§10.4.22).
pub const IQH: usize = 0x80;
/// Invalidation queue tail (§10.4.23).
pub const IQT: usize = 0x88;
/// Invalidation queue address (§10.4.24).
pub const IQA: usize = 0x90;
/// Invalidation completion status (§10.4.25).
pub const ICS: usize = 0x9C;
/// Interrupt remapping table address (§10.4.29): 63:12 base, 11 EIME, 3:0 S (2^(S+1) entries).
pub const IRTA: usize = 0xB8;

/// GCMD / GSTS bits (§10.4.4, §10.4.5): same positions in both registers.
pub mod global {
    /// Translation enable / status.
    pub const TE: u32 = 1 << 31;
    /// Set root table pointer (one-shot) / root table pointer status.
    pub const SRTP: u32 = 1 << 30;
    /// Set fault log (one-shot).
    pub const SFL: u32 = 1 << 29;
    /// Enable advanced fault logging.
    pub const EAFL: u32 = 1 << 28;
    /// Write buffer flush (one-shot); GSTS.WBFS stays set while the flush is in progress.
    pub const WBF: u32 = 1 << 27;
    /// Queued invalidation enable / status.
    pub const QIE: u32 = 1 << 26;
    /// Interrupt remapping enable / status.
    pub const IRE: u32 = 1 << 25;
    /// Set interrupt remap table pointer (one-shot).
    pub const SIRTP: u32 = 1 << 24;
    /// Compatibility format interrupts.
    pub const CFI: u32 = 1 << 23;
    /// Status bits that report one-shot commands: they must not be echoed back into GCMD
    /// (§10.4.4: "software must ... preserve the other enable bits").
    pub const ONE_SHOT: u32 = SRTP | SFL | WBF | SIRTP;
}

/// FSTS bits (§10.4.9).
pub mod fsts {
    /// Primary fault overflow (RW1C).
    pub const PFO: u32 = 1 << 0;
    /// Primary pending fault (RO): some fault record has F set.
    pub const PPF: u32 = 1 << 1;
    /// Invalidation queue error (RW1C).
    pub const IQE: u32 = 1 << 4;
    /// Invalidation completion error (RW1C).
    pub const ICE: u32 = 1 << 5;
    /// Invalidation time-out error (RW1C).
    pub const ITE: u32 = 1 << 6;
    /// Fault record index, bits 15:8.
    pub const fn fri(fsts: u32) -> u32 {
        (fsts >> 8) & 0xff
    }
}

/// Bytes of register window the unit needs: the fixed registers this driver uses (through
/// ICS, or IRTA when ECAP.IR), the fault recording registers (CAP.FRO + CAP.NFR × 16, §10.4.14) and the IOTLB
/// registers (ECAP.IRO + 16: IVA and IOTLB, §10.4.8). A DRHD whose window is smaller would make
/// the driver touch MMIO outside the unit's mapping.
pub fn required_register_bytes(cap: Capabilities, ecap: ExtCapabilities) -> u64 {
    let fixed = if ecap.interrupt_remapping() {
        IRTA as u64 + 8
    } else {
        ICS as u64 + 4
    };
    let faults = (cap.fault_record_offset() + cap.fault_records() * 16) as u64;
    let iotlb = ecap.iotlb_offset() as u64 + 16;
    fixed.max(faults).max(iotlb)
}

/// Extracts `width` bits starting at `lo`.
const fn bits(value: u64, lo: u32, width: u32) -> u64 {
    (value >> lo) & ((1u64 << width) - 1)
}

const fn bit(value: u64, n: u32) -> bool {
    (value >> n) & 1 == 1
}

/// Decoded Capability register (§10.4.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities(pub u64);

impl Capabilities {
    /// Number of domain IDs: 2^(4 + 2*ND) (ND in 2:0).
    pub const fn domain_ids(self) -> u32 {
        1 << (4 + 2 * bits(self.0, 0, 3) as u32)
    }

    /// Domain IDs software may use. With caching mode, DID 0 is reserved: hardware tags cached
    /// not-present entries with it (§6.1, §6.2.1 tagging), so Lazaret never hands it out at all.
    pub const fn usable_domain_ids(self) -> core::ops::Range<u32> {
        1..self.domain_ids()
    }

    /// Required write-buffer flushing (bit 4): table updates need GCMD.WBF before they are seen.
    pub const fn rwbf(self) -> bool {
        bit(self.0, 4)
    }

    /// Caching mode (bit 7): hardware may cache not-present and erroneous entries, so making
    /// an entry present also needs an invalidation (§6.1).
    pub const fn caching_mode(self) -> bool {
        bit(self.0, 7)
    }

    /// Raw SAGAW (bits 12:8): bit n set means AW encoding n is supported.
    pub const fn sagaw(self) -> u8 {
        bits(self.0, 8, 5) as u8
    }

    pub const fn supports(self, levels: Levels) -> bool {
        self.sagaw() & (1 << levels.aw_field()) != 0
    }

    /// The depth Lazaret uses: 4-level if supported (48-bit IOVAs, 5 quarantine pages), else
    /// the deepest supported; `None` if the unit supports none of 3/4/5 levels.
    pub fn preferred_levels(self) -> Option<Levels> {
        if self.supports(Levels::Four) {
            return Some(Levels::Four);
        }
        Levels::ALL.into_iter().rev().find(|l| self.supports(*l))
    }

    /// Maximum guest address width in bits (bits 21:16, encoded minus one).
    pub const fn mgaw(self) -> u32 {
        bits(self.0, 16, 6) as u32 + 1
    }

    /// Offset of the first fault recording register (bits 33:24, in 16-byte units).
    pub const fn fault_record_offset(self) -> usize {
        bits(self.0, 24, 10) as usize * 16
    }

    /// Second-level large page support (bits 37:34): bit 0 = 2 MiB, bit 1 = 1 GiB.
    pub const fn sllps(self) -> u8 {
        bits(self.0, 34, 4) as u8
    }

    /// Page-selective invalidation support (bit 39).
    pub const fn psi(self) -> bool {
        bit(self.0, 39)
    }

    /// Number of fault recording registers (bits 47:40, encoded minus one).
    pub const fn fault_records(self) -> usize {
        bits(self.0, 40, 8) as usize + 1
    }

    /// Maximum address mask value for page-selective invalidation (bits 53:48).
    pub const fn mamv(self) -> u8 {
        bits(self.0, 48, 6) as u8
    }

    /// Drain writes / reads supported for IOTLB invalidation (bits 54, 55).
    pub const fn drain_write(self) -> bool {
        bit(self.0, 54)
    }

    pub const fn drain_read(self) -> bool {
        bit(self.0, 55)
    }
}

/// Decoded Extended Capability register (§10.4.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExtCapabilities(pub u64);

impl ExtCapabilities {
    /// Page-walk coherency (bit 0): when clear, software must flush CPU caches after every
    /// table write before hardware may read it.
    pub const fn coherent(self) -> bool {
        bit(self.0, 0)
    }

    /// Queued invalidation support (bit 1).
    pub const fn queued_invalidation(self) -> bool {
        bit(self.0, 1)
    }

    /// Interrupt remapping support (bit 3).
    pub const fn interrupt_remapping(self) -> bool {
        bit(self.0, 3)
    }

    /// Extended interrupt mode (bit 4): 32-bit x2APIC destinations in IRTEs (IRTA.EIME).
    pub const fn extended_interrupt_mode(self) -> bool {
        bit(self.0, 4)
    }

    /// Pass-through translation type support (bit 6).
    pub const fn pass_through(self) -> bool {
        bit(self.0, 6)
    }

    /// Snoop control (bit 7): the SNP bit of leaf entries is honoured.
    pub const fn snoop_control(self) -> bool {
        bit(self.0, 7)
    }

    /// IOTLB register block offset (bits 17:8, in 16-byte units): IVA at +0, IOTLB at +8.
    pub const fn iotlb_offset(self) -> usize {
        bits(self.0, 8, 10) as usize * 16
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CAP value built field by field, so the test reads as the layout.
    fn cap(nd: u64, cm: bool, sagaw: u64, mgaw: u64, fro: u64, nfr: u64) -> Capabilities {
        Capabilities(
            nd | (u64::from(cm) << 7)
                | (sagaw << 8)
                | ((mgaw - 1) << 16)
                | (fro << 24)
                | (1 << 39)
                | ((nfr - 1) << 40)
                | (0x3f << 48),
        )
    }

    #[test]
    fn capability_fields_decode() {
        let c = cap(2, true, 0b0110, 48, 0x22, 8);
        assert_eq!(c.domain_ids(), 256);
        assert_eq!(c.usable_domain_ids(), 1..256);
        assert!(c.caching_mode());
        assert!(!c.rwbf());
        assert!(c.supports(Levels::Three) && c.supports(Levels::Four));
        assert!(!c.supports(Levels::Five));
        assert_eq!(c.preferred_levels(), Some(Levels::Four));
        assert_eq!(c.mgaw(), 48);
        assert_eq!(c.fault_record_offset(), 0x220);
        assert_eq!(c.fault_records(), 8);
        assert!(c.psi());
        assert_eq!(c.mamv(), 0x3f);
    }

    #[test]
    fn preferred_levels_falls_back() {
        assert_eq!(
            cap(0, false, 0b0010, 39, 1, 1).preferred_levels(),
            Some(Levels::Three)
        );
        assert_eq!(
            cap(0, false, 0b1000, 57, 1, 1).preferred_levels(),
            Some(Levels::Five)
        );
        assert_eq!(cap(0, false, 0b0001, 39, 1, 1).preferred_levels(), None);
        assert_eq!(cap(6, false, 0, 39, 1, 1).domain_ids(), 65536);
    }

    #[test]
    fn ext_capability_fields_decode() {
        let e = ExtCapabilities(0b11 | (0x50 << 8) | (1 << 6));
        assert!(e.coherent());
        assert!(e.queued_invalidation());
        assert!(e.pass_through());
        assert!(!e.snoop_control());
        assert_eq!(e.iotlb_offset(), 0x500);
        assert_eq!(fsts::fri(0x0000_0702), 7);
    }
}
