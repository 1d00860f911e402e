//! IDT and exception reporting. Every vector has a handler on an IST stack; an exception is
//! reported with vector, error code, RIP, CR2 and the top of the faulting stack, and ends
//! the run with the failure status. Device interrupts (vectors 32–255) are fatal too, until a
//! scenario asks to watch them ([`watch_interrupts`]): then each is counted per vector and
//! acknowledged at the local APIC — how the interrupt-attack scenario sees what got through.
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use lazaret_types::Mmio;
use spinning_top::Spinlock;

use super::mmio::MmioRegion;

use x86::dtables::{lidt, DescriptorTablePointer};

use super::gdt::{IST_DOUBLE_FAULT, IST_EXCEPTION, IST_NMI, KERNEL_CODE};
use crate::console::emergency_print;

core::arch::global_asm!(include_str!("exceptions.s"), options(att_syntax));

extern "C" {
    static isr_stubs: u8;
}

/// What `isr_common` leaves on the stack, lowest address first.
#[repr(C)]
pub struct TrapFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    pub vector: u64,
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

#[derive(Clone, Copy)]
#[repr(C)]
struct Gate {
    offset_lo: u16,
    selector: u16,
    ist: u8,
    flags: u8,
    offset_mid: u16,
    offset_hi: u32,
    reserved: u32,
}

static mut IDT: [Gate; 256] = [Gate {
    offset_lo: 0,
    selector: 0,
    ist: 0,
    flags: 0,
    offset_mid: 0,
    offset_hi: 0,
    reserved: 0,
}; 256];

/// Fills and loads the IDT. Call once, after `gdt::init`.
pub fn init() {
    let stubs = core::ptr::addr_of!(isr_stubs) as u64;
    // SAFETY: single-threaded bring-up with interrupts off: nothing reads IDT while it is
    // written, and each gate points at its stub in `exceptions.s` with a valid selector/IST.
    unsafe {
        let idt = &mut *core::ptr::addr_of_mut!(IDT);
        for (vector, gate) in idt.iter_mut().enumerate() {
            let handler = stubs + 16 * vector as u64;
            let ist = match vector {
                8 => IST_DOUBLE_FAULT,
                2 | 18 => IST_NMI,
                _ => IST_EXCEPTION,
            };
            *gate = Gate {
                offset_lo: handler as u16,
                selector: KERNEL_CODE,
                ist,
                flags: 0x8e, // present, DPL 0, 64-bit interrupt gate
                offset_mid: (handler >> 16) as u16,
                offset_hi: (handler >> 32) as u32,
                reserved: 0,
            };
        }
        lidt(&DescriptorTablePointer::new_from_slice(&idt[..]));
    }
}

pub fn name(vector: u64) -> &'static str {
    const NAMES: [&str; 21] = [
        "divide error",
        "debug",
        "NMI",
        "breakpoint",
        "overflow",
        "bound range",
        "invalid opcode",
        "device not available",
        "double fault",
        "coprocessor overrun",
        "invalid TSS",
        "segment not present",
        "stack fault",
        "general protection",
        "page fault",
        "reserved",
        "x87 FP",
        "alignment check",
        "machine check",
        "SIMD FP",
        "virtualization",
    ];
    NAMES
        .get(vector as usize)
        .copied()
        .unwrap_or(if vector < 32 { "reserved" } else { "interrupt" })
}

static IN_HANDLER: AtomicBool = AtomicBool::new(false);

/// Interrupts taken per vector while watched.
static TAKEN: [AtomicU64; 256] = [const { AtomicU64::new(0) }; 256];
/// The TSC when each vector was last taken: where a device interrupt's latency into a guest
/// starts (the earliest moment the host can see it).
static TAKEN_AT: [AtomicU64; 256] = [const { AtomicU64::new(0) }; 256];
/// The local APIC whose EOI register acknowledges a watched interrupt (`None`: not watching).
static LAPIC: Spinlock<Option<MmioRegion>> = Spinlock::new(None);
/// Local APIC End Of Interrupt register (Intel SDM Vol. 3A §11.8.5).
const LAPIC_EOI: usize = 0xb0;

/// From now on interrupts on vectors 32–255 are counted and acknowledged through `lapic`
/// (its register page, mapped uncached), instead of ending the run.
pub fn watch_interrupts(lapic: MmioRegion) {
    *LAPIC.lock() = Some(lapic);
}

/// Interrupts taken on `vector` since boot.
pub fn interrupts_taken(vector: u8) -> u64 {
    TAKEN[usize::from(vector)].load(Ordering::SeqCst)
}

