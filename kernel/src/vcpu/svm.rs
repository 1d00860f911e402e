//! The SVM backend of the vCPU seam (AMD APM vol. 2 chapter 15). Layouts, checks, maps and
//! decoding live in `lazaret-svm` (host-tested); this file is what touches the CPU: CPUID and
//! MSRs at enable, one VMCB frame per vCPU, the VMRUN path in `arch/vmrun.s`, and reading the
//! guest's instruction bytes when the CPU has no NRIP save (QEMU's TCG).
use alloc::boxed::Box;
use alloc::format;
use alloc::string::{String, ToString};

use lazaret_svm::decode::Instruction;
use lazaret_svm::delivery;
use lazaret_svm::exit::Exit as SvmExit;
use lazaret_svm::features::{CpuidSvm, MSR_EFER, MSR_VM_CR, MSR_VM_HSAVE_PA};
use lazaret_svm::vmcb::{cr, tlb_control, LongModeEntry};
use lazaret_svm::{
    check::CheckLimits, check_guest_state, decode_length, sanitize_exit_int_info, AsidAllocator,
    AsidTag, EventInj, IoPermissionMap, MsrPermissionMap, SvmFeatures, Vmcb,
};
use lazaret_types::{FrameAllocator, PhysAddr, PhysMem};

use super::walk::{self, Translation};
use super::{EntryState, Exit, ExitCounts, GuestRegs, Vcpu, VcpuError, Virtualization};
use crate::arch::percpu::{self, FxArea, PerCpu};
use crate::mm::direct_map::DIRECT_MAP;

core::arch::global_asm!(include_str!("../arch/vmrun.s"));

extern "C" {
    fn lazaret_svm_run(frame: *mut RunFrame);
}

/// What `vmrun.s` reads and writes, at the offsets its header gives.
#[repr(C)]
struct RunFrame {
    regs: GuestRegs,
    guest_vmcb: u64,
    host_state: u64,
    guest_fx: *mut FxArea,
    host_fx: *mut FxArea,
}

const _: () = {
    assert!(core::mem::offset_of!(GuestRegs, rdi) == 40);
    assert!(core::mem::offset_of!(GuestRegs, r15) == 112);
    assert!(core::mem::offset_of!(RunFrame, guest_vmcb) == 120);
    assert!(core::mem::offset_of!(RunFrame, host_state) == 128);
    assert!(core::mem::offset_of!(RunFrame, guest_fx) == 136);
    assert!(core::mem::offset_of!(RunFrame, host_fx) == 144);
};

/// Every port and every MSR exits (the virtual PCI bus answers 0xCF8–0xCFF; no guest reaches
/// EFER, VM_CR, VM_HSAVE_PA or any other host MSR). Read only by the CPU, shared by every vCPU.
/// The kernel image is identity-mapped and loaded in one piece, so these are physically
/// contiguous at their own addresses.
static IOPM: IoPermissionMap = IoPermissionMap::intercept_all();
static MSRPM: MsrPermissionMap = MsrPermissionMap::intercept_all();

/// SVM enabled on this CPU.
pub struct Svm {
    features: SvmFeatures,
    retired: ExitCounts,
}

impl Svm {
    pub fn features(&self) -> &SvmFeatures {
        &self.features
    }
}

fn read_cpuid() -> CpuidSvm {
    let ext_max_leaf = x86::cpuid::cpuid!(0x8000_0000).eax;
    let ext = |leaf: u32| {
        if ext_max_leaf >= leaf {
            x86::cpuid::cpuid!(leaf)
        } else {
            x86::cpuid::CpuIdResult {
                eax: 0,
                ebx: 0,
                ecx: 0,
                edx: 0,
            }
        }
    };
    let ext1_ecx = ext(0x8000_0001).ecx;
    let svm = ext(0x8000_000A);
    let vm_cr = if ext1_ecx & (1 << 2) != 0 {
        // SAFETY: VM_CR exists on every CPU that reports SVM (APM vol. 2 §15.30.1).
        unsafe { x86::msr::rdmsr(MSR_VM_CR) }
    } else {
        0
    };
    CpuidSvm {
        ext_max_leaf,
        ext1_ecx,
        ext8_eax: ext(0x8000_0008).eax,
        svm_ebx: svm.ebx,
        svm_edx: svm.edx,
        vm_cr,
    }
}

