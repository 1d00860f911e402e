//! The VMCB (APM vol. 2 appendix B): a 4 KiB page, control area at 0x000–0x3FF (table B-1),
//! state-save area at 0x400 (table B-2). Every field sits at the offset the tables give; the
//! `const` assertions below fail the build if one moves.
use core::mem::{offset_of, size_of};

use crate::intercept;

/// One segment register in the VMCB's compressed form (§15.5.1, table B-2): `attrib` holds
/// descriptor bits 47:40 in its bits 7:0 and descriptor bits 55:52 in its bits 11:8.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Segment {
    pub selector: u16,
    pub attrib: u16,
    pub limit: u32,
    pub base: u64,
}

/// Segment attribute bits in the compressed form.
pub mod attrib {
    /// Type: accessed (data/code).
    pub const ACCESSED: u16 = 1 << 0;
    /// Type: readable code / writable data.
    pub const READ_WRITE: u16 = 1 << 1;
    /// Type: code segment.
    pub const CODE: u16 = 1 << 3;
    /// S: code or data (not system).
    pub const S: u16 = 1 << 4;
    pub const DPL_SHIFT: u16 = 5;
    pub const P: u16 = 1 << 7;
    pub const AVL: u16 = 1 << 8;
    /// L: 64-bit code segment.
    pub const L: u16 = 1 << 9;
    /// D/B: default operand size 32 bits.
    pub const DB: u16 = 1 << 10;
    pub const G: u16 = 1 << 11;
    /// A busy 64-bit TSS (system type 0xB).
    pub const TSS_BUSY_64: u16 = 0xB;
}

/// Control area, table B-1.
#[derive(Clone, Debug)]
#[repr(C)]
pub struct ControlArea {
    /// 15:0 CR0–15 reads, 31:16 CR0–15 writes.
    pub intercept_cr: u32,
    /// 15:0 DR0–15 reads, 31:16 DR0–15 writes.
    pub intercept_dr: u32,
    /// One bit per exception vector 0–31.
    pub intercept_exceptions: u32,
    /// Intercept vector 3 ([`intercept::misc1`]).
    pub intercept_misc1: u32,
    /// Intercept vector 4 ([`intercept::misc2`]).
    pub intercept_misc2: u32,
    /// Intercept vector 5 (INVLPGB, …); left zero.
    pub intercept_misc3: u32,
    _reserved0: [u8; 0x24],
    pub pause_filter_threshold: u16,
    pub pause_filter_count: u16,
    /// Physical address of the 12 KiB I/O permission map (bits 11:0 ignored).
    pub iopm_base_pa: u64,
    /// Physical address of the 8 KiB MSR permission map (bits 11:0 ignored).
    pub msrpm_base_pa: u64,
    pub tsc_offset: u64,
    pub guest_asid: u32,
    /// TLB_CONTROL ([`tlb_control`]).
    pub tlb_control: u8,
    _reserved1: [u8; 3],
    /// V_TPR, V_IRQ, V_INTR_PRIO, V_IGN_TPR, V_INTR_MASKING, V_INTR_VECTOR ([`VIntr`]).
    pub vintr: VIntr,
    /// Bit 0 INTERRUPT_SHADOW, bit 1 GUEST_INTERRUPT_MASK ([`int_state`]).
    pub interrupt_shadow: u64,
    pub exit_code: u64,
    pub exit_info1: u64,
    pub exit_info2: u64,
    pub exit_int_info: u64,
    /// Bit 0 NP_ENABLE, bit 1 SEV, bit 2 SEV-ES, …
    pub np_control: u64,
    pub avic_apic_bar: u64,
    pub ghcb_pa: u64,
    pub event_inj: u64,
    /// Nested page table root (the host-physical PML4 of the guest-physical space).
    pub n_cr3: u64,
    /// Bit 0 LBR virtualisation, bit 1 virtualised VMSAVE/VMLOAD.
    pub virt_ext: u64,
    /// VMCB clean bits: zero tells the CPU every cached field is stale.
    pub clean_bits: u32,
    _reserved2: u32,
    /// Next sequential RIP, written on exit when the CPU has NRIP save.
    pub next_rip: u64,
    /// Number of guest instruction bytes fetched (decode assists).
    pub bytes_fetched: u8,
    pub guest_insn_bytes: [u8; 15],
    _reserved3: [u8; 0x320],
}

