//! Long-mode paging entry bits (APM vol. 2 §5.4.1, figures 5-18 to 5-22; the same layout in
//! nested tables, §15.25.5). Table entries grant R/W (and U in nested tables): access rights
//! are the AND (NX: the OR) of every level, so the leaf alone decides.

pub(crate) const PRESENT: u64 = 1 << 0;
pub(crate) const WRITABLE: u64 = 1 << 1;
pub(crate) const USER: u64 = 1 << 2;
pub(crate) const WRITE_THROUGH: u64 = 1 << 3;
pub(crate) const CACHE_DISABLE: u64 = 1 << 4;
/// PS in a PDE: the entry maps a 2 MiB page.
pub(crate) const LARGE: u64 = 1 << 7;
pub(crate) const NO_EXECUTE: u64 = 1 << 63;
/// Next-table / 4 KiB page address, bits 51:12.
pub(crate) const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

/// Index of `addr` in a table at `level` (4 = PML4, 1 = page table).
pub(crate) const fn index(addr: u64, level: u32) -> u64 {
    (addr >> (12 + 9 * (level - 1))) & 0x1ff
}
