//! The vCPU seam (design.md §10): vendor-neutral, like the IOMMU seam. A [`Virtualization`]
//! backend is enabled once per CPU and creates [`Vcpu`]s for a domain from its nested page
//! table root and the guest contract's long-mode [`EntryState`]; [`Vcpu::run`] returns the
//! next [`Exit`] Lazaret must handle. SVM implements it ([`svm`]); VMX slots in beside it
//! without changing callers: nothing here names a vendor's bits.
//!
//! The caller handles an exit by reading or writing [`GuestRegs`] and then either
//! [`Vcpu::complete`]s the exiting instruction (RIP moves past it, an IN gets its value) or
//! [`Vcpu::inject_exception`]s. An exit it does not complete runs the same instruction again.
//!
//! External interrupts for the guest go through [`Vcpu::inject_interrupt`]: delivered on the
//! next entry when the guest can take one, otherwise an interrupt window is armed and a later
//! [`Vcpu::run`] returns [`Exit::InterruptWindow`] when it can (issue 11 part 4).
use alloc::string::String;
use core::fmt;

use lazaret_types::{FrameAllocator, PhysAddr};

pub mod svm;
pub mod walk;

/// The guest contract's 64-bit entry state (`briefs/guest-contract.md`, "Entry state"):
/// everything else (CR0/CR4/EFER, selectors, RFLAGS) is fixed by the contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryState {
    pub rip: u64,
    pub rsp: u64,
    pub rdi: u64,
    pub cr3: u64,
    pub gdt_base: u64,
    pub gdt_limit: u16,
}

/// The guest's general-purpose registers other than RSP (which lives with RIP in the
/// backend's state: [`Vcpu::rip`]). `repr(C)`: the VMRUN assembly reads and writes it at fixed
/// offsets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct GuestRegs {
    pub rax: u64,
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rbp: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
}

/// An exit Lazaret must handle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exit {
    /// CPUID: answer in RAX/RBX/RCX/RDX, then complete.
    Cpuid { leaf: u32, subleaf: u32 },
    /// HLT: the vCPU waits for an interrupt; complete to move past it.
    Hlt,
    /// IN or OUT of `size` bytes (1, 2, 4). `value` is what an OUT wrote (0 for an IN, whose
    /// value goes to [`Vcpu::complete`]).
    Io {
        port: u16,
        size: u8,
        write: bool,
        value: u32,
    },
    /// RDMSR of ECX: answer in EDX:EAX, then complete (or inject #GP).
    MsrRead { msr: u32 },
    /// WRMSR of ECX with EDX:EAX.
    MsrWrite { msr: u32, value: u64 },
    /// VMMCALL: number in RAX, arguments in RDI, RSI, RDX; result back in RAX.
    Hypercall,
    /// The guest touched a guest-physical address its nested page tables do not allow.
    NestedPageFault {
        gpa: u64,
        write: bool,
        fetch: bool,
        present: bool,
    },
    /// Triple fault (or another shutdown condition): the vCPU cannot go on.
    Shutdown,
    /// A physical interrupt arrived while the guest ran (it belongs to the host).
    Interrupt,
    /// A physical NMI arrived while the guest ran.
    Nmi,
    /// The guest can now take an external interrupt that an earlier
    /// [`Vcpu::inject_interrupt`] could not deliver (the window is disarmed again).
    InterruptWindow,
    /// An intercepted exception (the SVM backend intercepts only #MC).
    Exception { vector: u8, error: Option<u32> },
    /// The guest cannot be run: its state failed a check before entry, the CPU refused it, or
    /// it exited in a way Lazaret cannot complete. The guest must be destroyed.
    Invalid { reason: String },
}

/// Exit kinds, for counting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitKind {
    Cpuid,
    Hlt,
    Io,
    MsrRead,
    MsrWrite,
    Hypercall,
    NestedPageFault,
    Shutdown,
    Interrupt,
    Nmi,
    InterruptWindow,
    Exception,
    Invalid,
}