/// The virtual-interrupt control at 0x060 (§15.21.4, table B-1): V_TPR 3:0, V_IRQ 8,
/// V_INTR_PRIO 19:16, V_IGN_TPR 20, V_INTR_MASKING 24, V_INTR_VECTOR 39:32. The other bits
/// (V_GIF, AVIC, …) are kept as they are by every setter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(transparent)]
pub struct VIntr(pub u64);

impl VIntr {
    const TPR: u64 = 0xF;
    const IRQ: u64 = 1 << 8;
    const PRIO_SHIFT: u32 = 16;
    const IGN_TPR: u64 = 1 << 20;
    const MASKING: u64 = 1 << 24;
    const VECTOR_SHIFT: u32 = 32;

    fn with_bit(self, bit: u64, on: bool) -> VIntr {
        VIntr(if on { self.0 | bit } else { self.0 & !bit })
    }

    /// The guest's task priority (CR8), 4 bits.
    pub fn tpr(self) -> u8 {
        (self.0 & Self::TPR) as u8
    }
    pub fn with_tpr(self, tpr: u8) -> VIntr {
        VIntr((self.0 & !Self::TPR) | (u64::from(tpr) & Self::TPR))
    }
    /// A virtual interrupt is pending (the CPU clears it when the guest takes it).
    pub fn irq(self) -> bool {
        self.0 & Self::IRQ != 0
    }
    pub fn with_irq(self, on: bool) -> VIntr {
        self.with_bit(Self::IRQ, on)
    }
    /// The pending virtual interrupt's priority, compared with V_TPR unless V_IGN_TPR.
    pub fn prio(self) -> u8 {
        ((self.0 >> Self::PRIO_SHIFT) & 0xF) as u8
    }
    pub fn with_prio(self, prio: u8) -> VIntr {
        let field = 0xF << Self::PRIO_SHIFT;
        VIntr((self.0 & !field) | ((u64::from(prio) << Self::PRIO_SHIFT) & field))
    }
    /// The pending virtual interrupt ignores V_TPR.
    pub fn ign_tpr(self) -> bool {
        self.0 & Self::IGN_TPR != 0
    }
    pub fn with_ign_tpr(self, on: bool) -> VIntr {
        self.with_bit(Self::IGN_TPR, on)
    }
    /// V_INTR_MASKING: the guest's RFLAGS.IF masks only virtual interrupts; the host's IF at
    /// VMRUN masks physical ones.
    pub fn masking(self) -> bool {
        self.0 & Self::MASKING != 0
    }
    pub fn with_masking(self, on: bool) -> VIntr {
        self.with_bit(Self::MASKING, on)
    }
    /// The vector the guest takes for the pending virtual interrupt.
    pub fn vector(self) -> u8 {
        (self.0 >> Self::VECTOR_SHIFT) as u8
    }
    pub fn with_vector(self, vector: u8) -> VIntr {
        let field = 0xFF << Self::VECTOR_SHIFT;
        VIntr((self.0 & !field) | (u64::from(vector) << Self::VECTOR_SHIFT))
    }
}

/// The guest interrupt state at 0x068 (table B-1).
pub mod int_state {
    /// The guest is in an interrupt shadow: the instruction after STI or MOV SS has not
    /// completed yet, so no interrupt may be delivered before it (§15.21.5).
    pub const INTERRUPT_SHADOW: u64 = 1 << 0;
    /// GUEST_INTERRUPT_MASK: the guest's RFLAGS.IF, written on exit with V_INTR_MASKING.
    pub const GUEST_INTERRUPT_MASK: u64 = 1 << 1;
}

impl ControlArea {
    pub fn in_interrupt_shadow(&self) -> bool {
        self.interrupt_shadow & int_state::INTERRUPT_SHADOW != 0
    }

    /// Ends the shadow once the instruction it covered has been completed by the host.
    pub fn clear_interrupt_shadow(&mut self) {
        self.interrupt_shadow &= !int_state::INTERRUPT_SHADOW;
    }
}

/// TLB_CONTROL values (table B-1).
pub mod tlb_control {
    pub const DO_NOTHING: u8 = 0;
    pub const FLUSH_ALL: u8 = 1;
    pub const FLUSH_GUEST: u8 = 3;
    pub const FLUSH_GUEST_NON_GLOBAL: u8 = 7;
}

/// `np_control` bit 0.
pub const NP_ENABLE: u64 = 1 << 0;

