//! The checks VMRUN makes before it enters a guest (APM vol. 2 §15.5.1, "Canonicalization and
//! Consistency Checks"), made first by Lazaret: a guest whose state would fail VMRUN ends with
//! one of these reasons instead of an unexplained VMEXIT_INVALID. The checks are made on the
//! VMCB itself, so whatever wrote it (entry state, exit handling) is covered.
use core::fmt;

use crate::event::EventInj;
use crate::intercept::misc2;
use crate::vmcb::{attrib, cr, Vmcb, NP_ENABLE};

/// What the CPU supports, as the checks need it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckLimits {
    /// MAXPHYADDR (CPUID 8000_0008 EAX[7:0]).
    pub phys_addr_bits: u8,
    /// Number of ASIDs (CPUID 8000_000A EBX); valid ASIDs are 1..nasid.
    pub nasid: u32,
    /// TLB_CONTROL 3 and 7 are accepted (CPUID 8000_000A EDX bit 6).
    pub flush_by_asid: bool,
}

/// Why VMRUN would refuse the guest state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateError {
    EferSvmeClear,
    Cr0CdClearNwSet,
    Cr0HighBitsSet,
    Cr3ReservedBitsSet(u64),
    Cr4ReservedBitsSet(u64),
    Dr6HighBitsSet,
    Dr7HighBitsSet,
    EferReservedBitsSet(u64),
    LongModeWithoutPae,
    LongModeWithoutProtectedMode,
    LongModeCsLAndD,
    VmrunNotIntercepted,
    PermissionMapBeyondPhysicalAddresses,
    IllegalEventInjection(u64),
    AsidZero,
    AsidBeyondLimit(u32),
    NestedRootReservedBitsSet(u64),
    BadTlbControl(u8),
}

impl fmt::Display for StateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StateError::EferSvmeClear => f.write_str("EFER.SVME is clear in the guest state"),
            StateError::Cr0CdClearNwSet => f.write_str("CR0.NW is set while CR0.CD is clear"),
            StateError::Cr0HighBitsSet => f.write_str("CR0 has bits set in 63:32"),
            StateError::Cr3ReservedBitsSet(b) => {
                write!(f, "CR3 has must-be-zero bits set ({b:#x})")
            }
            StateError::Cr4ReservedBitsSet(b) => write!(f, "CR4 has reserved bits set ({b:#x})"),
            StateError::Dr6HighBitsSet => f.write_str("DR6 has bits set in 63:32"),
            StateError::Dr7HighBitsSet => f.write_str("DR7 has bits set in 63:32"),
            StateError::EferReservedBitsSet(b) => write!(f, "EFER has reserved bits set ({b:#x})"),
            StateError::LongModeWithoutPae => {
                f.write_str("EFER.LME and CR0.PG are set but CR4.PAE is clear")
            }
            StateError::LongModeWithoutProtectedMode => {
                f.write_str("EFER.LME and CR0.PG are set but CR0.PE is clear")
            }
            StateError::LongModeCsLAndD => f.write_str("long mode with both CS.L and CS.D set"),
            StateError::VmrunNotIntercepted => f.write_str("the VMRUN intercept is not set"),
            StateError::PermissionMapBeyondPhysicalAddresses => f.write_str(
                "an I/O or MSR permission map reaches beyond the physical address width",
            ),
            StateError::IllegalEventInjection(raw) => {
                write!(f, "EVENTINJ {raw:#x} is not a legal event")
            }
            StateError::AsidZero => f.write_str("the guest ASID is 0 (the host's)"),
            StateError::AsidBeyondLimit(a) => {
                write!(f, "the guest ASID {a} is beyond the CPU's ASID count")
            }
            StateError::BadTlbControl(v) => {
                write!(f, "TLB_CONTROL {v} is not a value this CPU accepts")
            }
            StateError::NestedRootReservedBitsSet(b) => {
                write!(
                    f,
                    "the nested page table root has must-be-zero bits set ({b:#x})"
                )
            }
        }
    }
}

/// CR4 bits an AMD64 CPU defines (APM vol. 2 §3.1.3): VME PVI TSD DE PSE PAE MCE PGE PCE
/// OSFXSR OSXMMEXCPT UMIP LA57 (0–12), FSGSBASE (16), PCIDE (17), OSXSAVE (18), SMEP (20),
/// SMAP (21), PKE (22), CET (23). Everything else is reserved.
const CR4_DEFINED: u64 = 0x1FFF | (1 << 16) | (1 << 17) | (1 << 18) | (0xF << 20);
/// EFER bits (§3.1.7): SCE, LME, LMA, NXE, SVME, LMSLE, FFXSR, TCE.
const EFER_DEFINED: u64 = (1 << 0) | (1 << 8) | (0x3F << 10);

