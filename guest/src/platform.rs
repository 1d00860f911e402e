//! The seam between the guest's logic and the machine it runs on. `guest/bin` implements it
//! with port I/O, volatile loads, VMMCALL and RDTSC; host tests implement it with
//! `lazaret_pci`'s fake configuration space, `lazaret_edu`'s `SimEdu` and simulated RAM.
//!
//! Guest RAM is identity-mapped in the guest's own page tables (guest contract), so a gpa is
//! also the address the guest dereferences; the seam speaks gpas only.

use lazaret_types::Mmio;

/// What the guest's interrupt handlers have recorded (they alone write it; the guest reads).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HandlerRecord {
    /// Interrupts taken on `DMA_DONE_VECTOR`.
    pub dma_done: u64,
    /// The TSC the `DMA_DONE_VECTOR` handler read first thing on its latest entry.
    pub last_tsc: u64,
    /// Interrupts taken on any other vector from 32 on.
    pub unexpected: u64,
}

/// What the guest needs from its machine. Methods take `&self`: the machine is shared state,
/// and the guest has one CPU with interrupts off except inside [`Platform::wait_for_interrupt`].
pub trait Platform {
    /// Registers of a BAR mapped at a gpa in the MMIO window.
    type Bar: Mmio;

    fn outl(&self, port: u16, value: u32);
    fn inl(&self, port: u16) -> u32;

    /// `HC_CONSOLE_WRITE` of `bytes` (at most 256); returns RAX.
    fn console_write(&self, bytes: &[u8]) -> u64;

    /// The time-stamp counter: the guest's only clock.
    fn rdtsc(&self) -> u64;

    /// The registers of the BAR at `gpa` (already checked to lie in the MMIO window).
    fn bar(&self, gpa: u64) -> Self::Bar;

    /// A 32-bit load from `gpa` that Lazaret should answer with a nested page fault (ending
    /// the guest). Returns only if it did not.
    fn forbidden_read32(&self, gpa: u64) -> u32;

    /// Copies guest RAM at `gpa` (identity-mapped) into `buf`.
    fn read_ram(&self, gpa: u64, buf: &mut [u8]);
    /// Copies `data` into guest RAM at `gpa`.
    fn write_ram(&self, gpa: u64, data: &[u8]);

    /// CR3: the root of the guest's own page tables.
    fn cr3(&self) -> u64;
    /// Drops any cached translation of the page at `va`.
    fn invlpg(&self, va: u64);

    /// Loads an IDT with limit 0 and raises an exception: #UD cannot be delivered, nor the
    /// #DF that follows, so the CPU shuts down (triple fault). Returns only if it did not.
    fn triple_fault(&self);

    /// RDMSR / WRMSR: the x2APIC MSRs of the virtual LAPIC (Lazaret raises #GP for others).
    fn rdmsr(&self, msr: u32) -> u64;
    fn wrmsr(&self, msr: u32, value: u64);

    /// Loads the guest's IDT: `DMA_DONE_VECTOR` goes to a handler that reads the TSC first,
    /// records it and counts ([`HandlerRecord`]), acknowledges edu's interrupt status (writes
    /// the status to IRQ_ACK of the BAR0 at `edu_bar`) and writes X2APIC_EOI; every other
    /// vector from 32 on is counted as unexpected and EOIed, except the spurious vector
    /// (no EOI, not counted: SDM Vol. 3A §11.9); an exception ends the guest.
    fn install_interrupt_handlers(&self, edu_bar: u64);

    /// `sti; hlt; cli`: sleeps until an interrupt (taken before this returns) or anything
    /// else that ends the HLT. The only place the guest runs with interrupts on: STI's
    /// one-instruction shadow means an interrupt already pending is taken in the HLT, never
    /// lost between a check and the sleep.
    fn wait_for_interrupt(&self);

    /// `sti; nop; cli`: a one-instruction window in which an interrupt already pending is
    /// taken, without sleeping (the `wait=window` path: Lazaret held the interrupt while the
    /// guest had interrupts off).
    fn interrupt_window(&self);

    /// What the handlers have recorded so far.
    fn handler_record(&self) -> HandlerRecord;

    /// `HC_INTERRUPT_STAMP(tsc, vector)`; returns RAX.
    fn interrupt_stamp(&self, tsc: u64, vector: u8) -> u64;
}