impl ExitKind {
    pub const ALL: [ExitKind; 13] = [
        ExitKind::Cpuid,
        ExitKind::Hlt,
        ExitKind::Io,
        ExitKind::MsrRead,
        ExitKind::MsrWrite,
        ExitKind::Hypercall,
        ExitKind::NestedPageFault,
        ExitKind::Shutdown,
        ExitKind::Interrupt,
        ExitKind::Nmi,
        ExitKind::InterruptWindow,
        ExitKind::Exception,
        ExitKind::Invalid,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ExitKind::Cpuid => "cpuid",
            ExitKind::Hlt => "hlt",
            ExitKind::Io => "io",
            ExitKind::MsrRead => "msr-read",
            ExitKind::MsrWrite => "msr-write",
            ExitKind::Hypercall => "hypercall",
            ExitKind::NestedPageFault => "npf",
            ExitKind::Shutdown => "shutdown",
            ExitKind::Interrupt => "interrupt",
            ExitKind::Nmi => "nmi",
            ExitKind::InterruptWindow => "interrupt-window",
            ExitKind::Exception => "exception",
            ExitKind::Invalid => "invalid",
        }
    }
}

impl Exit {
    pub fn kind(&self) -> ExitKind {
        match self {
            Exit::Cpuid { .. } => ExitKind::Cpuid,
            Exit::Hlt => ExitKind::Hlt,
            Exit::Io { .. } => ExitKind::Io,
            Exit::MsrRead { .. } => ExitKind::MsrRead,
            Exit::MsrWrite { .. } => ExitKind::MsrWrite,
            Exit::Hypercall => ExitKind::Hypercall,
            Exit::NestedPageFault { .. } => ExitKind::NestedPageFault,
            Exit::Shutdown => ExitKind::Shutdown,
            Exit::Interrupt => ExitKind::Interrupt,
            Exit::Nmi => ExitKind::Nmi,
            Exit::InterruptWindow => ExitKind::InterruptWindow,
            Exit::Exception { .. } => ExitKind::Exception,
            Exit::Invalid { .. } => ExitKind::Invalid,
        }
    }
}

/// Exits counted by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExitCounts([u64; ExitKind::ALL.len()]);

impl ExitCounts {
    pub fn record(&mut self, kind: ExitKind) {
        self.0[kind as usize] += 1;
    }

    pub fn get(&self, kind: ExitKind) -> u64 {
        self.0[kind as usize]
    }

    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    pub fn add(&mut self, other: &ExitCounts) {
        self.0.iter_mut().zip(other.0).for_each(|(a, b)| *a += b);
    }
}

/// "cpuid 1, io 2, hlt 1" (kinds with no exit left out; "none" when there were none).
impl fmt::Display for ExitCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for kind in ExitKind::ALL {
            let n = self.get(kind);
            if n > 0 {
                write!(f, "{}{} {n}", if first { "" } else { ", " }, kind.name())?;
                first = false;
            }
        }
        if first {
            f.write_str("none")?;
        }
        Ok(())
    }
}

/// Why a vCPU operation failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VcpuError {
    /// The CPU cannot run guests (the reason says which feature is missing).
    Unsupported(String),
    OutOfFrames,
    /// `complete` after an exit that has no instruction to complete, or whose instruction
    /// could not be decoded.
    CannotComplete(String),
    /// The exception cannot be injected (vector 2 or ≥ 32).
    BadException(u8),
    /// The vector is not an external interrupt's (0–31 are exceptions).
    BadInterrupt(u8),
}

impl fmt::Display for VcpuError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VcpuError::Unsupported(why) => write!(f, "this CPU cannot run guests: {why}"),
            VcpuError::OutOfFrames => f.write_str("out of frames for the vCPU"),
            VcpuError::CannotComplete(why) => write!(f, "cannot complete the exit: {why}"),
            VcpuError::BadException(v) => {
                write!(f, "vector {v} is not an exception that can be injected")
            }
            VcpuError::BadInterrupt(v) => {
                write!(
                    f,
                    "vector {v} is not an external interrupt (0-31 are exceptions)"
                )
            }
        }
    }
}