/// Interrupts taken on every vector since boot, by vector.
pub type TakenCounts = [u64; 256];

/// [`TakenCounts`] now: compare two with [`taken_between`] to see what arrived in between.
pub fn taken_snapshot() -> TakenCounts {
    core::array::from_fn(|v| TAKEN[v].load(Ordering::SeqCst))
}

/// The device vectors (32–255, the spurious vector aside: it is no delivery) that took
/// interrupts from `before` to `after`, with how many.
pub fn taken_between<'a>(
    before: &'a TakenCounts,
    after: &'a TakenCounts,
) -> impl Iterator<Item = (u8, u64)> + 'a {
    (32..=255u8)
        .filter(|v| *v != super::lapic::SPURIOUS)
        .map(|v| {
            let i = usize::from(v);
            (v, after[i].wrapping_sub(before[i]))
        })
        .filter(|(_, n)| *n > 0)
}

/// The TSC at which `vector` was last taken (0: never).
pub fn last_taken_at(vector: u8) -> u64 {
    TAKEN_AT[usize::from(vector)].load(Ordering::SeqCst)
}

/// Whether device interrupts are being watched (the local APIC is enabled for them).
pub fn watching() -> bool {
    LAPIC.lock().is_some()
}

/// Opens a short interrupt window (`sti` … `cli`) so that whatever the local APIC holds
/// pending is taken now, and counted. The jumps inside end translation blocks: QEMU's TCG
/// looks for pending interrupts only between them (7.2 does not end one at `sti`).
pub fn take_pending_interrupts() {
    for _ in 0..64 {
        // SAFETY: watched interrupts return through `isr_common`'s iretq after being
        // counted; the window is closed again before returning.
        unsafe {
            core::arch::asm!(
                "sti",
                "nop",
                "jmp 2f",
                "2:",
                "pause",
                "jmp 3f",
                "3:",
                "pause",
                "cli",
                options(nomem, nostack)
            )
        };
    }
}

/// Counts and acknowledges a watched device interrupt; `false` if it is not watched.
fn watched_interrupt(vector: u64) -> bool {
    if vector < 32 {
        return false;
    }
    let Some(guard) = LAPIC.try_lock() else {
        return false;
    };
    let Some(lapic) = guard.as_ref() else {
        return false;
    };
    TAKEN_AT[(vector & 0xff) as usize].store(super::tsc::now(), Ordering::SeqCst);
    TAKEN[(vector & 0xff) as usize].fetch_add(1, Ordering::SeqCst);
    // The spurious vector (SVR) is not acknowledged (§11.9).
    if vector != 0xff {
        lapic.write32(LAPIC_EOI, 0);
    }
    true
}

#[no_mangle]
extern "C" fn exception_dispatch(frame: &TrapFrame) {
    if watched_interrupt(frame.vector) {
        return;
    }
    if IN_HANDLER.swap(true, Ordering::SeqCst) {
        emergency_print(format_args!(
            "EXCEPTION {} inside the exception handler\n",
            frame.vector
        ));
        lazaret_rt::exit::exit(lazaret_rt::exit::ExitCode::Failure);
    }
    // SAFETY: reading CR2 has no side effects.
    let cr2 = unsafe { x86::controlregs::cr2() };
    emergency_print(format_args!(
        "EXCEPTION vector {} ({}) error {:#x} rip {:#x} cs {:#x} rflags {:#x} cr2 {:#x} rsp {:#x}\n",
        frame.vector, name(frame.vector), frame.error_code, frame.rip, frame.cs, frame.rflags, cr2, frame.rsp
    ));
    emergency_print(format_args!(
        "  rax {:#x} rbx {:#x} rcx {:#x} rdx {:#x} rsi {:#x} rdi {:#x} rbp {:#x}\n",
        frame.rax, frame.rbx, frame.rcx, frame.rdx, frame.rsi, frame.rdi, frame.rbp
    ));
    // The faulting stack, if it is an aligned address in the kernel's identity map.
    if frame.rsp.is_multiple_of(8)
        && super::paging::is_mapped(frame.rsp)
        && super::paging::is_mapped(frame.rsp + 63)
    {
        for i in 0..8u64 {
            let addr = frame.rsp + 8 * i;
            // SAFETY: the address is 8-byte aligned and mapped (checked above).
            let value = unsafe { (addr as *const u64).read_volatile() };
            emergency_print(format_args!("  stack[{addr:#x}] = {value:#018x}\n"));
        }
    }
    emergency_print(format_args!("LAZARET EXIT failure\n"));
    lazaret_rt::exit::exit(lazaret_rt::exit::ExitCode::Failure);
}
