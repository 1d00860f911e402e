//! Intercept vectors 3 and 4 of the VMCB control area (APM vol. 2 table B-1, §15.9–§15.15)
//! and the set Lazaret always programs.

/// Intercept vector 3 (VMCB offset 0x00C).
pub mod misc1 {
    pub const INTR: u32 = 1 << 0;
    pub const NMI: u32 = 1 << 1;
    pub const SMI: u32 = 1 << 2;
    pub const INIT: u32 = 1 << 3;
    pub const VINTR: u32 = 1 << 4;
    pub const CR0_SEL_WRITE: u32 = 1 << 5;
    pub const RDTSC: u32 = 1 << 14;
    pub const RDPMC: u32 = 1 << 15;
    pub const CPUID: u32 = 1 << 18;
    pub const RSM: u32 = 1 << 19;
    pub const INVD: u32 = 1 << 22;
    pub const HLT: u32 = 1 << 24;
    pub const INVLPGA: u32 = 1 << 26;
    pub const IOIO_PROT: u32 = 1 << 27;
    pub const MSR_PROT: u32 = 1 << 28;
    pub const TASK_SWITCH: u32 = 1 << 29;
    pub const FERR_FREEZE: u32 = 1 << 30;
    pub const SHUTDOWN: u32 = 1 << 31;
}

/// Intercept vector 4 (VMCB offset 0x010).
pub mod misc2 {
    pub const VMRUN: u32 = 1 << 0;
    pub const VMMCALL: u32 = 1 << 1;
    pub const VMLOAD: u32 = 1 << 2;
    pub const VMSAVE: u32 = 1 << 3;
    pub const STGI: u32 = 1 << 4;
    pub const CLGI: u32 = 1 << 5;
    pub const SKINIT: u32 = 1 << 6;
    pub const RDTSCP: u32 = 1 << 7;
    pub const ICEBP: u32 = 1 << 8;
    pub const WBINVD: u32 = 1 << 9;
    pub const MONITOR: u32 = 1 << 10;
    pub const MWAIT: u32 = 1 << 11;
    pub const MWAIT_ARMED: u32 = 1 << 12;
    pub const XSETBV: u32 = 1 << 13;
}

/// Exceptions whose exits Lazaret wants: #MC only (the host's to handle). Everything else,
/// #DF included, the guest handles itself; a guest that cannot ends in a triple fault, which
/// exits as SHUTDOWN.
pub const BASELINE_EXCEPTIONS: u32 = 1 << 18;

/// Physical interrupts and NMIs exit (the host owns them); the exits Lazaret emulates
/// (CPUID, HLT, I/O, MSR); anything that would let a guest see or change host state
/// (SMI, INIT, RSM, INVD, task switches, FERR) or hang the CPU (SHUTDOWN). CR0 writes that
/// change more than TS and MP exit too (§15.9.1 "selective CR0 write"): a guest that turns
/// paging off is outside nested paging on QEMU 7.2 (design.md §6), so it must never get there.
pub const BASELINE_MISC1: u32 = misc1::INTR
    | misc1::NMI
    | misc1::CR0_SEL_WRITE
    | misc1::SMI
    | misc1::INIT
    | misc1::CPUID
    | misc1::RSM
    | misc1::INVD
    | misc1::HLT
    | misc1::INVLPGA
    | misc1::IOIO_PROT
    | misc1::MSR_PROT
    | misc1::TASK_SWITCH
    | misc1::FERR_FREEZE
    | misc1::SHUTDOWN;

/// Every SVM instruction (VMRUN must be intercepted, §15.5.1), hypercalls, and instructions
/// that touch host-wide state (WBINVD, MONITOR/MWAIT, XSETBV, ICEBP).
pub const BASELINE_MISC2: u32 = misc2::VMRUN
    | misc2::VMMCALL
    | misc2::VMLOAD
    | misc2::VMSAVE
    | misc2::STGI
    | misc2::CLGI
    | misc2::SKINIT
    | misc2::RDTSCP
    | misc2::ICEBP
    | misc2::WBINVD
    | misc2::MONITOR
    | misc2::MWAIT
    | misc2::MWAIT_ARMED
    | misc2::XSETBV;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_are_table_b1_positions() {
        // Positions re-stated from table B-1, not from the constants above.
        assert_eq!(misc1::INTR, 0x1);
        assert_eq!(misc1::VINTR, 0x10);
        assert_eq!(misc1::CPUID, 0x0004_0000);
        assert_eq!(misc1::HLT, 0x0100_0000);
        assert_eq!(misc1::IOIO_PROT, 0x0800_0000);
        assert_eq!(misc1::MSR_PROT, 0x1000_0000);
        assert_eq!(misc1::SHUTDOWN, 0x8000_0000);
        assert_eq!(misc2::VMRUN, 0x1);
        assert_eq!(misc2::VMMCALL, 0x2);
        assert_eq!(BASELINE_MISC2 & 0x3, 0x3);
        // The exits the kernel relies on: INTR, NMI, selective CR0 write, CPUID, HLT, IOIO,
        // MSR, SHUTDOWN.
        let needed =
            0x1 | 0x2 | 0x20 | 0x4_0000 | 0x100_0000 | 0x800_0000 | 0x1000_0000 | 0x8000_0000;
        assert_eq!(BASELINE_MISC1 & needed, needed);
        assert_eq!(BASELINE_EXCEPTIONS, 1 << 18, "#MC only");
        assert_eq!(
            BASELINE_MISC1 & 0x10,
            0,
            "VINTR only while a window is armed"
        );
    }
}
