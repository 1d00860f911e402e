//! The host's local APIC, made ready to take device interrupts: the legacy PICs masked (every
//! interrupt Lazaret takes is a remapped MSI), the LVT timer and LINT0 masked, TPR 0, APIC
//! software-enabled with the spurious vector 0xFF (Intel SDM Vol. 3A §11.4, §11.9), and every
//! vector from 32 up counted and acknowledged by the IDT ([`super::idt::watch_interrupts`]).
//! The PICs and LINT0 (ExtINT) must be masked: the BIOS leaves the PIT's IRQ 0 on vector 8,
//! which would look like a double fault — only MSIs may arrive.
use alloc::format;
use alloc::string::String;

use lazaret_types::{Mmio, PhysAddr};

use super::idt::{take_pending_interrupts, watch_interrupts, watching};
use super::mmio::MmioRegion;
use lazaret_types::FrameAllocator;

/// The spurious-interrupt vector programmed in the SVR (never counted as a delivery).
pub const SPURIOUS: u8 = 0xff;
/// IA32_APIC_BASE (SDM Vol. 3A §11.4.4).
const IA32_APIC_BASE: u32 = 0x1b;
const LVT_TIMER: usize = 0x320;
const LVT_LINT0: usize = 0x350;
const LVT_MASKED: u32 = 1 << 16;
const TPR: usize = 0x80;
const SVR: usize = 0xf0;
const SVR_ENABLE: u32 = 1 << 8;

/// Enables the local APIC for device interrupts (once; later calls return at once).
pub fn enable(frames: &mut dyn FrameAllocator) -> Result<(), String> {
    if watching() {
        return Ok(());
    }
    // SAFETY: writing the 8259 interrupt mask registers (OCW1, ports 0x21 / 0xa1) masks every
    // legacy IRQ; nothing else in the kernel uses the PICs.
    unsafe {
        x86::io::outb(0x21, 0xff);
        x86::io::outb(0xa1, 0xff);
    }
    // SAFETY: IA32_APIC_BASE exists on every x86_64 CPU; reading it has no side effect.
    let base = unsafe { x86::msr::rdmsr(IA32_APIC_BASE) } & 0x000f_ffff_ffff_f000;
    let lapic = MmioRegion::map(PhysAddr(base), 0x1000, frames)
        .map_err(|e| format!("cannot map the local APIC at {base:#x}: {e}"))?;
    for lvt in [LVT_TIMER, LVT_LINT0] {
        lapic.write32(lvt, lapic.read32(lvt) | LVT_MASKED);
    }
    lapic.write32(TPR, 0);
    let svr = lapic.read32(SVR);
    lapic.write32(SVR, svr | SVR_ENABLE | u32::from(SPURIOUS));
    watch_interrupts(lapic);
    take_pending_interrupts();
    Ok(())
}