fn phys_of<T>(r: &T) -> u64 {
    r as *const T as u64
}

impl Virtualization for Svm {
    type Vcpu = SvmVcpu;

    fn name(&self) -> &'static str {
        "AMD SVM"
    }

    fn enable_on_this_cpu(frames: &mut dyn FrameAllocator) -> Result<Svm, VcpuError> {
        let features = SvmFeatures::detect(&read_cpuid())
            .map_err(|e| VcpuError::Unsupported(e.to_string()))?;
        if !percpu::installed() {
            // While a guest runs the host's IF is set (vmrun.s), so every interrupt the CPU
            // can receive ends the guest with an INTR exit and stays pending until the exit loop
            // takes it: the local APIC must take it then, and the legacy PICs (the PIT's IRQ 0
            // on vector 8, never acknowledged) must be quiet.
            crate::arch::lapic::enable(frames)
                .map_err(|e| VcpuError::Unsupported(format!("the local APIC: {e}")))?;
            let host_save_area = frames.alloc_frame().ok_or(VcpuError::OutOfFrames)?;
            let Some(host_state) = frames.alloc_frame() else {
                frames.free_frame(host_save_area);
                return Err(VcpuError::OutOfFrames);
            };
            // SAFETY: SVM is present and not disabled (checked above); setting EFER.SVME
            // and pointing VM_HSAVE_PA at a zeroed frame we own is the enable sequence of
            // APM vol. 2 §15.4 and changes nothing else of the host's state.
            unsafe {
                x86::msr::wrmsr(MSR_EFER, x86::msr::rdmsr(MSR_EFER) | cr::EFER_SVME);
                x86::msr::wrmsr(MSR_VM_HSAVE_PA, host_save_area.as_u64());
            }
            let installed = percpu::install(PerCpu {
                apic_id: percpu::this_apic_id(),
                host_save_area,
                host_state,
                host_fx: FxArea::initial(),
                current_vcpu: None,
                asids: AsidAllocator::new(features.nasid, features.flush_by_asid),
            });
            if !installed {
                frames.free_frame(host_save_area);
                frames.free_frame(host_state);
                return Err(VcpuError::Unsupported(format!(
                    "APIC ID {} has no per-CPU slot (at most {})",
                    percpu::this_apic_id(),
                    percpu::MAX_CPUS
                )));
            }
        }
        Ok(Svm {
            features,
            retired: ExitCounts::default(),
        })
    }

    fn create_vcpu(
        &mut self,
        npt_root: PhysAddr,
        entry: &EntryState,
        frames: &mut dyn FrameAllocator,
    ) -> Result<SvmVcpu, VcpuError> {
        let vmcb = frames.alloc_frame().ok_or(VcpuError::OutOfFrames)?;
        let mut vcpu = SvmVcpu {
            vmcb,
            guest_fx: Box::new(FxArea::initial()),
            regs: GuestRegs {
                rdi: entry.rdi,
                ..GuestRegs::default()
            },
            asid: None,
            counts: ExitCounts::default(),
            features: self.features,
            pending: None,
            dead: None,
            last_cpu: None,
        };
        let v = vcpu.vmcb_mut();
        *v = Vmcb::zeroed();
        // The ASID is assigned on each entry (per CPU, per generation).
        v.set_controls(phys_of(&IOPM), phys_of(&MSRPM), 0, npt_root.as_u64());
        v.load_long_mode(&LongModeEntry {
            rip: entry.rip,
            rsp: entry.rsp,
            cr3: entry.cr3,
            gdt_base: entry.gdt_base,
            gdt_limit: entry.gdt_limit,
        });
        Ok(vcpu)
    }

    fn destroy_vcpu(&mut self, vcpu: SvmVcpu, frames: &mut dyn FrameAllocator) {
        self.retired.add(&vcpu.counts);
        percpu::with_this_cpu(|cpu| {
            if cpu.current_vcpu == Some(vcpu.vmcb) {
                cpu.current_vcpu = None;
            }
        });
        // Its ASID is never handed out again in this generation, and is flushed when reused.
        frames.free_frame(vcpu.vmcb);
    }

    fn retired_exit_counts(&self) -> &ExitCounts {
        &self.retired
    }
}