fn above(bits: u8) -> u64 {
    if bits >= 64 {
        0
    } else {
        !0u64 << bits
    }
}

/// Every §15.5.1 check Lazaret can make from the VMCB, first failure first.
pub fn check_guest_state(vmcb: &Vmcb, limits: &CheckLimits) -> Result<(), StateError> {
    let s = &vmcb.save;
    let c = &vmcb.control;
    if s.efer & cr::EFER_SVME == 0 {
        return Err(StateError::EferSvmeClear);
    }
    if s.cr0 & cr::CR0_CD == 0 && s.cr0 & cr::CR0_NW != 0 {
        return Err(StateError::Cr0CdClearNwSet);
    }
    if s.cr0 >> 32 != 0 {
        return Err(StateError::Cr0HighBitsSet);
    }
    let long_mode = s.efer & cr::EFER_LME != 0 && s.cr0 & cr::CR0_PG != 0;
    // Long mode: CR3 bits above MAXPHYADDR (and 63:52) are MBZ; legacy: 63:32.
    let cr3_mbz = if long_mode {
        above(limits.phys_addr_bits.min(52))
    } else {
        above(32)
    };
    if s.cr3 & cr3_mbz != 0 {
        return Err(StateError::Cr3ReservedBitsSet(s.cr3 & cr3_mbz));
    }
    if s.cr4 & !CR4_DEFINED != 0 {
        return Err(StateError::Cr4ReservedBitsSet(s.cr4 & !CR4_DEFINED));
    }
    if s.dr6 >> 32 != 0 {
        return Err(StateError::Dr6HighBitsSet);
    }
    if s.dr7 >> 32 != 0 {
        return Err(StateError::Dr7HighBitsSet);
    }
    if s.efer & !EFER_DEFINED != 0 {
        return Err(StateError::EferReservedBitsSet(s.efer & !EFER_DEFINED));
    }
    if long_mode && s.cr4 & cr::CR4_PAE == 0 {
        return Err(StateError::LongModeWithoutPae);
    }
    if long_mode && s.cr0 & cr::CR0_PE == 0 {
        return Err(StateError::LongModeWithoutProtectedMode);
    }
    if long_mode && s.cs.attrib & attrib::L != 0 && s.cs.attrib & attrib::DB != 0 {
        return Err(StateError::LongModeCsLAndD);
    }
    if c.intercept_misc2 & misc2::VMRUN == 0 {
        return Err(StateError::VmrunNotIntercepted);
    }
    let limit = above(limits.phys_addr_bits);
    let iopm_end =
        (c.iopm_base_pa & !0xFFF).saturating_add(crate::permission::IOPM_SIZE as u64 - 1);
    let msrpm_end =
        (c.msrpm_base_pa & !0xFFF).saturating_add(crate::permission::MSRPM_SIZE as u64 - 1);
    if iopm_end & limit != 0 || msrpm_end & limit != 0 {
        return Err(StateError::PermissionMapBeyondPhysicalAddresses);
    }
    if c.event_inj & (1 << 31) != 0 && !EventInj::decode(c.event_inj).is_some_and(|e| e.is_legal())
    {
        return Err(StateError::IllegalEventInjection(c.event_inj));
    }
    if c.guest_asid == 0 {
        return Err(StateError::AsidZero);
    }
    if c.guest_asid >= limits.nasid {
        return Err(StateError::AsidBeyondLimit(c.guest_asid));
    }
    let tlb_ok = match c.tlb_control {
        0 | 1 => true,
        3 | 7 => limits.flush_by_asid,
        _ => false,
    };
    if !tlb_ok {
        return Err(StateError::BadTlbControl(c.tlb_control));
    }
    // nCR3 is a long-mode CR3: bits above MAXPHYADDR must be zero (§15.25.4).
    if c.np_control & NP_ENABLE != 0 && c.n_cr3 & above(limits.phys_addr_bits.min(52)) != 0 {
        return Err(StateError::NestedRootReservedBitsSet(
            c.n_cr3 & above(limits.phys_addr_bits.min(52)),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmcb::LongModeEntry;

    const LIMITS: CheckLimits = CheckLimits {
        phys_addr_bits: 40,
        nasid: 16,
        flush_by_asid: true,
    };

    fn good() -> Box<Vmcb> {
        let mut v = Box::new(Vmcb::zeroed());
        v.set_controls(0x10_0000, 0x20_0000, 1, 0x30_0000);
        v.load_long_mode(&LongModeEntry {
            rip: 0x20_0000,
            rsp: 0x10_0000,
            cr3: 0x1_0000,
            gdt_base: 0x3000,
            gdt_limit: 23,
        });
        v
    }

    fn fails_with(change: impl FnOnce(&mut Vmcb), expected: StateError) {
        let mut v = good();
        change(&mut v);
        assert_eq!(check_guest_state(&v, &LIMITS), Err(expected));
    }

    #[test]
    fn the_contract_entry_state_passes() {
        assert_eq!(check_guest_state(&good(), &LIMITS), Ok(()));
    }

    #[test]
    fn each_check_fails_on_its_own_bit() {
        fails_with(|v| v.save.efer &= !(1 << 12), StateError::EferSvmeClear);
        fails_with(|v| v.save.cr0 |= 1 << 29, StateError::Cr0CdClearNwSet);
        fails_with(|v| v.save.cr0 |= 1 << 32, StateError::Cr0HighBitsSet);
        fails_with(
            |v| v.save.cr3 |= 1 << 40,
            StateError::Cr3ReservedBitsSet(1 << 40),
        );
        fails_with(
            |v| v.save.cr3 |= 1 << 63,
            StateError::Cr3ReservedBitsSet(1 << 63),
        );
        fails_with(
            |v| v.save.cr4 |= 1 << 13,
            StateError::Cr4ReservedBitsSet(1 << 13),
        );
        fails_with(
            |v| v.save.cr4 |= 1 << 24,
            StateError::Cr4ReservedBitsSet(1 << 24),
        );
        fails_with(|v| v.save.dr6 |= 1 << 32, StateError::Dr6HighBitsSet);
        fails_with(|v| v.save.dr7 |= 1 << 40, StateError::Dr7HighBitsSet);
        fails_with(
            |v| v.save.efer |= 1 << 9,
            StateError::EferReservedBitsSet(1 << 9),
        );
        fails_with(
            |v| v.save.efer |= 1 << 1,
            StateError::EferReservedBitsSet(1 << 1),
        );
        fails_with(|v| v.save.cr4 &= !(1 << 5), StateError::LongModeWithoutPae);
        fails_with(
            |v| v.save.cr0 &= !1,
            StateError::LongModeWithoutProtectedMode,
        );
        fails_with(|v| v.save.cs.attrib |= 1 << 10, StateError::LongModeCsLAndD);
        fails_with(
            |v| v.control.intercept_misc2 &= !1,
            StateError::VmrunNotIntercepted,
        );
        fails_with(
            |v| v.control.msrpm_base_pa = (1 << 40) - 0x1000,
            StateError::PermissionMapBeyondPhysicalAddresses,
        );
        fails_with(
            |v| v.control.iopm_base_pa = (1 << 40) - 0x2000,
            StateError::PermissionMapBeyondPhysicalAddresses,
        );
        // An exception with vector 0x30 (what TCG's EXITINTINFO can report) is illegal.
        fails_with(
            |v| v.control.event_inj = 0x8000_0330,
            StateError::IllegalEventInjection(0x8000_0330),
        );
        fails_with(|v| v.control.guest_asid = 0, StateError::AsidZero);
        fails_with(
            |v| v.control.guest_asid = 16,
            StateError::AsidBeyondLimit(16),
        );
        fails_with(|v| v.control.tlb_control = 2, StateError::BadTlbControl(2));
        let mut v = good();
        let no_flush_by_asid = CheckLimits {
            flush_by_asid: false,
            ..LIMITS
        };
        assert_eq!(
            check_guest_state(&v, &no_flush_by_asid),
            Err(StateError::BadTlbControl(3))
        );
        v.control.tlb_control = 1;
        assert_eq!(check_guest_state(&v, &no_flush_by_asid), Ok(()));
        fails_with(
            |v| v.control.n_cr3 |= 1 << 45,
            StateError::NestedRootReservedBitsSet(1 << 45),
        );
    }

    #[test]
    fn legal_variations_pass() {
        let mut v = good();
        v.save.cr0 |= (1 << 29) | (1 << 30); // CD and NW both set is allowed
        v.save.efer |= 1 << 11; // NXE
        v.control.event_inj = 0x8000_0B0D; // #GP with error code
        v.control.iopm_base_pa = (1 << 40) - 0x3000; // last byte still below 2^40
        assert_eq!(check_guest_state(&v, &LIMITS), Ok(()));
        // Legacy (non-long-mode) state: CS.L with D is not checked, CR3 may use bits 39:32? no: 63:32 MBZ.
        v.save.efer &= !(1 << 8 | 1 << 10);
        v.save.cs.attrib |= 1 << 10;
        v.save.cr3 = 0xFFFF_F000;
        assert_eq!(check_guest_state(&v, &LIMITS), Ok(()));
        v.save.cr3 = 1 << 32;
        assert_eq!(
            check_guest_state(&v, &LIMITS),
            Err(StateError::Cr3ReservedBitsSet(1 << 32))
        );
    }

    #[test]
    fn reasons_read_as_sentences() {
        let s = format!("{}", StateError::EferSvmeClear);
        assert_eq!(s, "EFER.SVME is clear in the guest state");
    }
}
