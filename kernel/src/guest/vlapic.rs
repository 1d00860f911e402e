//! The guest's minimal virtual local APIC: what a guest needs to take its device's interrupts
//! and acknowledge them — an IRR and an ISR of 256 vectors, the TPR, EOI — reached through the
//! x2APIC MSRs only (Intel SDM Vol. 3A §11.12; no MMIO page to decode). Interrupts come from
//! Lazaret (a host vector routed to a guest vector), never from the guest itself: no ICR, no
//! timer, no LVTs. Any other APIC MSR, or a reserved bit set, is a #GP.
//!
//! The APIC starts software-enabled (SVR 0x1FF): the guest contract has it ready at entry, so a
//! payload needs no APIC set-up before its first interrupt.
use lazaret_guest_abi::interrupts::{
    IA32_APIC_BASE, X2APIC_EOI, X2APIC_ID, X2APIC_SVR, X2APIC_TPR, X2APIC_VERSION,
};

/// IA32_APIC_BASE as the guest reads it: the architectural base, BSP (bit 8), x2APIC mode
/// (EXTD, bit 10) and enabled (EN, bit 11) — SDM Vol. 3A §11.12.1.
const APIC_BASE_VALUE: u64 = 0xFEE0_0000 | (1 << 8) | (1 << 10) | (1 << 11);
/// Version 0x14 (integrated APIC), max LVT entry 5 (SDM Vol. 3A §11.4.8).
const VERSION_VALUE: u64 = 0x0005_0014;
/// SVR bits the guest may write: vector 7:0, APIC software enable 8, EOI-broadcast
/// suppression 12 (accepted, meaningless here: there is no IOAPIC).
const SVR_WRITABLE: u64 = 0x11FF;
const SVR_ENABLE: u32 = 1 << 8;
/// Vectors 0–15 are reserved, 16–31 exceptions: neither is an interrupt a device may raise.
pub const FIRST_VECTOR: u8 = 32;

/// 256 bits, one per vector.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Vectors([u64; 4]);

impl Vectors {
    fn set(&mut self, v: u8) {
        self.0[usize::from(v >> 6)] |= 1 << (v & 63);
    }
    fn clear(&mut self, v: u8) {
        self.0[usize::from(v >> 6)] &= !(1 << (v & 63));
    }
    fn highest(&self) -> Option<u8> {
        (0..4usize).rev().find_map(|i| {
            let w = self.0[i];
            (w != 0).then(|| (i as u8) * 64 + (63 - w.leading_zeros() as u8))
        })
    }
}

/// What the guest's interrupts did, for the tally.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VlapicCounts {
    /// Interrupts Lazaret raised (after coalescing in the IRR, as on hardware).
    pub raised: u64,
    /// Interrupts the guest took (moved from IRR to ISR).
    pub delivered: u64,
    /// EOIs the guest wrote.
    pub eois: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VirtualLapic {
    irr: Vectors,
    isr: Vectors,
    tpr: u8,
    svr: u32,
    counts: VlapicCounts,
}

impl Default for VirtualLapic {
    fn default() -> Self {
        VirtualLapic {
            irr: Vectors::default(),
            isr: Vectors::default(),
            tpr: 0,
            svr: 0x1FF,
            counts: VlapicCounts::default(),
        }
    }
}

impl VirtualLapic {
    /// Marks `vector` requested. A vector below 32 is never raised (`false`): a device's
    /// message naming one is refused before it gets here, and this is the last line.
    pub fn raise(&mut self, vector: u8) -> bool {
        if vector < FIRST_VECTOR {
            return false;
        }
        self.irr.set(vector);
        self.counts.raised += 1;
        true
    }

    /// Processor priority (SDM Vol. 3A §11.8.3.1): the higher class of TPR and the highest
    /// in-service vector.
    fn ppr_class(&self) -> u8 {
        let isr = self.isr.highest().map_or(0, |v| v >> 4);
        (self.tpr >> 4).max(isr)
    }

    /// The vector the guest should take next: the highest requested one whose priority class
    /// is above the processor priority's; none while the APIC is software-disabled.
    pub fn pending(&self) -> Option<u8> {
        if self.svr & SVR_ENABLE == 0 {
            return None;
        }
        let v = self.irr.highest()?;
        ((v >> 4) > self.ppr_class()).then_some(v)
    }

    /// Whether anything is requested at all (masked by priority or not): a halted guest with
    /// a request is woken by its EOI path, not left to sleep.
    pub fn requested(&self) -> bool {
        self.irr.highest().is_some()
    }

    /// The guest took `vector` (its injection is on its way): IRR → ISR.
    pub fn accept(&mut self, vector: u8) {
        self.irr.clear(vector);
        self.isr.set(vector);
        self.counts.delivered += 1;
    }

    /// EOI: the highest in-service vector is done (SDM Vol. 3A §11.8.5).
    fn eoi(&mut self) {
        if let Some(v) = self.isr.highest() {
            self.isr.clear(v);
        }
        self.counts.eois += 1;
    }

    pub fn counts(&self) -> VlapicCounts {
        self.counts
    }

    /// RDMSR of an APIC register; `None`: #GP (EOI is write-only, §11.12.1.2).
    pub fn msr_read(&self, msr: u32) -> Option<u64> {
        match msr {
            IA32_APIC_BASE => Some(APIC_BASE_VALUE),
            X2APIC_ID => Some(0),
            X2APIC_VERSION => Some(VERSION_VALUE),
            X2APIC_TPR => Some(u64::from(self.tpr)),
            X2APIC_SVR => Some(u64::from(self.svr)),
            _ => None,
        }
    }

