//! What CPUID tells a guest: the host's answer filtered through a whitelist, so a guest sees
//! no feature Lazaret does not virtualise (no SVM/VMX of its own, no XSAVE/AVX state the
//! vCPU does not save, no APIC or topology it cannot reach), and a hypervisor leaf that
//! names Lazaret. Vendor-neutral: SVM and VMX exits both end here.
//!
//! Bit positions: Intel SDM vol. 2A "CPUID" and AMD APM vol. 3 appendix E.

/// The registers of one CPUID answer: `[eax, ebx, ecx, edx]`.
pub type Regs = [u32; 4];

/// Leaf 0x4000_0000's signature, in EBX, ECX, EDX: "LazaretHv" padded with NULs.
pub const SIGNATURE: &[u8; 12] = b"LazaretHv\0\0\0";

const HYPERVISOR_LEAF: u32 = 0x4000_0000;
const MAX_BASIC: u32 = 0xd;
const MAX_EXTENDED: u32 = 0x8000_0008;

/// Leaf 1 ECX: SSE3, PCLMULQDQ, SSSE3, CX16, SSE4.1, SSE4.2, MOVBE, POPCNT, AES, RDRAND.
/// Not: MONITOR (3), VMX (5), x2APIC (21), XSAVE/OSXSAVE (26/27), AVX (28), FMA (12), F16C (29).
const LEAF1_ECX: u32 = (1 << 0)
    | (1 << 1)
    | (1 << 9)
    | (1 << 13)
    | (1 << 19)
    | (1 << 20)
    | (1 << 22)
    | (1 << 23)
    | (1 << 25)
    | (1 << 30);
/// Leaf 1 ECX bit 31: "a hypervisor is present".
const LEAF1_HYPERVISOR: u32 = 1 << 31;
/// Leaf 1 EDX: FPU, DE, PSE, TSC, MSR, PAE, CX8, SEP, PGE, CMOV, PAT, PSE36, CLFSH, MMX,
/// FXSR, SSE, SSE2. Not: MCE/MCA (7, 14), APIC (9), MTRR (12), ACPI/TM (22, 29), HTT (28).
const LEAF1_EDX: u32 = (1 << 0)
    | (1 << 2)
    | (1 << 3)
    | (1 << 4)
    | (1 << 5)
    | (1 << 6)
    | (1 << 8)
    | (1 << 11)
    | (1 << 13)
    | (1 << 15)
    | (1 << 16)
    | (1 << 17)
    | (1 << 19)
    | (1 << 23)
    | (1 << 24)
    | (1 << 25)
    | (1 << 26);
/// Leaf 7.0 EBX: FSGSBASE (0), BMI1 (3), BMI2 (8), ERMS (9), ADX (19), SMAP off, SHA (29).
const LEAF7_EBX: u32 = (1 << 0) | (1 << 3) | (1 << 8) | (1 << 9) | (1 << 19) | (1 << 29);
/// Leaf 8000_0001 ECX: LAHF/SAHF (0), ABM/LZCNT (5), SSE4A (6), PREFETCHW (8).
/// Not: SVM (2), the AMD topology and performance bits.
const EXT1_ECX: u32 = (1 << 0) | (1 << 5) | (1 << 6) | (1 << 8);
/// Leaf 8000_0001 EDX: the leaf-1 EDX bits AMD mirrors, SYSCALL (11), NX (20), 1 GiB pages
/// (26), RDTSCP (27), LM (29).
const EXT1_EDX: u32 =
    (LEAF1_EDX & 0x0183_f3ff) | (1 << 11) | (1 << 20) | (1 << 26) | (1 << 27) | (1 << 29);

