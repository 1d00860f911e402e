//! Primary fault logging (§7.3, fault recording registers §10.4.14): draining, decoding and
//! clearing the records, and the reason texts of §7.1.3.

use core::fmt;

use lazaret_types::{Bdf, Mmio};

use crate::regs::{fsts, Capabilities, FSTS};

/// Human text for the common legacy-mode fault reasons (§7.1.3, Table "Unsuccessful
/// translated / untranslated requests").
pub const fn fault_reason_text(code: u8) -> &'static str {
    match code {
        0x1 => "root entry not present",
        0x2 => "context entry not present",
        0x3 => "invalid context entry programming",
        0x4 => "address beyond the guest address width",
        0x5 => "write to a page without write permission",
        0x6 => "read from a page without read permission",
        0x7 => "error accessing a second-level paging entry",
        0x8 => "error accessing the root entry",
        0x9 => "error accessing the context entry",
        0xA => "reserved bits set in the root entry",
        0xB => "reserved bits set in the context entry",
        0xC => "reserved bits set in a second-level paging entry",
        0xD => "request blocked by the context entry's translation type",
        // Interrupt remapping faults (§7.1.3, "Interrupt remapping fault conditions").
        0x20 => "interrupt request with a reserved field set",
        0x21 => "interrupt index beyond the interrupt remapping table",
        0x22 => "interrupt remapping table entry not present (blocked)",
        0x23 => "error accessing the interrupt remapping table",
        0x24 => "reserved bits set in a present interrupt remapping table entry",
        0x25 => "compatibility-format interrupt blocked",
        0x26 => "interrupt source-ID verification failed",
        0x27 => "error accessing a posted-interrupt descriptor",
        _ => "unknown fault reason",
    }
}

/// One decoded fault record (§10.4.14): bits 63:12 fault info, 79:64 source id, 103:96
/// reason, 126 type (0 = write, 1 = read), 127 F.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultRecord {
    /// Which recording register held it.
    pub index: usize,
    pub source_id: Bdf,
    /// Page address of the faulting request (FI, bits 63:12).
    pub address: u64,
    pub reason: u8,
    pub write: bool,
}

impl FaultRecord {
    pub const fn decode(index: usize, lo: u64, hi: u64) -> FaultRecord {
        FaultRecord {
            index,
            source_id: Bdf::from_requester_id(hi as u16),
            address: lo & !0xfff,
            reason: (hi >> 32) as u8,
            write: (hi >> 62) & 1 == 0,
        }
    }

    pub const fn reason_text(&self) -> &'static str {
        fault_reason_text(self.reason)
    }

    /// For an interrupt remapping fault (reasons 0x20–0x27), the interrupt_index hardware
    /// computed: FI bits 63:48 (§10.4.14); `None` for a DMA remapping fault.
    pub const fn interrupt_index(&self) -> Option<u16> {
        if is_interrupt_fault(self.reason) {
            Some((self.address >> 48) as u16)
        } else {
            None
        }
    }
}

/// Reasons 0x20–0x27 are interrupt remapping faults (§7.1.3).
pub const fn is_interrupt_fault(reason: u8) -> bool {
    matches!(reason, 0x20..=0x27)
}

impl fmt::Display for FaultRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(index) = self.interrupt_index() {
            return write!(
                f,
                "{} interrupt index {index}: fault {:#x} ({})",
                self.source_id,
                self.reason,
                self.reason_text()
            );
        }
        write!(
            f,
            "{} DMA {} at {:#x}: fault {:#x} ({})",
            self.source_id,
            if self.write { "write" } else { "read" },
            self.address,
            self.reason,
            self.reason_text()
        )
    }
}

/// What one drain found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DrainSummary {
    pub records: usize,
    /// FSTS.PFO was set: faults were lost because every record was full (now cleared).
    pub overflow: bool,
}

/// F (bit 127) as seen in the upper dword at record offset + 12; RW1C.
const F_UPPER_DWORD: u32 = 1 << 31;
const F_BIT: u64 = 1 << 63;