/// What `complete` moves past.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pending {
    /// IOIO: the CPU gave the next RIP in EXITINFO2.
    Io {
        next_rip: u64,
        size: u8,
        write: bool,
    },
    /// An instruction whose length comes from NRIP or the decoder.
    Instruction(Instruction),
}

pub struct SvmVcpu {
    vmcb: PhysAddr,
    guest_fx: Box<FxArea>,
    regs: GuestRegs,
    asid: Option<AsidTag>,
    counts: ExitCounts,
    features: SvmFeatures,
    pending: Option<Pending>,
    /// Why this vCPU can no longer run.
    dead: Option<String>,
    /// APIC ID of the CPU this vCPU last entered on.
    last_cpu: Option<u32>,
}

fn low_bytes(value: u64, size: u8) -> u64 {
    match size {
        1 => value & 0xFF,
        2 => value & 0xFFFF,
        _ => value & 0xFFFF_FFFF,
    }
}

impl SvmVcpu {
    pub fn vmcb(&self) -> &Vmcb {
        // SAFETY: `vmcb` is a page-aligned, identity-mapped frame this vCPU allocated and alone
        // uses; a Vmcb is one page of plain integers.
        unsafe { &*(self.vmcb.as_u64() as *const Vmcb) }
    }

    /// The VMCB itself, for diagnostics and for tests that break the guest state on purpose
    /// (the checks before VMRUN still apply).
    pub fn vmcb_mut(&mut self) -> &mut Vmcb {
        // SAFETY: as in `vmcb`, and `&mut self` makes the access exclusive.
        unsafe { &mut *(self.vmcb.as_u64() as *mut Vmcb) }
    }

    fn limits(&self) -> CheckLimits {
        CheckLimits {
            phys_addr_bits: self.features.phys_addr_bits,
            nasid: self.features.nasid,
            flush_by_asid: self.features.flush_by_asid,
        }
    }

    fn end(&mut self, reason: String) -> Exit {
        self.dead = Some(reason.clone());
        Exit::Invalid { reason }
    }

    /// One VMRUN and the exit it ends with, as the CPU reported it.
    fn enter(&mut self) -> Result<SvmExit, String> {
        // An ASID is only meaningful on the CPU that handed it out: on another CPU the same
        // number may belong to another vCPU, so a vCPU that moved gets a fresh (flushed) one.
        let here = percpu::this_apic_id();
        if self.last_cpu != Some(here) {
            self.asid = None;
            self.last_cpu = Some(here);
        }
        let asid = &mut self.asid;
        let assigned = percpu::with_this_cpu(|cpu| cpu.asids.assign(asid))
            .ok_or_else(|| String::from("SVM is not enabled on this CPU"))?;
        let limits = self.limits();
        let regs_rax = self.regs.rax;
        let v = self.vmcb_mut();
        (v.control.guest_asid, v.control.tlb_control) = assigned;
        check_guest_state(v, &limits)
            .map_err(|e| format!("the guest state fails a VMRUN check: {e}"))?;
        v.save.rax = regs_rax;
        let mut frame = RunFrame {
            regs: self.regs,
            guest_vmcb: self.vmcb.as_u64(),
            host_state: 0,
            guest_fx: &mut *self.guest_fx,
            host_fx: core::ptr::null_mut(),
        };
        let vmcb = self.vmcb;
        percpu::with_this_cpu(|cpu| {
            cpu.current_vcpu = Some(vmcb);
            frame.host_state = cpu.host_state.as_u64();
            frame.host_fx = &mut cpu.host_fx;
            // SAFETY: SVM is enabled on this CPU (its per-CPU state exists); the frame points
            // at this vCPU's checked VMCB, the CPU's host-state page and two FXSAVE areas that
            // stay alive and unaliased for the call; vmrun.s saves and restores every register
            // the host relies on.
            unsafe { lazaret_svm_run(&mut frame) };
            cpu.asids.entered(assigned.1);
        })
        .ok_or_else(|| String::from("SVM is not enabled on this CPU"))?;
        self.regs = frame.regs;
        self.regs.rax = self.vmcb().save.rax;
        let v = self.vmcb_mut();
        v.control.tlb_control = tlb_control::DO_NOTHING;
        v.control.event_inj = 0;
        // An event whose delivery the exit interrupted is delivered again on the next entry.
        if let Some(event) = sanitize_exit_int_info(v.control.exit_int_info) {
            v.control.event_inj = event.encode();
        }
        Ok(SvmExit::decode(
            v.control.exit_code,
            v.control.exit_info1,
            v.control.exit_info2,
        ))
    }

