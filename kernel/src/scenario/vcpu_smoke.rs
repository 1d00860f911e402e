//! `scenario=vcpu`: the vCPU seam and the SVM backend on their own, before any guest image
//! exists. A hand-assembled guest in 2 MiB of guest memory starts in long mode per the guest
//! contract, executes CPUID, an OUT, an IN, a VMMCALL console write, keeps a pattern in XMM0/1
//! across those exits (the host clobbers XMM in between), stores what it saw, then HLTs. The
//! host checks the exit sequence, what the guest stored (read back from its memory), and the
//! exit counts. Then five vCPUs that must end cleanly while the host carries on: one writes
//! beyond its memory (a nested page fault at the right guest-physical address), one executes
//! UD2 with no IDT (a triple fault: SHUTDOWN), one clears CR0.WP (a CR0 change Lazaret
//! refuses), one gets #GP injected with no IDT to take it (SHUTDOWN again), one has EFER.SVME
//! clear (the checker's reason).
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use lazaret_types::{FrameAllocator, PhysAddr};

use lazaret_paging::PageTables;

use super::checks::Checks;
use crate::domain::{build_nested_tables, GuestMemory};
use crate::guest::memory_io;
use crate::hypervisor::Hypervisor;
use crate::mm::direct_map::DIRECT_MAP;
use crate::mm::frames::Frames;
use crate::passthrough::iommu::Inspect;
use crate::vcpu::svm::Svm;
use crate::vcpu::{EntryState, Exit, ExitKind, Vcpu, Virtualization};

const GUEST_MEMORY: u64 = 2 << 20;
const PAGE: u64 = 4096;
/// Guest-physical layout (the guest contract's, except that the code sits at 0x4000: the
/// contract's 0x200000 lies past this guest's 2 MiB).
const GDT_GPA: u64 = 0x3000;
const CODE_GPA: u64 = 0x4000;
const DATA_GPA: u64 = 0x5000;
const TEXT_GPA: u64 = 0x6000;
const ROGUE_CODE_GPA: u64 = 0x7000;
const CRASH_CODE_GPA: u64 = 0x7100;
const CR0_CODE_GPA: u64 = 0x7200;
/// Guest-virtual 2 MiB maps (one large page) to this guest-physical address, which is past the
/// guest's memory: no nested mapping exists there.
const OUTSIDE_GPA: u64 = GUEST_MEMORY;
const ROGUE_WRITE_OFFSET: u64 = 0x10;
const PAGE_TABLES_GPA: u64 = 0x10000;
const STACK_TOP_GPA: u64 = 0x10_0000;
const BOOT_INFO_GPA: u64 = 0x1000;

const HC_CONSOLE_WRITE: u64 = 1;
/// Until `lazaret-guest-abi` lands: "u64::MAX - n" errors of the guest contract.
const HC_ERROR_UNKNOWN: u64 = u64::MAX;
const HC_ERROR_BAD_ARGUMENT: u64 = u64::MAX - 1;

const XMM0_PATTERN: u64 = 0x0123_4567_89AB_CDEF;
const XMM1_PATTERN: u64 = 0xFEDC_BA98_7654_3210;
const CPUID_ANSWER: [u32; 3] = [0x617A_614C, 0x2074_6572, 0x214D_5653]; // "Laza" "ret " "SVM!"
const OUT_PORT: u16 = 0x80;
const OUT_VALUE: u32 = 0x5A;
const IN_PORT: u16 = 0x1234;
const IN_VALUE: u32 = 0xC0FF_EE11;
const TEXT: &str = "hello from the vCPU smoke guest";

