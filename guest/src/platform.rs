//! The seam between the guest's logic and the machine it runs on. `guest/bin` implements it
//! with port I/O, volatile loads, VMMCALL and RDTSC; host tests implement it with
//! `lazaret_pci`'s fake configuration space, `lazaret_edu`'s `SimEdu` and simulated RAM.
//!
//! Guest RAM is identity-mapped in the guest's own page tables (guest contract), so a gpa is
//! also the address the guest dereferences; the seam speaks gpas only.

use lazaret_types::Mmio;

/// What the guest needs from its machine. Methods take `&self`: the machine is shared state,
/// and the guest has one CPU with interrupts off.
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
}