    /// Host-physical address of guest-virtual `gva`, through the guest's tables (when it
    /// pages) and the nested tables. `None` where either has no mapping, or where the nested
    /// leaf is uncached (a BAR: reading device memory as instruction bytes or page tables
    /// could have side effects).
    fn translate(&self, gva: u64) -> Option<u64> {
        let save = &self.vmcb().save;
        let n_cr3 = self.vmcb().control.n_cr3;
        let host_ram = |t: Translation| (!t.uncached).then_some(t.addr);
        let nested = |gpa: u64| {
            walk::translate(n_cr3, gpa, &mut |pa| {
                Some(DIRECT_MAP.read_u64(PhysAddr(pa)))
            })
            .and_then(host_ram)
        };
        let gpa = if save.cr0 & cr::CR0_PG != 0 {
            let mut guest_table = |gpa: u64| Some(DIRECT_MAP.read_u64(PhysAddr(nested(gpa)?)));
            walk::translate(save.cr3, gva, &mut guest_table)?.addr
        } else {
            gva
        };
        nested(gpa)
    }

    /// Up to 15 bytes at the guest's RIP, fewer where a page is not mapped.
    fn fetch_instruction(&self) -> ([u8; 15], usize) {
        let save = &self.vmcb().save;
        let linear = save.rip.wrapping_add(save.cs.base);
        let mut bytes = [0u8; 15];
        let mut n = 0;
        let mut page: Option<(u64, u64)> = None;
        while n < bytes.len() {
            let va = linear.wrapping_add(n as u64);
            let base = match page {
                Some((vpage, hpage)) if vpage == va & !0xFFF => hpage,
                _ => match self.translate(va & !0xFFF) {
                    Some(h) => {
                        page = Some((va & !0xFFF, h));
                        h
                    }
                    None => break,
                },
            };
            let mut b = [0u8];
            DIRECT_MAP.read_bytes(PhysAddr(base + (va & 0xFFF)), &mut b);
            bytes[n] = b[0];
            n += 1;
        }
        (bytes, n)
    }

    fn next_rip(&self, expected: Instruction) -> Result<u64, VcpuError> {
        let v = self.vmcb();
        if self.features.nrip_save && v.control.next_rip != 0 {
            return Ok(v.control.next_rip);
        }
        let (bytes, n) = self.fetch_instruction();
        let decoded = decode_length(&bytes[..n])
            .map_err(|e| VcpuError::CannotComplete(format!("at rip {:#x}: {e}", v.save.rip)))?;
        let same = match (decoded.instruction, expected) {
            (Instruction::Io { .. }, Instruction::Io { .. }) => true,
            (a, b) => a == b,
        };
        if !same {
            return Err(VcpuError::CannotComplete(format!(
                "the bytes at rip {:#x} decode as {:?}, not the {:?} that exited",
                v.save.rip, decoded.instruction, expected
            )));
        }
        Ok(v.save.rip.wrapping_add(u64::from(decoded.len)))
    }
}

impl Vcpu for SvmVcpu {
    fn run(&mut self) -> Exit {
        if let Some(reason) = &self.dead {
            return Exit::Invalid {
                reason: format!("the vCPU was ended: {reason}"),
            };
        }
        self.pending = None;
        let exit = match self.enter() {
            Err(reason) => self.end(reason),
            Ok(e) => self.translate_exit(e),
        };
        self.counts.record(exit.kind());
        exit
    }

    fn regs(&self) -> &GuestRegs {
        &self.regs
    }

    fn regs_mut(&mut self) -> &mut GuestRegs {
        &mut self.regs
    }