/// The guest's answer to CPUID(`leaf`, `subleaf`) given the host's (`host` is asked only
/// for leaves the guest may see).
pub fn answer(leaf: u32, subleaf: u32, host: impl Fn(u32, u32) -> Regs) -> Regs {
    match leaf {
        0 => {
            let [max, b, c, d] = host(0, 0);
            [max.min(MAX_BASIC), b, c, d]
        }
        1 => {
            let [a, b, c, d] = host(1, 0);
            // EBX: keep the CLFLUSH line size (15:8); logical count 1 (23:16), APIC ID 0 (31:24).
            let ebx = (b & 0x0000_ff00) | (1 << 16);
            [a, ebx, (c & LEAF1_ECX) | LEAF1_HYPERVISOR, d & LEAF1_EDX]
        }
        7 if subleaf == 0 => {
            let [_, b, _, _] = host(7, 0);
            [0, b & LEAF7_EBX, 0, 0]
        }
        // Deterministic cache parameters are harmless and some guests need them.
        4 => host(4, subleaf),
        HYPERVISOR_LEAF => {
            let word = |i: usize| {
                u32::from_le_bytes([
                    SIGNATURE[i],
                    SIGNATURE[i + 1],
                    SIGNATURE[i + 2],
                    SIGNATURE[i + 3],
                ])
            };
            [HYPERVISOR_LEAF, word(0), word(4), word(8)]
        }
        0x8000_0000 => {
            let [max, b, c, d] = host(0x8000_0000, 0);
            [max.min(MAX_EXTENDED), b, c, d]
        }
        0x8000_0001 => {
            let [a, _, c, d] = host(0x8000_0001, 0);
            [a, 0, c & EXT1_ECX, d & EXT1_EDX]
        }
        // Brand string.
        0x8000_0002..=0x8000_0004 => host(leaf, 0),
        // Address sizes (EAX); nothing about cores.
        0x8000_0008 => {
            let [a, _, _, _] = host(0x8000_0008, 0);
            [a & 0xffff, 0, 0, 0]
        }
        // Everything else, including SVM's 8000_000A, XSAVE's 0xD and topology: nothing.
        _ => [0; 4],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A host that claims every feature bit, so every filtered bit shows.
    fn everything(leaf: u32, _sub: u32) -> Regs {
        match leaf {
            0 => [0x20, 0x6874_7541, 0x444d_4163, 0x6974_6e65],
            0x8000_0000 => [0x8000_0021, 0, 0, 0],
            _ => [u32::MAX; 4],
        }
    }

    fn bit(r: u32, n: u32) -> bool {
        r & (1 << n) != 0
    }

    #[test]
    fn a_guest_never_sees_hardware_virtualisation() {
        assert!(!bit(answer(1, 0, everything)[2], 5), "VMX");
        assert!(!bit(answer(0x8000_0001, 0, everything)[2], 2), "SVM");
        assert_eq!(
            answer(0x8000_000a, 0, everything),
            [0; 4],
            "SVM features leaf"
        );
    }

    #[test]
    fn a_guest_sees_no_state_the_vcpu_does_not_save() {
        let ecx = answer(1, 0, everything)[2];
        for (n, what) in [
            (26, "XSAVE"),
            (27, "OSXSAVE"),
            (28, "AVX"),
            (12, "FMA"),
            (29, "F16C"),
        ] {
            assert!(!bit(ecx, n), "{what}");
        }
        assert_eq!(answer(0xd, 0, everything), [0; 4], "XSAVE leaf");
        assert_eq!(answer(7, 0, everything)[1] & (1 << 5), 0, "AVX2");
        assert!(bit(answer(1, 0, everything)[3], 25), "SSE stays");
        assert!(bit(answer(1, 0, everything)[3], 26), "SSE2 stays");
        assert!(bit(answer(1, 0, everything)[3], 24), "FXSR stays");
    }

    #[test]
    fn a_guest_sees_no_apic_topology_or_machine_check() {
        let [_, ebx, ecx, edx] = answer(1, 0, everything);
        assert_eq!(ebx >> 24, 0, "APIC ID");
        assert_eq!((ebx >> 16) & 0xff, 1, "one logical CPU");
        assert!(!bit(edx, 9), "APIC");
        assert!(!bit(ecx, 21), "x2APIC");
        assert!(!bit(edx, 7) && !bit(edx, 14), "MCE/MCA");
        assert!(!bit(edx, 28), "HTT");
        assert_eq!(answer(0xb, 0, everything), [0; 4]);
        assert_eq!(answer(0x8000_0008, 0, everything)[2], 0, "core count");
    }

    #[test]
    fn the_hypervisor_is_announced_and_named() {
        assert!(bit(answer(1, 0, everything)[2], 31));
        let [max, b, c, d] = answer(0x4000_0000, 0, everything);
        assert_eq!(max, 0x4000_0000);
        let mut sig = [0u8; 12];
        sig[..4].copy_from_slice(&b.to_le_bytes());
        sig[4..8].copy_from_slice(&c.to_le_bytes());
        sig[8..].copy_from_slice(&d.to_le_bytes());
        assert_eq!(&sig, b"LazaretHv\0\0\0");
    }

    #[test]
    fn leaf_ranges_are_capped_and_long_mode_is_kept() {
        assert_eq!(answer(0, 0, everything)[0], 0xd);
        assert_eq!(answer(0x8000_0000, 0, everything)[0], 0x8000_0008);
        let edx = answer(0x8000_0001, 0, everything)[3];
        assert!(
            bit(edx, 29) && bit(edx, 20) && bit(edx, 11),
            "LM, NX, SYSCALL"
        );
        assert_eq!(answer(0x9999, 0, everything), [0; 4]);
    }

    #[test]
    fn the_vendor_string_and_family_pass_through() {
        let host = |leaf: u32, _| {
            if leaf == 1 {
                [0x00a2_0f12, 0x0010_0800, 0, 0]
            } else {
                everything(leaf, 0)
            }
        };
        let r = answer(1, 0, host);
        assert_eq!(r[0], 0x00a2_0f12);
        assert_eq!(r[1] & 0xff00, 0x0800, "CLFLUSH line size");
        assert_eq!(answer(0, 0, everything)[1..], everything(0, 0)[1..]);
    }
}
