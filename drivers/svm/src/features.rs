//! Whether this CPU can run Lazaret's guests: CPUID 8000_0001 ECX bit 2 (SVM), CPUID 8000_000A
//! (EBX = number of ASIDs, EDX bit 0 NP, bit 3 NRIP save), VM_CR (MSR C001_0114) bit 4 SVMDIS
//! (APM vol. 2 §15.4, vol. 3 appendix E).
use core::fmt;

/// MSR numbers SVM bring-up uses.
pub const MSR_EFER: u32 = 0xC000_0080;
pub const MSR_VM_CR: u32 = 0xC001_0114;
pub const MSR_VM_HSAVE_PA: u32 = 0xC001_0117;
const VM_CR_SVMDIS: u64 = 1 << 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SvmFeatures {
    pub nasid: u32,
    pub nested_paging: bool,
    pub nrip_save: bool,
    /// TLB_CONTROL 3 and 7 (EDX bit 6).
    pub flush_by_asid: bool,
    pub phys_addr_bits: u8,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SvmUnavailable {
    NoSvm,
    DisabledByFirmware,
    NoNestedPaging,
    TooFewAsids,
}

impl fmt::Display for SvmUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SvmUnavailable::NoSvm => "the CPU has no SVM (CPUID 8000_0001 ECX bit 2 clear)",
            SvmUnavailable::DisabledByFirmware => "SVM is disabled by firmware (VM_CR.SVMDIS set)",
            SvmUnavailable::NoNestedPaging => "the CPU has SVM but no nested paging",
            SvmUnavailable::TooFewAsids => "the CPU offers no guest ASID",
        })
    }
}

/// The raw values detection reads; [`SvmFeatures::detect`] judges them.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuidSvm {
    pub ext_max_leaf: u32,
    /// CPUID 8000_0001 ECX.
    pub ext1_ecx: u32,
    /// CPUID 8000_0008 EAX.
    pub ext8_eax: u32,
    /// CPUID 8000_000A EBX, EDX.
    pub svm_ebx: u32,
    pub svm_edx: u32,
    /// MSR VM_CR (read only when SVM is reported).
    pub vm_cr: u64,
}

impl SvmFeatures {
    pub fn detect(raw: &CpuidSvm) -> Result<SvmFeatures, SvmUnavailable> {
        if raw.ext_max_leaf < 0x8000_000A || raw.ext1_ecx & (1 << 2) == 0 {
            return Err(SvmUnavailable::NoSvm);
        }
        if raw.vm_cr & VM_CR_SVMDIS != 0 {
            return Err(SvmUnavailable::DisabledByFirmware);
        }
        if raw.svm_edx & 1 == 0 {
            return Err(SvmUnavailable::NoNestedPaging);
        }
        if raw.svm_ebx < 2 {
            return Err(SvmUnavailable::TooFewAsids);
        }
        let bits = (raw.ext8_eax & 0xFF) as u8;
        Ok(SvmFeatures {
            nasid: raw.svm_ebx,
            nested_paging: true,
            nrip_save: raw.svm_edx & (1 << 3) != 0,
            flush_by_asid: raw.svm_edx & (1 << 6) != 0,
            // 8000_0008 may be absent on odd CPUs: 36 bits is the architectural minimum.
            phys_addr_bits: if bits == 0 { 36 } else { bits },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qemu_tcg() -> CpuidSvm {
        // What `-cpu qemu64,+svm,+npt` reports under TCG: NP, no NRIP save.
        CpuidSvm {
            ext_max_leaf: 0x8000_000A,
            ext1_ecx: 1 << 2,
            ext8_eax: 40,
            svm_ebx: 16,
            svm_edx: 1,
            vm_cr: 0,
        }
    }

    #[test]
    fn detection_reads_each_bit() {
        let f = SvmFeatures::detect(&qemu_tcg()).unwrap();
        assert_eq!(
            f,
            SvmFeatures {
                nasid: 16,
                nested_paging: true,
                nrip_save: false,
                flush_by_asid: false,
                phys_addr_bits: 40
            }
        );
        assert!(
            SvmFeatures::detect(&CpuidSvm {
                svm_edx: 9,
                ..qemu_tcg()
            })
            .unwrap()
            .nrip_save
        );
        assert_eq!(
            SvmFeatures::detect(&CpuidSvm {
                ext1_ecx: 0,
                ..qemu_tcg()
            }),
            Err(SvmUnavailable::NoSvm)
        );
        assert_eq!(
            SvmFeatures::detect(&CpuidSvm {
                ext_max_leaf: 0x8000_0008,
                ..qemu_tcg()
            }),
            Err(SvmUnavailable::NoSvm)
        );
        assert_eq!(
            SvmFeatures::detect(&CpuidSvm {
                vm_cr: 1 << 4,
                ..qemu_tcg()
            }),
            Err(SvmUnavailable::DisabledByFirmware)
        );
        assert_eq!(
            SvmFeatures::detect(&CpuidSvm {
                svm_edx: 8,
                ..qemu_tcg()
            }),
            Err(SvmUnavailable::NoNestedPaging)
        );
        assert_eq!(
            SvmFeatures::detect(&CpuidSvm {
                svm_ebx: 1,
                ..qemu_tcg()
            }),
            Err(SvmUnavailable::TooFewAsids)
        );
    }
}