    fn rip(&self) -> u64 {
        self.vmcb().save.rip
    }

    fn rsp(&self) -> u64 {
        self.vmcb().save.rsp
    }

    fn complete(&mut self, in_value: Option<u32>) -> Result<(), VcpuError> {
        let pending = self.pending.ok_or_else(|| {
            VcpuError::CannotComplete(String::from("the last exit has no instruction to complete"))
        })?;
        let next = match pending {
            Pending::Io {
                next_rip,
                size,
                write,
            } => {
                match (write, in_value) {
                    (false, Some(value)) => self.regs.rax = merge_in(self.regs.rax, size, value),
                    (false, None) => {
                        return Err(VcpuError::CannotComplete(String::from(
                            "an IN needs its value",
                        )))
                    }
                    (true, Some(_)) => {
                        return Err(VcpuError::CannotComplete(String::from(
                            "an OUT takes no value",
                        )))
                    }
                    (true, None) => {}
                }
                next_rip
            }
            Pending::Instruction(i) => {
                if in_value.is_some() {
                    return Err(VcpuError::CannotComplete(String::from(
                        "only an IN takes a value",
                    )));
                }
                self.next_rip(i)?
            }
        };
        self.pending = None;
        let v = self.vmcb_mut();
        v.save.rip = next;
        // The instruction an STI or MOV SS shadowed is done: the shadow ends with it (KVM's
        // skip_emulated_instruction does the same). Left set, `sti; hlt` would refuse every
        // interrupt offered after the HLT.
        v.control.clear_interrupt_shadow();
        Ok(())
    }

    fn inject_exception(&mut self, vector: u8, error_code: u32) -> Result<(), VcpuError> {
        let event =
            EventInj::exception(vector, error_code).ok_or(VcpuError::BadException(vector))?;
        self.pending = None;
        self.vmcb_mut().control.event_inj = event.encode();
        Ok(())
    }

    fn interrupts_enabled(&self) -> bool {
        delivery::interrupts_enabled(self.vmcb())
    }

    fn inject_interrupt(&mut self, vector: u8) -> Result<bool, VcpuError> {
        let event = EventInj::interrupt(vector).ok_or(VcpuError::BadInterrupt(vector))?;
        Ok(delivery::offer_interrupt(self.vmcb_mut(), event))
    }

    fn exit_counts(&self) -> &ExitCounts {
        &self.counts
    }
}

impl SvmVcpu {
    fn translate_exit(&mut self, exit: SvmExit) -> Exit {
        if exit == SvmExit::Vintr {
            delivery::close_window(&mut self.vmcb_mut().control);
        }
        match classify(exit, &self.regs) {
            Classified::Handled { exit, pending } => {
                self.pending = pending;
                if exit == Exit::Shutdown {
                    self.dead = Some(String::from("the guest shut down (triple fault)"));
                }
                exit
            }
            Classified::Ends(reason) => self.end(reason),
        }
    }
}

/// An SVM exit as the seam reports it.
#[derive(Debug, PartialEq, Eq)]
enum Classified {
    /// Reported to the caller; `pending` is what `complete` will move past.
    Handled {
        exit: Exit,
        pending: Option<Pending>,
    },
    /// The guest cannot go on.
    Ends(String),
}