/// One virtual CPU.
pub trait Vcpu {
    /// Runs the guest until an exit Lazaret must handle.
    fn run(&mut self) -> Exit;
    fn regs(&self) -> &GuestRegs;
    fn regs_mut(&mut self) -> &mut GuestRegs;
    fn rip(&self) -> u64;
    fn rsp(&self) -> u64;
    /// Completes the instruction of the last exit (CPUID, HLT, IN/OUT, RDMSR/WRMSR, VMMCALL):
    /// RIP moves past it; `in_value` is an IN's result (the low `size` bytes of RAX change; a
    /// 4-byte IN clears RAX's upper half, as in 64-bit mode).
    fn complete(&mut self, in_value: Option<u32>) -> Result<(), VcpuError>;
    /// Delivers an exception to the guest on its next entry.
    fn inject_exception(&mut self, vector: u8, error_code: u32) -> Result<(), VcpuError>;
    /// The guest's RFLAGS.IF.
    fn interrupts_enabled(&self) -> bool;
    /// Offers external interrupt `vector` to the guest. `Ok(true)`: it is delivered on the
    /// next entry. `Ok(false)`: the guest cannot take it now (IF clear, interrupt shadow, or
    /// an event already pending for the next entry, which is never overwritten); an interrupt
    /// window is armed and a later [`Vcpu::run`] returns [`Exit::InterruptWindow`], after
    /// which the caller offers it again. Complete the exiting instruction first: completing
    /// it ends an interrupt shadow (`sti; hlt`). `Err(BadInterrupt)` for vectors 0–31.
    fn inject_interrupt(&mut self, vector: u8) -> Result<bool, VcpuError>;
    /// Exits of this vCPU so far, by kind.
    fn exit_counts(&self) -> &ExitCounts;
}

/// A CPU's hardware virtualisation.
pub trait Virtualization: Sized {
    type Vcpu: Vcpu;

    /// "AMD SVM", …
    fn name(&self) -> &'static str;
    /// Detects the feature and turns it on for the calling CPU.
    fn enable_on_this_cpu(frames: &mut dyn FrameAllocator) -> Result<Self, VcpuError>;
    /// A vCPU that enters at `entry` with guest-physical memory translated by the nested page
    /// tables at `npt_root`. Every frame it takes comes from `frames`.
    fn create_vcpu(
        &mut self,
        npt_root: PhysAddr,
        entry: &EntryState,
        frames: &mut dyn FrameAllocator,
    ) -> Result<Self::Vcpu, VcpuError>;
    /// Frees everything `create_vcpu` took; never fails.
    fn destroy_vcpu(&mut self, vcpu: Self::Vcpu, frames: &mut dyn FrameAllocator);
    /// Exits of every vCPU destroyed so far, by kind.
    fn retired_exit_counts(&self) -> &ExitCounts;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_read_as_a_sentence() {
        let mut c = ExitCounts::default();
        assert_eq!(alloc::format!("{c}"), "none");
        c.record(ExitKind::Io);
        c.record(ExitKind::Cpuid);
        c.record(ExitKind::Io);
        assert_eq!(alloc::format!("{c}"), "cpuid 1, io 2");
        assert_eq!(c.total(), 3);
        let mut sum = ExitCounts::default();
        sum.add(&c);
        sum.add(&c);
        assert_eq!(sum.get(ExitKind::Io), 4);
    }

    #[test]
    fn every_kind_has_its_own_slot_and_name() {
        for (i, kind) in ExitKind::ALL.iter().enumerate() {
            assert_eq!(*kind as usize, i, "{kind:?} counted in another kind's slot");
        }
        let mut c = ExitCounts::default();
        c.record(Exit::InterruptWindow.kind());
        assert_eq!(alloc::format!("{c}"), "interrupt-window 1");
        assert_eq!(c.get(ExitKind::InterruptWindow), 1);
    }
}