/// State-save area, table B-2 (offsets relative to 0x400).
#[derive(Clone, Debug)]
#[repr(C)]
pub struct SaveArea {
    pub es: Segment,
    pub cs: Segment,
    pub ss: Segment,
    pub ds: Segment,
    pub fs: Segment,
    pub gs: Segment,
    pub gdtr: Segment,
    pub ldtr: Segment,
    pub idtr: Segment,
    pub tr: Segment,
    _reserved0: [u8; 0x2B],
    pub cpl: u8,
    _reserved1: u32,
    pub efer: u64,
    _reserved2: [u8; 0x70],
    pub cr4: u64,
    pub cr3: u64,
    pub cr0: u64,
    pub dr7: u64,
    pub dr6: u64,
    pub rflags: u64,
    pub rip: u64,
    _reserved3: [u8; 0x58],
    pub rsp: u64,
    pub s_cet: u64,
    pub ssp: u64,
    pub isst_addr: u64,
    pub rax: u64,
    pub star: u64,
    pub lstar: u64,
    pub cstar: u64,
    pub sfmask: u64,
    pub kernel_gs_base: u64,
    pub sysenter_cs: u64,
    pub sysenter_esp: u64,
    pub sysenter_eip: u64,
    pub cr2: u64,
    _reserved4: [u8; 0x20],
    pub g_pat: u64,
    pub dbgctl: u64,
    pub br_from: u64,
    pub br_to: u64,
    pub last_excp_from: u64,
    pub last_excp_to: u64,
    _reserved5: [u8; 0xC00 - 0x298],
}

/// The whole VMCB: one page, page-aligned (VMRUN takes its physical address in RAX).
#[derive(Clone, Debug)]
#[repr(C, align(4096))]
pub struct Vmcb {
    pub control: ControlArea,
    pub save: SaveArea,
}

const _: () = {
    assert!(size_of::<Segment>() == 16);
    assert!(size_of::<ControlArea>() == 0x400);
    assert!(size_of::<SaveArea>() == 0xC00);
    assert!(size_of::<Vmcb>() == 0x1000);
    // Table B-1.
    assert!(offset_of!(ControlArea, intercept_exceptions) == 0x008);
    assert!(offset_of!(ControlArea, intercept_misc1) == 0x00C);
    assert!(offset_of!(ControlArea, intercept_misc2) == 0x010);
    assert!(offset_of!(ControlArea, pause_filter_threshold) == 0x03C);
    assert!(offset_of!(ControlArea, iopm_base_pa) == 0x040);
    assert!(offset_of!(ControlArea, msrpm_base_pa) == 0x048);
    assert!(offset_of!(ControlArea, tsc_offset) == 0x050);
    assert!(offset_of!(ControlArea, guest_asid) == 0x058);
    assert!(offset_of!(ControlArea, tlb_control) == 0x05C);
    assert!(offset_of!(ControlArea, vintr) == 0x060);
    assert!(offset_of!(ControlArea, interrupt_shadow) == 0x068);
    assert!(offset_of!(ControlArea, exit_code) == 0x070);
    assert!(offset_of!(ControlArea, exit_info1) == 0x078);
    assert!(offset_of!(ControlArea, exit_info2) == 0x080);
    assert!(offset_of!(ControlArea, exit_int_info) == 0x088);
    assert!(offset_of!(ControlArea, np_control) == 0x090);
    assert!(offset_of!(ControlArea, avic_apic_bar) == 0x098);
    assert!(offset_of!(ControlArea, ghcb_pa) == 0x0A0);
    assert!(offset_of!(ControlArea, event_inj) == 0x0A8);
    assert!(offset_of!(ControlArea, n_cr3) == 0x0B0);
    assert!(offset_of!(ControlArea, virt_ext) == 0x0B8);
    assert!(offset_of!(ControlArea, clean_bits) == 0x0C0);
    assert!(offset_of!(ControlArea, next_rip) == 0x0C8);
    assert!(offset_of!(ControlArea, bytes_fetched) == 0x0D0);
    assert!(offset_of!(ControlArea, guest_insn_bytes) == 0x0D1);
    // Table B-2 (relative to the save area at 0x400).
    assert!(offset_of!(Vmcb, save) == 0x400);
    assert!(offset_of!(SaveArea, cs) == 0x010);
    assert!(offset_of!(SaveArea, ss) == 0x020);
    assert!(offset_of!(SaveArea, ds) == 0x030);
    assert!(offset_of!(SaveArea, gdtr) == 0x060);
    assert!(offset_of!(SaveArea, idtr) == 0x080);
    assert!(offset_of!(SaveArea, tr) == 0x090);
    assert!(offset_of!(SaveArea, cpl) == 0x0CB);
    assert!(offset_of!(SaveArea, efer) == 0x0D0);
    assert!(offset_of!(SaveArea, cr4) == 0x148);
    assert!(offset_of!(SaveArea, cr3) == 0x150);
    assert!(offset_of!(SaveArea, cr0) == 0x158);
    assert!(offset_of!(SaveArea, dr7) == 0x160);
    assert!(offset_of!(SaveArea, dr6) == 0x168);
    assert!(offset_of!(SaveArea, rflags) == 0x170);
    assert!(offset_of!(SaveArea, rip) == 0x178);
    assert!(offset_of!(SaveArea, rsp) == 0x1D8);
    assert!(offset_of!(SaveArea, rax) == 0x1F8);
    assert!(offset_of!(SaveArea, star) == 0x200);
    assert!(offset_of!(SaveArea, kernel_gs_base) == 0x220);
    assert!(offset_of!(SaveArea, sysenter_eip) == 0x238);
    assert!(offset_of!(SaveArea, cr2) == 0x240);
    assert!(offset_of!(SaveArea, g_pat) == 0x268);
    assert!(offset_of!(SaveArea, dbgctl) == 0x270);
    assert!(offset_of!(SaveArea, last_excp_to) == 0x290);
};