/// Turns an exit into the seam's terms (no hardware touched: host-tested).
fn classify(exit: SvmExit, r: &GuestRegs) -> Classified {
    let handled = |exit, pending| Classified::Handled { exit, pending };
    let instruction = |i| Some(Pending::Instruction(i));
    match exit {
        SvmExit::Cpuid => handled(
            Exit::Cpuid {
                leaf: r.rax as u32,
                subleaf: r.rcx as u32,
            },
            instruction(Instruction::Cpuid),
        ),
        SvmExit::Hlt => handled(Exit::Hlt, instruction(Instruction::Hlt)),
        SvmExit::Io(io) => handled(
            Exit::Io {
                port: io.port,
                size: io.size,
                write: io.write,
                value: if io.write {
                    low_bytes(r.rax, io.size) as u32
                } else {
                    0
                },
            },
            Some(Pending::Io {
                next_rip: io.next_rip,
                size: io.size,
                write: io.write,
            }),
        ),
        SvmExit::BadIo(e) => Classified::Ends(format!("{e}")),
        SvmExit::Msr { write: false } => handled(
            Exit::MsrRead { msr: r.rcx as u32 },
            instruction(Instruction::Rdmsr),
        ),
        SvmExit::Msr { write: true } => handled(
            Exit::MsrWrite {
                msr: r.rcx as u32,
                value: (r.rdx << 32) | (r.rax & 0xFFFF_FFFF),
            },
            instruction(Instruction::Wrmsr),
        ),
        SvmExit::Vmmcall => handled(Exit::Hypercall, instruction(Instruction::Vmmcall)),
        SvmExit::Npf(n) => handled(
            Exit::NestedPageFault {
                gpa: n.gpa,
                write: n.write,
                fetch: n.fetch,
                present: n.present,
            },
            None,
        ),
        SvmExit::Shutdown => handled(Exit::Shutdown, None),
        SvmExit::Intr => handled(Exit::Interrupt, None),
        SvmExit::Nmi => handled(Exit::Nmi, None),
        // Nothing to complete: the guest had not yet taken the (virtual) interrupt.
        SvmExit::Vintr => handled(Exit::InterruptWindow, None),
        SvmExit::Exception {
            vector, error_code, ..
        } => handled(
            Exit::Exception {
                vector,
                error: error_code,
            },
            None,
        ),
        SvmExit::Cr0SelectiveWrite => Classified::Ends(String::from(
            "the guest changed CR0 bits other than TS and MP, which Lazaret does not emulate",
        )),
        SvmExit::Invalid => Classified::Ends(String::from(
            "VMRUN refused the guest state (VMEXIT_INVALID)",
        )),
        SvmExit::Other(code) => Classified::Ends(format!("unexpected exit code {code:#x}")),
    }
}