/// Reads, clears and reports pending fault records, starting at FSTS.FRI and wrapping at the
/// number of records; at most NFR + 1 records per call, so a fault storm cannot keep the
/// caller here. Then clears PFO. Logs nothing: the caller decides what to print.
pub fn drain_faults<R: Mmio + ?Sized>(
    regs: &R,
    cap: Capabilities,
    mut sink: impl FnMut(FaultRecord),
) -> DrainSummary {
    let status = regs.read32(FSTS);
    let count = cap.fault_records();
    let base = cap.fault_record_offset();
    let mut index = fsts::fri(status) as usize;
    if index >= count {
        index = 0;
    }
    let mut summary = DrainSummary::default();
    if status & fsts::PPF != 0 {
        for _ in 0..count {
            let at = base + index * 16;
            let hi = regs.read64(at + 8);
            if hi & F_BIT == 0 {
                break;
            }
            let lo = regs.read64(at);
            regs.write32(at + 12, F_UPPER_DWORD);
            sink(FaultRecord::decode(index, lo, hi));
            summary.records += 1;
            index += 1;
            if index >= count {
                index = 0;
            }
        }
    }
    if regs.read32(FSTS) & fsts::PFO != 0 {
        // RW1C: write only PFO so the invalidation error bits stay for their owner.
        regs.write32(FSTS, fsts::PFO);
        summary.overflow = true;
    }
    summary
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim_device::{SimVtd, FRO_OFFSET, NFR};

    fn record(sid: u16, addr: u64, reason: u8, read: bool) -> (u64, u64) {
        (
            addr,
            F_BIT | (u64::from(read) << 62) | (u64::from(reason) << 32) | u64::from(sid),
        )
    }

    #[test]
    fn decodes_record_fields() {
        let (lo, hi) = record(0x0310, 0x1234_5678, 5, false);
        let r = FaultRecord::decode(2, lo | 0xabc, hi);
        assert_eq!(r.source_id, Bdf::new(3, 2, 0).unwrap());
        assert_eq!(r.address, 0x1234_5000);
        assert_eq!((r.reason, r.write, r.index), (5, true, 2));
        assert_eq!(r.reason_text(), "write to a page without write permission");
        assert_eq!(fault_reason_text(2), "context entry not present");
        assert!(r.to_string().contains("03:02.0 DMA write at 0x12345000"));
    }

    #[test]
    fn interrupt_faults_carry_their_index() {
        let (lo, hi) = record(0x0318, 0x0123_0000_0000_0000, 0x26, false);
        let r = FaultRecord::decode(0, lo, hi);
        assert_eq!(r.interrupt_index(), Some(0x123));
        assert!(r
            .to_string()
            .contains("03:03.0 interrupt index 291: fault 0x26 (interrupt source-ID"));
        let (lo, hi) = record(0x0318, 0x0123_0000_0000_0000, 0x5, false);
        assert_eq!(FaultRecord::decode(0, lo, hi).interrupt_index(), None);
        assert_eq!(
            fault_reason_text(0x25),
            "compatibility-format interrupt blocked"
        );
    }

    #[test]
    fn drains_from_fri_wrapping_and_clears_records_and_overflow() {
        let sim = SimVtd::new();
        // Records at the last slot and the first two: FRI points at the last.
        sim.post_fault(NFR - 1, record(0x0100, 0x1000, 6, true));
        sim.post_fault(0, record(0x0101, 0x2000, 5, false));
        sim.post_fault(1, record(0x0102, 0x3000, 2, true));
        sim.set_fault_index(NFR - 1);
        sim.set_overflow();
        let mut seen = Vec::new();
        let s = drain_faults(&sim.regs, sim.cap(), |r| seen.push(r));
        assert_eq!(
            s,
            DrainSummary {
                records: 3,
                overflow: true
            }
        );
        assert_eq!(
            seen.iter().map(|r| (r.index, r.reason)).collect::<Vec<_>>(),
            vec![(NFR - 1, 6), (0, 5), (1, 2)]
        );
        for i in [NFR - 1, 0, 1] {
            assert_eq!(
                sim.regs.get(FRO_OFFSET + i * 16 + 8) & F_BIT,
                0,
                "record {i} cleared"
            );
        }
        assert_eq!(sim.regs.get(FSTS) as u32 & (fsts::PFO | fsts::PPF), 0);
        // Nothing left.
        let again = drain_faults(&sim.regs, sim.cap(), |_| panic!("no record expected"));
        assert_eq!(again, DrainSummary::default());
    }

    #[test]
    fn a_full_ring_is_drained_once_per_call() {
        let sim = SimVtd::new();
        for i in 0..NFR {
            sim.post_fault(i, record(i as u16, 0x1000 * i as u64, 6, true));
        }
        sim.set_fault_index(3);
        let mut seen = Vec::new();
        let s = drain_faults(&sim.regs, sim.cap(), |r| seen.push(r.index));
        assert_eq!(s.records, NFR);
        assert_eq!(seen.first(), Some(&3));
        assert_eq!(seen.last(), Some(&2));
    }
}