/// Control-register bits the entry state and the checks use (APM vol. 2 §3.1).
pub mod cr {
    pub const CR0_PE: u64 = 1 << 0;
    pub const CR0_MP: u64 = 1 << 1;
    pub const CR0_ET: u64 = 1 << 4;
    pub const CR0_NE: u64 = 1 << 5;
    pub const CR0_WP: u64 = 1 << 16;
    pub const CR0_NW: u64 = 1 << 29;
    pub const CR0_CD: u64 = 1 << 30;
    pub const CR0_PG: u64 = 1 << 31;
    pub const CR4_PAE: u64 = 1 << 5;
    pub const CR4_OSFXSR: u64 = 1 << 9;
    pub const CR4_OSXMMEXCPT: u64 = 1 << 10;
    pub const EFER_SCE: u64 = 1 << 0;
    pub const EFER_LME: u64 = 1 << 8;
    pub const EFER_LMA: u64 = 1 << 10;
    pub const EFER_NXE: u64 = 1 << 11;
    pub const EFER_SVME: u64 = 1 << 12;
}

/// The guest contract's 64-bit entry state (`briefs/guest-contract.md`, "Entry state").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LongModeEntry {
    pub rip: u64,
    pub rsp: u64,
    pub cr3: u64,
    pub gdt_base: u64,
    pub gdt_limit: u16,
}

/// The guest's code and data selectors in the GDT Lazaret writes.
pub const GUEST_CODE_SELECTOR: u16 = 0x08;
pub const GUEST_DATA_SELECTOR: u16 = 0x10;

/// The reset value of the PAT MSR: WB, WT, UC-, UC, repeated (APM vol. 2 §7.8.1).
pub const PAT_RESET: u64 = 0x0007_0406_0007_0406;

impl Vmcb {
    /// An all-zero VMCB, as VMRUN expects the reserved fields.
    pub fn zeroed() -> Vmcb {
        // SAFETY: every field is an integer or an array of integers, for which all-zero bytes
        // are a valid value.
        unsafe { core::mem::zeroed() }
    }

    /// Sets the intercepts Lazaret always wants (see [`intercept::baseline`]), the permission
    /// maps, the ASID and the nested page table root. Exits outside the baseline never happen.
    pub fn set_controls(&mut self, iopm_pa: u64, msrpm_pa: u64, asid: u32, n_cr3: u64) {
        let c = &mut self.control;
        c.intercept_exceptions = intercept::BASELINE_EXCEPTIONS;
        c.intercept_misc1 = intercept::BASELINE_MISC1;
        c.intercept_misc2 = intercept::BASELINE_MISC2;
        c.iopm_base_pa = iopm_pa;
        c.msrpm_base_pa = msrpm_pa;
        c.guest_asid = asid;
        // A new ASID may hold a previous guest's translations: flush them on first entry.
        c.tlb_control = tlb_control::FLUSH_GUEST;
        c.np_control = NP_ENABLE;
        c.n_cr3 = n_cr3;
        // V_INTR_MASKING: the guest's RFLAGS.IF masks only virtual interrupts; physical
        // interrupts stay the host's and exit (INTR intercept).
        c.vintr = VIntr::default().with_masking(true);
        c.clean_bits = 0;
    }