/// RAX after an IN of `size` bytes returned `value`: the low bytes change; a 4-byte IN writes
/// EAX, which clears RAX's upper half (64-bit mode).
fn merge_in(rax: u64, size: u8, value: u32) -> u64 {
    if size == 4 {
        return u64::from(value);
    }
    let mask = low_bytes(u64::MAX, size);
    (rax & !mask) | (u64::from(value) & mask)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lazaret_svm::exit::IoExit;
    use lazaret_svm::features::SvmFeatures;

    fn regs() -> GuestRegs {
        GuestRegs {
            rax: 0x1111_2222_3333_4444,
            rcx: 0xFFFF_FFFF_C000_0080,
            rdx: 0x5555_6666_7777_8888,
            ..GuestRegs::default()
        }
    }

    #[test]
    fn exits_take_their_operands_from_the_architectural_registers() {
        let r = regs();
        assert_eq!(
            classify(SvmExit::Cpuid, &r),
            Classified::Handled {
                exit: Exit::Cpuid {
                    leaf: 0x3333_4444,
                    subleaf: 0xC000_0080
                },
                pending: Some(Pending::Instruction(Instruction::Cpuid))
            }
        );
        // WRMSR: ECX, EDX:EAX (upper halves of RAX and RDX ignored).
        assert!(matches!(
            classify(SvmExit::Msr { write: true }, &r),
            Classified::Handled {
                exit: Exit::MsrWrite {
                    msr: 0xC000_0080,
                    value: 0x7777_8888_3333_4444
                },
                ..
            }
        ));
        assert!(matches!(
            classify(SvmExit::Msr { write: false }, &r),
            Classified::Handled {
                exit: Exit::MsrRead { msr: 0xC000_0080 },
                ..
            }
        ));
        // OUT of 1 and 2 bytes reports only AL / AX.
        for (size, value) in [(1, 0x44), (2, 0x4444), (4, 0x3333_4444)] {
            let io = IoExit {
                port: 0x80,
                size,
                write: true,
                next_rip: 0x1234,
            };
            assert_eq!(
                classify(SvmExit::Io(io), &r),
                Classified::Handled {
                    exit: Exit::Io {
                        port: 0x80,
                        size,
                        write: true,
                        value
                    },
                    pending: Some(Pending::Io {
                        next_rip: 0x1234,
                        size,
                        write: true
                    })
                }
            );
        }
        assert!(
            matches!(classify(SvmExit::Invalid, &r), Classified::Ends(s) if s.contains("VMEXIT_INVALID"))
        );
        assert!(
            matches!(classify(SvmExit::Cr0SelectiveWrite, &r), Classified::Ends(s) if s.contains("CR0"))
        );
        assert!(
            matches!(classify(SvmExit::Other(0x80), &r), Classified::Ends(s) if s.contains("0x80"))
        );
        assert_eq!(
            classify(SvmExit::Vintr, &r),
            Classified::Handled {
                exit: Exit::InterruptWindow,
                pending: None
            }
        );
        assert_eq!(
            classify(SvmExit::Intr, &r),
            Classified::Handled {
                exit: Exit::Interrupt,
                pending: None
            }
        );
    }

    /// A vCPU whose VMCB is a heap page: on the host its address stands in for the
    /// identity-mapped frame the backend dereferences. No VMRUN: exits are fed to
    /// `translate_exit` as the CPU would report them.
    struct HostVcpu(SvmVcpu);

    impl HostVcpu {
        fn new(rflags: u64) -> HostVcpu {
            let mut page = Box::new(Vmcb::zeroed());
            page.set_controls(0x1000, 0x4000, 1, 0x8000);
            page.load_long_mode(&LongModeEntry {
                rip: 0x20_0000,
                rsp: 0x10_0000,
                cr3: 0x1_0000,
                gdt_base: 0x3000,
                gdt_limit: 23,
            });
            page.save.rflags = rflags;
            HostVcpu(SvmVcpu {
                vmcb: PhysAddr(Box::into_raw(page) as u64),
                guest_fx: Box::new(FxArea::initial()),
                regs: GuestRegs::default(),
                asid: None,
                counts: ExitCounts::default(),
                features: SvmFeatures {
                    nasid: 16,
                    nested_paging: true,
                    // NRIP save: `complete` takes the next RIP from the VMCB, no fetch.
                    nrip_save: true,
                    flush_by_asid: true,
                    phys_addr_bits: 48,
                },
                pending: None,
                dead: None,
                last_cpu: None,
            })
        }

        /// The VMCB's u64 at `offset` (APM vol. 2 tables B-1/B-2), not through its struct.
        fn raw(&self, offset: usize) -> u64 {
            assert!(offset.is_multiple_of(8) && offset < 0x1000);
            // SAFETY: the VMCB is a live 4 KiB heap page owned by this vCPU; the offset is
            // aligned and inside it.
            unsafe { *((self.0.vmcb.as_u64() as *const u8).add(offset) as *const u64) }
        }

        /// The HLT of `sti; hlt` exits with the guest still in STI's shadow.
        fn halted_in_sti_shadow(&mut self) {
            let v = self.0.vmcb_mut();
            v.control.interrupt_shadow = 1;
            v.control.next_rip = v.save.rip + 1;
            assert_eq!(self.0.translate_exit(SvmExit::Hlt), Exit::Hlt);
        }
    }

    impl Drop for HostVcpu {
        fn drop(&mut self) {
            // SAFETY: `new` leaked this box; nothing uses the page after the vCPU goes.
            drop(unsafe { Box::from_raw(self.0.vmcb.as_u64() as *mut Vmcb) });
        }
    }

    const RFLAGS_IF: u64 = 1 << 9;
    const INTERCEPT_MISC1: usize = 0x008; // the u64 at 0x008: vector 3 (0x00C) in 63:32
    const VINTR_INTERCEPT: u64 = 1 << (32 + 4);
    const VINTR: usize = 0x060;
    const V_IRQ: u64 = 1 << 8;
    const V_IGN_TPR: u64 = 1 << 20;
    const INT_STATE: usize = 0x068;
    const EVENTINJ: usize = 0x0A8;

    #[test]
    fn sti_hlt_then_an_interrupt_is_delivered_once_the_hlt_is_completed() {
        let mut g = HostVcpu::new(0x2 | RFLAGS_IF);
        g.halted_in_sti_shadow();
        g.0.complete(None).unwrap();
        assert_eq!(g.0.rip(), 0x20_0001);
        assert_eq!(g.raw(INT_STATE) & 1, 0, "the shadow ended with the HLT");
        assert!(g.0.interrupts_enabled());
        assert_eq!(g.0.inject_interrupt(0x50), Ok(true));
        assert_eq!(g.raw(EVENTINJ), 0x8000_0050, "V, type INTR, vector 0x50");
        assert_eq!(g.raw(VINTR) & V_IRQ, 0);
        assert_eq!(g.raw(INTERCEPT_MISC1) & VINTR_INTERCEPT, 0);
    }

    #[test]
    fn the_shadow_refuses_an_interrupt_before_the_hlt_is_completed() {
        let mut g = HostVcpu::new(0x2 | RFLAGS_IF);
        g.halted_in_sti_shadow();
        assert_eq!(g.0.inject_interrupt(0x50), Ok(false));
        assert_eq!(g.raw(EVENTINJ), 0);
        assert_eq!(g.raw(VINTR) & V_IRQ, V_IRQ, "a window is armed instead");
    }

    #[test]
    fn if_clear_arms_a_window_that_its_exit_disarms() {
        let mut g = HostVcpu::new(0x2);
        assert!(!g.0.interrupts_enabled());
        assert_eq!(g.0.inject_interrupt(0x50), Ok(false));
        assert_eq!(g.raw(EVENTINJ), 0, "nothing injected");
        assert_eq!(g.raw(VINTR) & (V_IRQ | V_IGN_TPR), V_IRQ | V_IGN_TPR);
        assert_eq!(g.raw(INTERCEPT_MISC1) & VINTR_INTERCEPT, VINTR_INTERCEPT);
        // The guest executes STI; the CPU exits with code 0x64 before taking V_IRQ.
        g.0.vmcb_mut().save.rflags |= RFLAGS_IF;
        let exit = SvmExit::decode(0x64, 0, 0);
        assert_eq!(g.0.translate_exit(exit), Exit::InterruptWindow);
        assert_eq!(g.raw(VINTR) & (V_IRQ | V_IGN_TPR), 0, "disarmed");
        assert_eq!(g.raw(INTERCEPT_MISC1) & VINTR_INTERCEPT, 0);
        assert_eq!(g.raw(VINTR) & (1 << 24), 1 << 24, "V_INTR_MASKING stays");
        assert!(g.0.interrupts_enabled());
        assert_eq!(g.0.inject_interrupt(0x50), Ok(true));
        assert_eq!(g.raw(EVENTINJ), 0x8000_0050);
    }

    #[test]
    fn a_pending_reinjection_is_never_overwritten() {
        let mut g = HostVcpu::new(0x2 | RFLAGS_IF);
        // What `enter` leaves after an exit interrupted the delivery of vector 0x30.
        let reinjection = sanitize_exit_int_info(0x8000_0030).unwrap().encode();
        g.0.vmcb_mut().control.event_inj = reinjection;
        assert_eq!(g.0.inject_interrupt(0x50), Ok(false));
        assert_eq!(g.raw(EVENTINJ), 0x8000_0030);
        assert_eq!(g.raw(VINTR) & V_IRQ, V_IRQ);
    }

    #[test]
    fn exception_vectors_are_not_interrupts() {
        let mut g = HostVcpu::new(0x2 | RFLAGS_IF);
        assert_eq!(g.0.inject_interrupt(31), Err(VcpuError::BadInterrupt(31)));
        assert_eq!(g.0.inject_interrupt(0), Err(VcpuError::BadInterrupt(0)));
        assert_eq!((g.raw(EVENTINJ), g.raw(VINTR) & V_IRQ), (0, 0));
        assert_eq!(g.0.inject_interrupt(32), Ok(true));
    }

    #[test]
    fn an_in_changes_only_its_bytes_of_rax() {
        let rax = 0x1111_2222_3333_4444;
        assert_eq!(merge_in(rax, 1, 0xABCD_EF99), 0x1111_2222_3333_4499);
        assert_eq!(merge_in(rax, 2, 0xABCD_EF99), 0x1111_2222_3333_EF99);
        assert_eq!(merge_in(rax, 4, 0xABCD_EF99), 0xABCD_EF99);
    }
}
