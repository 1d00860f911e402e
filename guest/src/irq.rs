//! Waiting for a DMA by interrupt (issue 11 part 4): the IDT entry format, the x2APIC
//! bring-up, and the bounded `sti; hlt` wait for the DMA-completion handler to run.
//!
//! An interrupt that never comes is a failure the guest reports, not something it papers
//! over: [`wait_for_dma_interrupt`] gives up after [`DMA_TIMEOUT_TICKS`] of the TSC or
//! [`MAX_HALTS`] halts, and the caller then polls the device and fails its variant.

use core::fmt;

use lazaret_guest_abi::interrupts::{
    APIC_BASE_ENABLE, APIC_BASE_X2APIC, IA32_APIC_BASE, SPURIOUS_VECTOR, SVR_APIC_ENABLE,
    X2APIC_SVR, X2APIC_TPR,
};

use crate::{HandlerRecord, Platform, DMA_TIMEOUT_TICKS};

/// Halts one wait may take before it gives up even if the TSC says there is time left (a TSC
/// that stands still must not make the wait endless). Each HLT ends with an interrupt or
/// when Lazaret resumes the guest; a thousand is far more than one 100 ms DMA needs.
pub const MAX_HALTS: u32 = 1000;

/// A 64-bit interrupt gate (Intel SDM Vol. 3A §6.14.1, figure 6-8) to `handler` in the code
/// segment `selector`: offset 15:0 in bits 15:0, the selector in 31:16, IST 0, type 0xE
/// (interrupt gate: IF is cleared on entry) in 43:40, DPL 0, P in bit 47, offset 31:16 in
/// 63:48, offset 63:32 in the second quadword.
pub const fn interrupt_gate(handler: u64, selector: u16) -> [u64; 2] {
    let low = (handler & 0xffff)
        | ((selector as u64) << 16)
        | (0xe << 40)
        | (1 << 47)
        | (((handler >> 16) & 0xffff) << 48);
    [low, handler >> 32]
}

/// Puts the (virtual) LAPIC in x2APIC mode, software-enabled, accepting every priority:
/// IA32_APIC_BASE gets EN, then EXTD (SDM Vol. 3A §11.12.5: from disabled the way to x2APIC
/// leads through xAPIC), each written only if it is not already set; TPR 0; SVR with the
/// software-enable bit, without which no interrupt is delivered.
pub fn enable_x2apic<P: Platform>(p: &P) {
    let base = p.rdmsr(IA32_APIC_BASE);
    if base & APIC_BASE_ENABLE == 0 {
        p.wrmsr(IA32_APIC_BASE, base | APIC_BASE_ENABLE);
    }
    let x2 = base | APIC_BASE_ENABLE | APIC_BASE_X2APIC;
    if base != x2 {
        p.wrmsr(IA32_APIC_BASE, x2);
    }
    p.wrmsr(X2APIC_TPR, 0);
    p.wrmsr(X2APIC_SVR, SVR_APIC_ENABLE | u64::from(SPURIOUS_VECTOR));
}

/// Why a wait for the DMA-completion interrupt gave up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoInterrupt {
    /// "halts" or "windows": what the wait opened the CPU with.
    pub what: &'static str,
    pub halts: u32,
    pub ticks: u64,
}

impl fmt::Display for NoInterrupt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bound = if self.halts >= MAX_HALTS {
            "the halt bound"
        } else {
            "the TSC deadline"
        };
        write!(
            f,
            "no interrupt after {} {} and {} TSC ticks ({bound})",
            self.halts, self.what, self.ticks
        )
    }
}

/// Sleeps in `sti; hlt` until the DMA-completion handler has run since its count was
/// `before` (read before the DMA started, so an early interrupt is not missed); returns the
/// halts it took.
pub fn wait_for_dma_interrupt<P: Platform>(p: &P, before: u64) -> Result<u32, NoInterrupt> {
    wait_until(p, |r| r.dma_done != before)
}

/// Sleeps in `sti; hlt` until the handlers' record differs from `before` on any vector (the
/// rogue-irq variant, whose legal messages may name a vector other than the DMA-done one).
pub fn wait_for_any_interrupt<P: Platform>(
    p: &P,
    before: HandlerRecord,
) -> Result<u32, NoInterrupt> {
    wait_until(p, |r| {
        r.dma_done != before.dma_done || r.unexpected != before.unexpected
    })
}

/// With interrupts off so far (the device polled to its end), opens `sti; nop; cli` windows
/// until the DMA-completion handler has run since its count was `before`; returns the
/// windows it took (under the same bounds as a wait in HLT).
pub fn take_dma_interrupt_in_window<P: Platform>(p: &P, before: u64) -> Result<u32, NoInterrupt> {
    bounded(
        p,
        "windows",
        |r| r.dma_done != before,
        || p.interrupt_window(),
    )
}

/// The bounded wait both use: `moved` is checked with interrupts off before every halt, and
/// STI's shadow keeps an interrupt that arrives after the check pending into the HLT.
fn wait_until<P: Platform>(
    p: &P,
    moved: impl Fn(&HandlerRecord) -> bool,
) -> Result<u32, NoInterrupt> {
    bounded(p, "halts", moved, || p.wait_for_interrupt())
}

/// Checks `moved`, then `open`s the CPU to an interrupt, until it moved or the bounds
/// ([`MAX_HALTS`] openings, [`DMA_TIMEOUT_TICKS`]) are reached.
fn bounded<P: Platform>(
    p: &P,
    what: &'static str,
    moved: impl Fn(&HandlerRecord) -> bool,
    open: impl Fn(),
) -> Result<u32, NoInterrupt> {
    let start = p.rdtsc();
    let mut halts = 0;
    loop {
        if moved(&p.handler_record()) {
            return Ok(halts);
        }
        let ticks = p.rdtsc().wrapping_sub(start);
        if halts >= MAX_HALTS || ticks >= DMA_TIMEOUT_TICKS {
            return Err(NoInterrupt { what, halts, ticks });
        }
        open();
        halts += 1;
    }
}