    /// Loads the guest contract's long-mode entry state: CR0 = PE|MP|ET|NE|WP|PG,
    /// CR4 = PAE|OSFXSR|OSXMMEXCPT, EFER = LME|LMA|SVME, CS = 0x08 (L=1), DS/ES/SS = 0x10,
    /// RFLAGS = 0x2, no IDT.
    pub fn load_long_mode(&mut self, entry: &LongModeEntry) {
        use attrib::*;
        let s = &mut self.save;
        let data = Segment {
            selector: GUEST_DATA_SELECTOR,
            attrib: P | S | READ_WRITE | ACCESSED | DB | G,
            limit: 0xFFFF_FFFF,
            base: 0,
        };
        s.cs = Segment {
            selector: GUEST_CODE_SELECTOR,
            attrib: P | S | CODE | READ_WRITE | ACCESSED | L | G,
            limit: 0xFFFF_FFFF,
            base: 0,
        };
        s.ds = data;
        s.es = data;
        s.ss = data;
        s.fs = Segment {
            selector: 0,
            attrib: 0,
            limit: 0,
            base: 0,
        };
        s.gs = s.fs;
        s.ldtr = Segment {
            selector: 0,
            attrib: 0x82 | P,
            limit: 0,
            base: 0,
        };
        // A valid busy TSS is required by task-register loads; the guest never switches task.
        s.tr = Segment {
            selector: 0,
            attrib: TSS_BUSY_64 | P,
            limit: 0x67,
            base: 0,
        };
        s.gdtr = Segment {
            selector: 0,
            attrib: 0,
            limit: u32::from(entry.gdt_limit),
            base: entry.gdt_base,
        };
        s.idtr = Segment::default();
        s.cpl = 0;
        s.efer = cr::EFER_LME | cr::EFER_LMA | cr::EFER_SVME;
        s.cr0 = cr::CR0_PE | cr::CR0_MP | cr::CR0_ET | cr::CR0_NE | cr::CR0_WP | cr::CR0_PG;
        s.cr3 = entry.cr3;
        s.cr4 = cr::CR4_PAE | cr::CR4_OSFXSR | cr::CR4_OSXMMEXCPT;
        s.dr6 = 0xFFFF_0FF0;
        s.dr7 = 0x400;
        s.rflags = 0x2;
        s.rip = entry.rip;
        s.rsp = entry.rsp;
        s.g_pat = PAT_RESET;
    }
}

/// Reads of a VMCB by byte offset, for tests that check layouts against appendix B
/// independently of the struct definition and its setters.
#[cfg(test)]
pub(crate) mod raw {
    use super::Vmcb;

    fn bytes(vmcb: &Vmcb) -> &[u8] {
        // SAFETY: a Vmcb is 4096 bytes of plain integers, all initialised.
        unsafe { core::slice::from_raw_parts(vmcb as *const Vmcb as *const u8, size_of::<Vmcb>()) }
    }

    pub fn u64_at(vmcb: &Vmcb, offset: usize) -> u64 {
        u64::from_le_bytes(bytes(vmcb)[offset..offset + 8].try_into().unwrap())
    }

    pub fn u32_at(vmcb: &Vmcb, offset: usize) -> u32 {
        u32::from_le_bytes(bytes(vmcb)[offset..offset + 4].try_into().unwrap())
    }
}

#[cfg(test)]
mod tests {
    use super::raw::u64_at;
    use super::*;