/// The guest program (64-bit code at CODE_GPA).
fn guest_code() -> Vec<u8> {
    let mut c = Vec::new();
    c.extend([0x48, 0xB8]); // mov rax, XMM0_PATTERN
    c.extend(XMM0_PATTERN.to_le_bytes());
    c.extend([0x66, 0x48, 0x0F, 0x6E, 0xC0]); // movq xmm0, rax
    c.extend([0x48, 0xB8]); // mov rax, XMM1_PATTERN
    c.extend(XMM1_PATTERN.to_le_bytes());
    c.extend([0x66, 0x48, 0x0F, 0x6E, 0xC8]); // movq xmm1, rax
    c.extend([0x31, 0xC0, 0x31, 0xC9]); // xor eax, eax; xor ecx, ecx
    c.extend([0x0F, 0xA2]); // cpuid
    c.extend([0x89, 0x1C, 0x25, 0x00, 0x50, 0x00, 0x00]); // mov [0x5000], ebx
    c.extend([0x89, 0x14, 0x25, 0x04, 0x50, 0x00, 0x00]); // mov [0x5004], edx
    c.extend([0x89, 0x0C, 0x25, 0x08, 0x50, 0x00, 0x00]); // mov [0x5008], ecx
    c.extend([0xB0, OUT_VALUE as u8, 0xE6, OUT_PORT as u8]); // mov al, 0x5a; out 0x80, al
    c.extend([0x66, 0xBA]); // mov dx, IN_PORT
    c.extend(IN_PORT.to_le_bytes());
    c.push(0xED); // in eax, dx
    c.extend([0x89, 0x04, 0x25, 0x0C, 0x50, 0x00, 0x00]); // mov [0x500c], eax
    c.extend([0xB8, HC_CONSOLE_WRITE as u8, 0, 0, 0]); // mov eax, HC_CONSOLE_WRITE
    c.push(0xBF); // mov edi, TEXT_GPA
    c.extend((TEXT_GPA as u32).to_le_bytes());
    c.push(0xBE); // mov esi, len
    c.extend((TEXT.len() as u32).to_le_bytes());
    c.extend([0x0F, 0x01, 0xD9]); // vmmcall
    c.extend([0x48, 0x89, 0x04, 0x25, 0x10, 0x50, 0x00, 0x00]); // mov [0x5010], rax
    c.extend([0x66, 0x0F, 0xD6, 0x04, 0x25, 0x20, 0x50, 0x00, 0x00]); // movq [0x5020], xmm0
    c.extend([0x66, 0x0F, 0xD6, 0x0C, 0x25, 0x28, 0x50, 0x00, 0x00]); // movq [0x5028], xmm1
    c.push(0xF4); // hlt
    c
}

/// Writes a dword to guest-virtual 2 MiB + 0x10, i.e. guest-physical OUTSIDE_GPA + 0x10.
fn rogue_code() -> Vec<u8> {
    let mut c = alloc::vec![0xB8]; // mov eax, imm32
    c.extend(((GUEST_MEMORY + ROGUE_WRITE_OFFSET) as u32).to_le_bytes());
    c.extend([0xC7, 0x00, 0xAD, 0xDE, 0x00, 0x00]); // mov dword [rax], 0xdead
    c.push(0xF4); // hlt (never reached)
    c
}

/// UD2 with no IDT: #UD cannot be delivered, nor the #GP nor the #DF after it.
const CRASH_CODE: [u8; 3] = [0x0F, 0x0B, 0xF4];

/// Clears CR0.WP: a CR0 change beyond TS/MP, which Lazaret refuses (turning paging off the
/// same way would leave nested paging on QEMU 7.2).
const CR0_CODE: [u8; 13] = [
    0x0F, 0x20, 0xC0, // mov rax, cr0
    0x48, 0x25, 0xFF, 0xFF, 0xFE, 0xFF, // and rax, !(1 << 16)
    0x0F, 0x22, 0xC0, // mov cr0, rax
    0xF4, // hlt (never reached)
];

/// The smoke guest's memory (from the domain memory map) and its nested page tables (from
/// `lazaret-paging`, as every guest's). Its own page tables are written by hand in [`load`]:
/// they map one page past its memory on purpose.
struct SmokeGuest {
    memory: GuestMemory,
    npt: Option<PageTables>,
}

const GUEST_PT_FLAGS: u64 = 0x3; // present, writable

impl SmokeGuest {
    fn new(frames: &mut Frames) -> Option<SmokeGuest> {
        let mut memory = GuestMemory::allocate(frames, (GUEST_MEMORY / PAGE) as usize)?;
        match build_nested_tables(&DIRECT_MAP, frames, &memory, &[], false) {
            Ok(npt) => Some(SmokeGuest {
                memory,
                npt: Some(npt),
            }),
            Err(_) => {
                memory.free(frames);
                None
            }
        }
    }

    fn npt_root(&self) -> PhysAddr {
        self.npt.as_ref().map_or(PhysAddr(0), |t| t.root())
    }

    fn write(&self, gpa: u64, bytes: &[u8]) {
        let _ = memory_io::write(&DIRECT_MAP, &self.memory, gpa, bytes);
    }

