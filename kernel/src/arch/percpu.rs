//! Per-CPU state: one slot per local APIC ID, each touched only by its own CPU, so a second
//! CPU brings up its own slot and breaks nothing of the first's. What lives here is what
//! hardware virtualisation needs per CPU: the host save area (VM_HSAVE_PA) and the page that
//! holds the host's VMLOAD/VMSAVE state, the host's FPU/SSE state while a guest runs, the
//! vCPU currently loaded, and the ASID generation.
use lazaret_svm::AsidAllocator;
use lazaret_types::PhysAddr;
use spinning_top::Spinlock;

/// CPUs Lazaret can hold state for (APIC IDs 0..MAX_CPUS).
pub const MAX_CPUS: usize = 16;

/// An FXSAVE64 image (Intel SDM vol. 1 §10.5.1, 512 bytes, 16-byte aligned).
#[derive(Clone)]
#[repr(C, align(16))]
pub struct FxArea(pub [u8; 512]);

impl FxArea {
    /// The x87/SSE state after FNINIT and reset: FCW 0x037F (all x87 exceptions masked),
    /// MXCSR 0x1F80 (all SIMD exceptions masked). FXRSTOR of an image whose MXCSR has reserved
    /// bits set faults, so a guest's image starts from this, never from zeroes read elsewhere.
    pub fn initial() -> FxArea {
        let mut a = FxArea([0; 512]);
        a.0[0..2].copy_from_slice(&0x037Fu16.to_le_bytes());
        a.0[24..28].copy_from_slice(&0x1F80u32.to_le_bytes());
        a
    }
}

/// What one CPU holds while it runs guests.
pub struct PerCpu {
    pub apic_id: u32,
    /// The page VM_HSAVE_PA points at (the CPU's own format; never read by us).
    pub host_save_area: PhysAddr,
    /// A VMCB-format page for VMSAVE/VMLOAD of the host's FS/GS/TR/LDTR/syscall MSRs around
    /// each guest entry.
    pub host_state: PhysAddr,
    pub host_fx: FxArea,
    /// The VMCB of the vCPU running (or last entered) here, for diagnostics and for a later
    /// VMCB-clean-bits optimisation.
    pub current_vcpu: Option<PhysAddr>,
    pub asids: AsidAllocator,
}

static CPUS: [Spinlock<Option<PerCpu>>; MAX_CPUS] = [const { Spinlock::new(None) }; MAX_CPUS];

/// The calling CPU's initial local APIC ID (CPUID 1 EBX[31:24]).
pub fn this_apic_id() -> u32 {
    x86::cpuid::cpuid!(1).ebx >> 24
}

fn slot() -> Option<&'static Spinlock<Option<PerCpu>>> {
    CPUS.get(this_apic_id() as usize)
}

/// Whether the calling CPU has its state installed.
pub fn installed() -> bool {
    slot().is_some_and(|s| s.lock().is_some())
}

/// Installs the calling CPU's state; `false` when its APIC ID has no slot or the slot is
/// already taken (the state stays as it was).
pub fn install(state: PerCpu) -> bool {
    let Some(slot) = slot() else {
        return false;
    };
    let mut s = slot.lock();
    if s.is_some() {
        return false;
    }
    *s = Some(state);
    true
}

/// Runs `f` on the calling CPU's state (`None` when it has none).
pub fn with_this_cpu<R>(f: impl FnOnce(&mut PerCpu) -> R) -> Option<R> {
    slot()?.lock().as_mut().map(f)
}