    #[test]
    fn fields_land_at_the_appendix_b_offsets() {
        let mut v = Box::new(Vmcb::zeroed());
        v.control.n_cr3 = 0x1111;
        v.control.exit_code = 0x2222;
        v.control.event_inj = 0x3333;
        v.save.rip = 0x4444;
        v.save.rax = 0x5555;
        v.save.efer = 0x6666;
        v.save.cr3 = 0x7777;
        assert_eq!(u64_at(&v, 0x0B0), 0x1111);
        assert_eq!(u64_at(&v, 0x070), 0x2222);
        assert_eq!(u64_at(&v, 0x0A8), 0x3333);
        assert_eq!(u64_at(&v, 0x400 + 0x178), 0x4444);
        assert_eq!(u64_at(&v, 0x400 + 0x1F8), 0x5555);
        assert_eq!(u64_at(&v, 0x400 + 0x0D0), 0x6666);
        assert_eq!(u64_at(&v, 0x400 + 0x150), 0x7777);
        assert_eq!(core::mem::align_of::<Vmcb>(), 4096);
    }

    #[test]
    fn vintr_fields_follow_table_b1() {
        let mut v = Box::new(Vmcb::zeroed());
        v.set_controls(0, 0, 1, 0);
        assert_eq!(u64_at(&v, 0x060), 1 << 24, "V_INTR_MASKING alone");
        // Each field at its position, alone.
        let one = |f: fn(VIntr) -> VIntr| f(VIntr::default()).0;
        assert_eq!(one(|x| x.with_tpr(0xF)), 0xF);
        assert_eq!(one(|x| x.with_irq(true)), 1 << 8);
        assert_eq!(one(|x| x.with_prio(0xF)), 0xF << 16);
        assert_eq!(one(|x| x.with_ign_tpr(true)), 1 << 20);
        assert_eq!(one(|x| x.with_masking(true)), 1 << 24);
        assert_eq!(one(|x| x.with_vector(0xAB)), 0xAB << 32);
        // Out-of-range values stay in their field.
        assert_eq!(one(|x| x.with_tpr(0xFF)), 0xF);
        assert_eq!(one(|x| x.with_prio(0x1F)), 0xF << 16);
        // Setters keep the bits they do not own (V_GIF 9, V_GIF_ENABLE 25, AVIC 31).
        let others = (1 << 9) | (1 << 25) | (1 << 31);
        let x = VIntr(others)
            .with_irq(true)
            .with_vector(0x50)
            .with_prio(5)
            .with_ign_tpr(true)
            .with_tpr(3);
        assert_eq!(
            x.0,
            others | 3 | (1 << 8) | (5 << 16) | (1 << 20) | (0x50 << 32)
        );
        assert_eq!(
            (
                x.tpr(),
                x.irq(),
                x.prio(),
                x.ign_tpr(),
                x.vector(),
                x.masking()
            ),
            (3, true, 5, true, 0x50, false)
        );
        let cleared = x.with_irq(false).with_ign_tpr(false);
        assert_eq!(cleared.0, others | 3 | (5 << 16) | (0x50 << 32));
        v.control.vintr = x;
        assert_eq!(u64_at(&v, 0x060), x.0);
    }

    #[test]
    fn the_interrupt_shadow_is_bit_0_at_0x68() {
        let mut v = Box::new(Vmcb::zeroed());
        v.control.interrupt_shadow = 0b11;
        assert!(v.control.in_interrupt_shadow());
        v.control.clear_interrupt_shadow();
        assert!(!v.control.in_interrupt_shadow());
        assert_eq!(u64_at(&v, 0x068), 0b10, "GUEST_INTERRUPT_MASK untouched");
        v.control.interrupt_shadow = 0b10;
        assert!(!v.control.in_interrupt_shadow());
    }

    #[test]
    fn long_mode_entry_matches_the_guest_contract() {
        let mut v = Box::new(Vmcb::zeroed());
        v.load_long_mode(&LongModeEntry {
            rip: 0x20_0000,
            rsp: 0x10_0000,
            cr3: 0x1_0000,
            gdt_base: 0x3000,
            gdt_limit: 23,
        });
        let s = &v.save;
        assert_eq!(s.cr0, 0x8001_0033);
        assert_eq!(s.cr4, 0x620);
        assert_eq!(s.efer, 0x1500);
        assert_eq!(
            (s.cs.selector, s.ds.selector, s.ss.selector),
            (8, 0x10, 0x10)
        );
        assert!(s.cs.attrib & attrib::L != 0 && s.cs.attrib & attrib::DB == 0);
        assert_eq!((s.gdtr.base, s.gdtr.limit), (0x3000, 23));
        assert_eq!(
            (s.rip, s.rsp, s.rflags, s.cr3),
            (0x20_0000, 0x10_0000, 2, 0x1_0000)
        );
    }
}