    /// Reads `len` bytes at `gpa` if they lie inside guest memory.
    fn read(&self, gpa: u64, len: u64) -> Option<Vec<u8>> {
        let mut out = alloc::vec![0u8; usize::try_from(len).ok()?];
        memory_io::read(&DIRECT_MAP, &self.memory, gpa, &mut out).ok()?;
        Some(out)
    }

    fn read_u64(&self, gpa: u64) -> u64 {
        self.read(gpa, 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
            .unwrap_or(0)
    }

    /// GDT, guest page tables (identity map of all 2 MiB except page 0), code, text.
    fn load(&self) {
        let gdt: [u64; 3] = [0, 0x00AF_9A00_0000_FFFF, 0x00CF_9200_0000_FFFF];
        for (i, d) in gdt.iter().enumerate() {
            self.write(GDT_GPA + 8 * i as u64, &d.to_le_bytes());
        }
        let [pml4, pdpt, pd, pt] = [0, 1, 2, 3].map(|i| PAGE_TABLES_GPA + i * PAGE);
        self.write(pml4, &(pdpt | GUEST_PT_FLAGS).to_le_bytes());
        self.write(pdpt, &(pd | GUEST_PT_FLAGS).to_le_bytes());
        self.write(pd, &(pt | GUEST_PT_FLAGS).to_le_bytes());
        // PD entry 1: one 2 MiB page (PS) at the first guest-physical address past memory.
        self.write(pd + 8, &(OUTSIDE_GPA | GUEST_PT_FLAGS | 0x80).to_le_bytes());
        for i in 1..GUEST_MEMORY / PAGE {
            self.write(pt + 8 * i, &((i * PAGE) | GUEST_PT_FLAGS).to_le_bytes());
        }
        self.write(CODE_GPA, &guest_code());
        // Whatever the guest does not store stays 0xAA: a result that is merely zero memory
        // (the hypercall's 0) cannot pass unwritten, nor half-written.
        self.write(DATA_GPA, &[0xAA; 0x40]);
        self.write(TEXT_GPA, TEXT.as_bytes());
        self.write(ROGUE_CODE_GPA, &rogue_code());
        self.write(CRASH_CODE_GPA, &CRASH_CODE);
        self.write(CR0_CODE_GPA, &CR0_CODE);
    }

    fn free(mut self, frames: &mut Frames) {
        if let Some(t) = self.npt.take() {
            t.free(frames);
        }
        self.memory.free(frames);
    }
}

fn entry(rip: u64) -> EntryState {
    EntryState {
        rip,
        rsp: STACK_TOP_GPA,
        rdi: BOOT_INFO_GPA,
        cr3: PAGE_TABLES_GPA,
        gdt_base: GDT_GPA,
        gdt_limit: 23,
    }
}

/// What the host does to its own SSE state between guest exits: every XMM register the
/// guest uses is overwritten, so only the backend's save/restore can bring the guest's back.
fn clobber_xmm() {
    // SAFETY: writes only the XMM registers declared as clobbered.
    unsafe {
        core::arch::asm!(
            "pcmpeqd xmm0, xmm0",
            "pcmpeqd xmm1, xmm1",
            "pcmpeqd xmm2, xmm2",
            out("xmm0") _,
            out("xmm1") _,
            out("xmm2") _,
            options(nomem, nostack)
        )
    };
}

/// MXCSR with round-toward-zero (bits 14:13 = 11) and every exception masked: not the
/// guest's reset value (0x1F80), so a host whose SSE state was not given back shows it.
const HOST_MXCSR: u32 = 0x7F80;
const DEFAULT_MXCSR: u32 = 0x1F80;

fn set_mxcsr(value: u32) {
    // SAFETY: loads MXCSR from a valid value (no reserved bits); changes only rounding and
    // exception masks, restored by the caller.
    unsafe { core::arch::asm!("ldmxcsr [{}]", in(reg) &value, options(nostack, readonly)) };
}

fn mxcsr() -> u32 {
    let mut value = 0u32;
    // SAFETY: stores MXCSR into a local.
    unsafe { core::arch::asm!("stmxcsr [{}]", in(reg) &mut value, options(nostack)) };
    value
}

/// A short description of an exit for a RESULT sentence.
fn describe(exit: &Exit) -> String {
    match exit {
        Exit::Cpuid { leaf, subleaf } => format!("CPUID {leaf:#x}/{subleaf:#x}"),
        Exit::Io {
            port,
            size,
            write: true,
            value,
        } => format!("OUT {port:#x} ({size} byte) {value:#x}"),
        Exit::Io {
            port,
            size,
            write: false,
            ..
        } => format!("IN {port:#x} ({size} byte)"),
        Exit::Hypercall => String::from("VMMCALL"),
        Exit::Hlt => String::from("HLT"),
        Exit::Invalid { reason } => format!("invalid ({reason})"),
        Exit::NestedPageFault { gpa, write, .. } => format!(
            "a nested page fault ({} at {gpa:#x})",
            if *write { "write" } else { "read" }
        ),
        Exit::Shutdown => String::from("a shutdown (triple fault)"),
        other => format!("{:?} exit", other.kind()),
    }
}

/// Runs the guest to its HLT, answering each exit; returns the exits seen, or why it stopped.
fn drive(vcpu: &mut impl Vcpu, guest: &SmokeGuest) -> (Vec<Exit>, Option<String>) {
    let mut seen = Vec::new();
    for _ in 0..16 {
        clobber_xmm();
        let exit = vcpu.run();
        seen.push(exit.clone());
        let done = matches!(exit, Exit::Hlt);
        let outcome = match exit {
            Exit::Cpuid { .. } => {
                let r = vcpu.regs_mut();
                r.rax = 0;
                (r.rbx, r.rdx, r.rcx) = (
                    u64::from(CPUID_ANSWER[0]),
                    u64::from(CPUID_ANSWER[1]),
                    u64::from(CPUID_ANSWER[2]),
                );
                vcpu.complete(None)
            }
            Exit::Io {
                port: IN_PORT,
                write: false,
                ..
            } => vcpu.complete(Some(IN_VALUE)),
            Exit::Io { write: true, .. } => vcpu.complete(None),
            Exit::Hypercall => {
                let r = *vcpu.regs();
                let result = match r.rax {
                    HC_CONSOLE_WRITE if r.rsi <= 256 => match guest.read(r.rdi, r.rsi) {
                        Some(bytes) => {
                            log::info!("guest vcpu-smoke: {}", String::from_utf8_lossy(&bytes));
                            0
                        }
                        None => HC_ERROR_BAD_ARGUMENT,
                    },
                    HC_CONSOLE_WRITE => HC_ERROR_BAD_ARGUMENT,
                    _ => HC_ERROR_UNKNOWN,
                };
                vcpu.regs_mut().rax = result;
                vcpu.complete(None)
            }
            Exit::Hlt => vcpu.complete(None),
            other => {
                return (
                    seen,
                    Some(format!("the guest stopped with {}", describe(&other))),
                )
            }
        };
        if let Err(e) = outcome {
            return (seen, Some(format!("{e}")));
        }
        if done {
            return (seen, None);
        }
    }
    (
        seen,
        Some(String::from(
            "the guest did not reach its HLT within 16 exits",
        )),
    )
}

/// Runs a fresh vCPU from `rip` once; `judge` rates its first exit. A second run must not
/// enter the guest again (an ended vCPU reports Invalid) or, after an NPF, must fault again:
/// either way it does not get further.
fn ends_cleanly<V: Inspect>(
    svm: &mut Svm,
    hv: &mut Hypervisor<V>,
    guest: &SmokeGuest,
    checks: &mut Checks,
    rip: u64,
    name: &str,
    judge: impl FnOnce(&Exit) -> (bool, String),
) {
    match svm.create_vcpu(guest.npt_root(), &entry(rip), &mut hv.frames) {
        Ok(mut vcpu) => {
            let first = vcpu.run();
            let again = vcpu.run();
            let (pass, sentence) = judge(&first);
            let same = again == first;
            let refused = matches!(again, Exit::Invalid { .. });
            checks.check(
                name,
                pass && (same || refused),
                format_args!(
                    "{sentence}; run again it {}; the host carried on",
                    if same {
                        String::from("exited the same way")
                    } else if refused {
                        String::from("was refused, having ended")
                    } else {
                        format!("went on to {}", describe(&again))
                    }
                ),
            );
            svm.destroy_vcpu(vcpu, &mut hv.frames);
        }
        Err(e) => {
            checks.check(
                name,
                false,
                format_args!("the vCPU could not be created: {e}"),
            );
        }
    }
}

pub fn run<V: Inspect>(hv: &mut Hypervisor<V>, checks: &mut Checks) {
    let frames_before = hv.frames.frames_in_use();
    let mut svm = match Svm::enable_on_this_cpu(&mut hv.frames) {
        Ok(svm) => svm,
        Err(e) => {
            checks.check(
                "vcpu-enable",
                false,
                format_args!("SVM could not be enabled: {e}"),
            );
            return;
        }
    };
    let f = *svm.features();
    checks.check(
        "vcpu-enable",
        true,
        format_args!(
            "AMD SVM is on with nested paging, {} ASIDs, NRIP save {}",
            f.nasid,
            if f.nrip_save {
                "present"
            } else {
                "absent (lengths decoded)"
            }
        ),
    );
    // Frames after enable stay with the CPU (host save area, host state page).
    let frames_enabled = hv.frames.frames_in_use();
    let _ = frames_before;

    let Some(guest) = SmokeGuest::new(&mut hv.frames) else {
        checks.check(
            "vcpu-guest",
            false,
            format_args!("no frames for 2 MiB of guest memory"),
        );
        return;
    };
    guest.load();
    let mut vcpu = match svm.create_vcpu(guest.npt_root(), &entry(CODE_GPA), &mut hv.frames) {
        Ok(v) => v,
        Err(e) => {
            checks.check(
                "vcpu-create",
                false,
                format_args!("the vCPU could not be created: {e}"),
            );
            guest.free(&mut hv.frames);
            return;
        }
    };
    set_mxcsr(HOST_MXCSR);
    let (seen, stopped) = drive(&mut vcpu, &guest);
    let host_mxcsr = mxcsr();
    set_mxcsr(DEFAULT_MXCSR);
    let expected = [
        Exit::Cpuid {
            leaf: 0,
            subleaf: 0,
        },
        Exit::Io {
            port: OUT_PORT,
            size: 1,
            write: true,
            value: OUT_VALUE,
        },
        Exit::Io {
            port: IN_PORT,
            size: 4,
            write: false,
            value: 0,
        },
        Exit::Hypercall,
        Exit::Hlt,
    ];
    let sequence: Vec<String> = seen.iter().map(describe).collect();
    checks.check(
        "vcpu-exits",
        stopped.is_none() && seen == expected,
        format_args!(
            "the guest exited with {}{}",
            sequence.join(", "),
            stopped.map(|s| format!("; {s}")).unwrap_or_default()
        ),
    );
    let stored = |off: u64| guest.read_u64(DATA_GPA + off);
    let cpuid_seen = [stored(0) as u32, (stored(0) >> 32) as u32, stored(8) as u32];
    let in_seen = (stored(8) >> 32) as u32;
    checks.check(
        "vcpu-guest-memory",
        cpuid_seen == CPUID_ANSWER && in_seen == IN_VALUE && stored(0x10) == 0,
        format_args!(
            "the guest stored CPUID {:#x} {:#x} {:#x} (answered {:#x} {:#x} {:#x}), IN {in_seen:#x} (answered {IN_VALUE:#x}), console result {:#x}",
            cpuid_seen[0], cpuid_seen[1], cpuid_seen[2],
            CPUID_ANSWER[0], CPUID_ANSWER[1], CPUID_ANSWER[2],
            stored(0x10)
        ),
    );
    checks.check(
        "vcpu-xmm",
        stored(0x20) == XMM0_PATTERN && stored(0x28) == XMM1_PATTERN,
        format_args!(
            "after four exits with the host clobbering XMM, the guest's XMM0 held {:#x} (set {XMM0_PATTERN:#x}) and XMM1 {:#x} (set {XMM1_PATTERN:#x})",
            stored(0x20),
            stored(0x28)
        ),
    );
    checks.check(
        "vcpu-host-sse",
        host_mxcsr == HOST_MXCSR,
        format_args!(
            "after five guest entries the host's MXCSR is {host_mxcsr:#x} (set {HOST_MXCSR:#x}; the guest's is {DEFAULT_MXCSR:#x})"
        ),
    );
    let counts = *vcpu.exit_counts();
    let counts_ok = counts.get(ExitKind::Cpuid) == 1
        && counts.get(ExitKind::Io) == 2
        && counts.get(ExitKind::Hypercall) == 1
        && counts.get(ExitKind::Hlt) == 1
        && counts.total() == 5;
    checks.check(
        "vcpu-exit-counts",
        counts_ok,
        format_args!("the vCPU counted {counts} (expected cpuid 1, io 2, hypercall 1, hlt 1)"),
    );
    let end = CODE_GPA + guest_code().len() as u64;
    checks.check(
        "vcpu-rip",
        vcpu.rip() == end,
        format_args!(
            "after its HLT the guest's RIP is {:#x}, the end of its code is {end:#x}",
            vcpu.rip()
        ),
    );
    svm.destroy_vcpu(vcpu, &mut hv.frames);

    ends_cleanly(
        &mut svm,
        hv,
        &guest,
        checks,
        ROGUE_CODE_GPA,
        "vcpu-npf",
        |first| {
            let expected = Exit::NestedPageFault {
                gpa: OUTSIDE_GPA + ROGUE_WRITE_OFFSET,
                write: true,
                fetch: false,
                present: false,
            };
            (
                *first == expected,
                format!(
                    "a write to guest-physical {:#x}, past the guest's memory, ended with {}",
                    OUTSIDE_GPA + ROGUE_WRITE_OFFSET,
                    describe(first)
                ),
            )
        },
    );
    ends_cleanly(
        &mut svm,
        hv,
        &guest,
        checks,
        CRASH_CODE_GPA,
        "vcpu-shutdown",
        |first| {
            (
                *first == Exit::Shutdown,
                format!("UD2 with no IDT ended with {}", describe(first)),
            )
        },
    );
    ends_cleanly(
        &mut svm,
        hv,
        &guest,
        checks,
        CR0_CODE_GPA,
        "vcpu-cr0",
        |first| {
            (
                matches!(first, Exit::Invalid { reason } if reason.contains("CR0")),
                format!("clearing CR0.WP ended with {}", describe(first)),
            )
        },
    );

    // An exception injected at the guest's first exit: with no IDT it cannot be delivered, so
    // a guest that really got it triple-faults (a malformed EVENTINJ would be VMEXIT_INVALID).
    match svm.create_vcpu(guest.npt_root(), &entry(CODE_GPA), &mut hv.frames) {
        Ok(mut vcpu) => {
            let first = vcpu.run();
            let injected = vcpu.inject_exception(13, 0);
            let then = vcpu.run();
            checks.check(
                "vcpu-inject",
                matches!(first, Exit::Cpuid { .. }) && injected.is_ok() && then == Exit::Shutdown,
                format_args!(
                    "at the guest's first exit ({}) #GP was {}; the guest, which has no IDT, then ended with {}",
                    describe(&first),
                    match &injected {
                        Ok(()) => String::from("injected"),
                        Err(e) => format!("refused: {e}"),
                    },
                    describe(&then)
                ),
            );
            svm.destroy_vcpu(vcpu, &mut hv.frames);
        }
        Err(e) => {
            checks.check(
                "vcpu-inject",
                false,
                format_args!("the vCPU could not be created: {e}"),
            );
        }
    }

    // A guest whose state VMRUN would refuse: the checker names the reason, the host goes on.
    match svm.create_vcpu(guest.npt_root(), &entry(CODE_GPA), &mut hv.frames) {
        Ok(mut broken) => {
            broken.vmcb_mut().save.efer &= !lazaret_svm::vmcb::cr::EFER_SVME;
            let first = broken.run();
            let again = broken.run();
            let refused = matches!(&first, Exit::Invalid { reason } if reason.contains("EFER.SVME"))
                && matches!(again, Exit::Invalid { .. });
            checks.check(
                "vcpu-bad-state",
                refused,
                format_args!(
                    "a vCPU with EFER.SVME clear ended with {}; the host carried on",
                    describe(&first)
                ),
            );
            svm.destroy_vcpu(broken, &mut hv.frames);
        }
        Err(e) => {
            checks.check(
                "vcpu-bad-state",
                false,
                format_args!("the vCPU could not be created: {e}"),
            );
        }
    }
    guest.free(&mut hv.frames);
    let left = hv.frames.frames_in_use().abs_diff(frames_enabled);
    checks.check(
        "vcpu-frames",
        left == 0,
        format_args!(
            "destroying the vCPUs and the guest left {left} frame(s) in use; SVM retired {}",
            svm.retired_exit_counts()
        ),
    );
}