    /// WRMSR of an APIC register; `false`: #GP, nothing changed (an unknown MSR, a read-only
    /// one, reserved bits set, or an attempt to leave x2APIC mode or move the base).
    pub fn msr_write(&mut self, msr: u32, value: u64) -> bool {
        match msr {
            IA32_APIC_BASE => value == APIC_BASE_VALUE,
            X2APIC_TPR if value <= 0xFF => {
                self.tpr = value as u8;
                true
            }
            X2APIC_EOI if value == 0 => {
                self.eoi();
                true
            }
            X2APIC_SVR if value & !SVR_WRITABLE == 0 => {
                self.svr = value as u32;
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_highest_vector_above_the_priority_is_taken_first() {
        let mut a = VirtualLapic::default();
        assert_eq!(a.pending(), None);
        assert!(a.raise(0x50));
        assert!(a.raise(0x61));
        assert!(a.raise(0x41));
        assert_eq!(a.pending(), Some(0x61));
        a.accept(0x61);
        // 0x50 is a lower class than the in-service 0x61: it waits for the EOI.
        assert_eq!(a.pending(), None);
        assert!(a.msr_write(X2APIC_EOI, 0));
        assert_eq!(a.pending(), Some(0x50));
        a.accept(0x50);
        a.msr_write(X2APIC_EOI, 0);
        assert_eq!(a.pending(), Some(0x41));
        assert_eq!(
            a.counts(),
            VlapicCounts {
                raised: 3,
                delivered: 2,
                eois: 2
            }
        );
    }

    #[test]
    fn same_class_waits_for_the_eoi_and_requests_coalesce() {
        let mut a = VirtualLapic::default();
        a.raise(0x50);
        a.accept(0x50);
        a.raise(0x51);
        a.raise(0x51);
        assert_eq!(a.pending(), None, "0x51 is in 0x50's class");
        assert!(a.requested());
        a.msr_write(X2APIC_EOI, 0);
        assert_eq!(a.pending(), Some(0x51));
        a.accept(0x51);
        assert_eq!(
            a.pending(),
            None,
            "two raises of one vector are one request"
        );
        assert!(!a.requested());
    }

    #[test]
    fn tpr_holds_back_lower_classes() {
        let mut a = VirtualLapic::default();
        a.raise(0x50);
        assert!(a.msr_write(X2APIC_TPR, 0x50));
        assert_eq!(a.msr_read(X2APIC_TPR), Some(0x50));
        assert_eq!(a.pending(), None);
        a.msr_write(X2APIC_TPR, 0x4F);
        assert_eq!(a.pending(), Some(0x50));
    }

    #[test]
    fn exception_vectors_are_never_raised_and_a_disabled_apic_delivers_nothing() {
        let mut a = VirtualLapic::default();
        assert!(!a.raise(13));
        assert!(!a.raise(31));
        assert_eq!(a.pending(), None);
        assert!(a.msr_write(X2APIC_SVR, 0xFF));
        a.raise(0x50);
        assert_eq!(a.pending(), None, "software-disabled");
        a.msr_write(X2APIC_SVR, 0x1FF);
        assert_eq!(a.pending(), Some(0x50));
    }

    #[test]
    fn msrs_outside_the_minimal_apic_or_with_reserved_bits_are_refused() {
        let mut a = VirtualLapic::default();
        let before = a.clone();
        assert!(!a.msr_write(X2APIC_TPR, 0x100));
        assert!(!a.msr_write(X2APIC_EOI, 1));
        assert!(!a.msr_write(X2APIC_SVR, 0x2000));
        assert!(
            !a.msr_write(0x830, 0x4050),
            "no ICR: a guest cannot send IPIs"
        );
        assert!(!a.msr_write(IA32_APIC_BASE, 0xFEE0_0000 | (1 << 11)));
        assert!(!a.msr_write(X2APIC_ID, 3));
        assert_eq!(a, before, "a refused write changes nothing");
        assert!(a.msr_write(IA32_APIC_BASE, a.msr_read(IA32_APIC_BASE).unwrap()));
        assert_eq!(a.msr_read(X2APIC_EOI), None);
        assert_eq!(a.msr_read(0x830), None);
        // The BSP (bit 8), x2APIC mode (10) and enabled (11), at the architectural base.
        assert_eq!(a.msr_read(IA32_APIC_BASE), Some(0xFEE0_0D00));
        assert_eq!(a.msr_read(X2APIC_ID), Some(0));
        assert_eq!(a.msr_read(X2APIC_VERSION), Some(0x0005_0014));
        assert_eq!(
            a.msr_read(X2APIC_SVR),
            Some(0x1FF),
            "software-enabled at entry"
        );
        assert!(a.msr_write(X2APIC_SVR, 0x10FF));
        assert_eq!(a.msr_read(X2APIC_SVR), Some(0x10FF));
    }

    #[test]
    fn the_highest_set_bit_is_found_in_every_word() {
        for v in [32u8, 63, 64, 127, 128, 191, 192, 255] {
            let mut a = VirtualLapic::default();
            a.raise(v);
            a.raise(FIRST_VECTOR);
            assert_eq!(a.irr.highest(), Some(v));
        }
    }
}
