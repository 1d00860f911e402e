//! The guest's IDT and what its handlers record (issue 11 part 4). `interrupts.s` holds the
//! stubs: `DMA_DONE_VECTOR` → `dma_done_stub` (TSC, count, edu ack, EOI), every other vector
//! from 32 on → `unexpected_stub` (count, EOI), but the spurious vector → `spurious_stub`
//! (nothing), exceptions 0–31 → [`guest_exception`], which reports and exits. The statics below are written only by the stubs, with interrupts on
//! only inside `wait_for_interrupt`; the guest reads them between waits.
use core::arch::asm;
use core::sync::atomic::{AtomicU64, Ordering};

use lazaret_edu::regs::{IRQ_ACK, IRQ_STATUS};
use lazaret_guest::irq::interrupt_gate;
use lazaret_guest::HandlerRecord;
use lazaret_guest_abi::interrupts::{DMA_DONE_VECTOR, SPURIOUS_VECTOR, X2APIC_EOI};
use lazaret_guest_abi::layout::CODE_SELECTOR;

/// Interrupts taken on `DMA_DONE_VECTOR`.
static DMA_DONE_COUNT: AtomicU64 = AtomicU64::new(0);
/// The TSC `dma_done_stub` read on its latest entry.
static DMA_DONE_TSC: AtomicU64 = AtomicU64::new(0);
/// Interrupts on any other vector from 32 on.
static UNEXPECTED_COUNT: AtomicU64 = AtomicU64::new(0);
/// edu's BAR0 gpa, for the acknowledgement (0: none yet, the stub skips it).
static EDU_BAR: AtomicU64 = AtomicU64::new(0);

/// 256 gates of two quadwords each (SDM Vol. 3A §6.14.1).
static IDT: [AtomicU64; 512] = [const { AtomicU64::new(0) }; 512];
const IDT_LIMIT: u16 = 256 * 16 - 1;

core::arch::global_asm!(
    include_str!("interrupts.s"),
    count = sym DMA_DONE_COUNT,
    tsc = sym DMA_DONE_TSC,
    unexpected = sym UNEXPECTED_COUNT,
    edu_bar = sym EDU_BAR,
    status = const IRQ_STATUS,
    ack = const IRQ_ACK,
    eoi = const X2APIC_EOI,
    exception = sym guest_exception,
    options(att_syntax)
);

extern "C" {
    fn dma_done_stub();
    fn unexpected_stub();
    fn spurious_stub();
    /// The 32 exception stubs' addresses, in vector order.
    static exception_stubs: [u64; 32];
}

/// Fills the IDT and loads it. Interrupts are off (the guest contract's entry state, and
/// nothing but `wait_for_interrupt` turns them on).
pub fn install(edu_bar: u64) {
    EDU_BAR.store(edu_bar, Ordering::SeqCst);
    // SAFETY: a linker-resolved table of 32 addresses in .rodata, never written.
    let exceptions = unsafe { exception_stubs };
    for vector in 0..256usize {
        let handler = match vector {
            v if v < 32 => exceptions[v],
            v if v == usize::from(DMA_DONE_VECTOR) => dma_done_stub as *const () as u64,
            v if v == usize::from(SPURIOUS_VECTOR) => spurious_stub as *const () as u64,
            _ => unexpected_stub as *const () as u64,
        };
        let [low, high] = interrupt_gate(handler, CODE_SELECTOR);
        IDT[2 * vector].store(low, Ordering::SeqCst);
        IDT[2 * vector + 1].store(high, Ordering::SeqCst);
    }
    let base = IDT.as_ptr() as u64;
    let mut idtr = [0u16; 5];
    idtr[0] = IDT_LIMIT;
    for (i, word) in idtr[1..].iter_mut().enumerate() {
        *word = (base >> (16 * i)) as u16;
    }
    // SAFETY: the IDT is a static that lives for the whole run, each gate points at a stub
    // in our code segment, and interrupts stay off until wait_for_interrupt.
    unsafe { asm!("lidt [{}]", in(reg) idtr.as_ptr(), options(nostack, preserves_flags)) };
}

/// `sti; hlt; cli`, in a function of its own: the interrupt frame lands below this frame's
/// RSP, where nothing lives (no locals here, and a caller keeps nothing in its red zone across
/// a call).
#[inline(never)]
pub fn wait_for_interrupt() {
    // SAFETY: the IDT is loaded before the guest first waits; the handlers preserve every
    // register and write only their statics (hence no `nomem`); not `nostack`: an interrupt
    // pushes its frame on this stack.
    unsafe { asm!("sti", "hlt", "cli") };
}

/// `sti; nop; cli`: one instruction with interrupts on (STI's shadow covers the NOP, so a
/// pending interrupt is taken after it), in a function of its own like [`wait_for_interrupt`].
#[inline(never)]
pub fn interrupt_window() {
    // SAFETY: as in `wait_for_interrupt`: the IDT is loaded, the handlers preserve every
    // register, and an interrupt pushes its frame on this stack.
    unsafe { asm!("sti", "nop", "cli") };
}

pub fn record() -> HandlerRecord {
    HandlerRecord {
        dma_done: DMA_DONE_COUNT.load(Ordering::SeqCst),
        last_tsc: DMA_DONE_TSC.load(Ordering::SeqCst),
        unexpected: UNEXPECTED_COUNT.load(Ordering::SeqCst),
    }
}

/// An exception (vector 0–31) in the guest: it cannot be returned from, so say which and exit.
extern "C" fn guest_exception(vector: u64) -> ! {
    crate::fail(format_args!("exception {vector} in the guest"))
}
