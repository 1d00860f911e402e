//! The kernel's own 4-level page tables (Intel SDM Vol. 3 §4.5).
//!
//! Physical memory is identity-mapped, so a physical address is also the pointer to it:
//! RAM read/write and never executable; firmware-reserved ranges uncached and read-only;
//! the kernel image with W^X (text RX, rodata R, data RW). The first MiB is firmware's (BIOS
//! data area, EBDA, the RSDP): read-only, so a write through a null pointer faults. MMIO is mapped on demand, uncached ([`map_mmio`]), splitting a 2 MiB page when
//! a register block lies inside one.
use lazaret_types::{FrameAllocator, PhysAddr};
use spinning_top::Spinlock;

use crate::mm::ranges::Range;

const PRESENT: u64 = 1;
const WRITABLE: u64 = 1 << 1;
const WRITE_THROUGH: u64 = 1 << 3;
const CACHE_DISABLE: u64 = 1 << 4;
const HUGE: u64 = 1 << 7;
const NO_EXECUTE: u64 = 1 << 63;
const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

const PAGE: u64 = 4096;
const LARGE: u64 = 2 << 20;

/// How a range is mapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Ram,
    Text,
    ReadOnly,
    Firmware,
    Mmio,
}

impl Kind {
    fn flags(self) -> u64 {
        match self {
            Kind::Ram => PRESENT | WRITABLE | NO_EXECUTE,
            Kind::Text => PRESENT,
            Kind::ReadOnly => PRESENT | NO_EXECUTE,
            Kind::Firmware => PRESENT | CACHE_DISABLE | WRITE_THROUGH | NO_EXECUTE,
            Kind::Mmio => PRESENT | WRITABLE | CACHE_DISABLE | WRITE_THROUGH | NO_EXECUTE,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PagingError {
    OutOfFrames,
    NotInitialised,
}

impl core::fmt::Display for PagingError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            PagingError::OutOfFrames => f.write_str("out of frames for page tables"),
            PagingError::NotInitialised => f.write_str("page tables not set up yet"),
        }
    }
}

struct PageTables {
    pml4: u64,
    table_frames: usize,
}

static TABLES: Spinlock<Option<PageTables>> = Spinlock::new(None);

fn entry_ptr(table: u64, index: u64) -> *mut u64 {
    (table + 8 * index) as *mut u64
}

/// # Safety
/// `table` must be an identity-mapped page-table frame owned by the caller.
unsafe fn read_entry(table: u64, index: u64) -> u64 {
    // SAFETY: per the function contract.
    unsafe { entry_ptr(table, index).read_volatile() }
}

/// # Safety
/// As for [`read_entry`]; the new entry must keep the mapping the kernel runs on intact.
unsafe fn write_entry(table: u64, index: u64, value: u64) {
    // SAFETY: per the function contract.
    unsafe { entry_ptr(table, index).write_volatile(value) }
}

impl PageTables {
    /// The table an entry points to, allocating it, or splitting a 2 MiB page into 512
    /// 4 KiB pages with the same attributes.
    fn next_table(
        &mut self,
        table: u64,
        index: u64,
        alloc: &mut dyn FrameAllocator,
    ) -> Result<u64, PagingError> {
        // SAFETY: `table` is one of ours (root or reached from it).
        let entry = unsafe { read_entry(table, index) };
        if entry & PRESENT != 0 && entry & HUGE == 0 {
            return Ok(entry & ADDR_MASK);
        }
        let frame = alloc
            .alloc_frame()
            .ok_or(PagingError::OutOfFrames)?
            .as_u64();
        self.table_frames += 1;
        if entry & PRESENT != 0 {
            let base = entry & ADDR_MASK & !(LARGE - 1);
            let flags = (entry & !ADDR_MASK) & !HUGE;
            for i in 0..512 {
                // SAFETY: `frame` is a fresh zeroed frame owned by us.
                unsafe { write_entry(frame, i, (base + i * PAGE) | flags) };
            }
        }
        // SAFETY: links the new table; for a split the translation is unchanged.
        unsafe { write_entry(table, index, frame | PRESENT | WRITABLE) };
        Ok(frame)
    }

    fn map(
        &mut self,
        range: Range,
        kind: Kind,
        alloc: &mut dyn FrameAllocator,
    ) -> Result<(), PagingError> {
        let mut addr = range.start & !(PAGE - 1);
        while addr < range.end {
            let pdpt = self.next_table(self.pml4, (addr >> 39) & 511, alloc)?;
            let pd = self.next_table(pdpt, (addr >> 30) & 511, alloc)?;
            if addr.is_multiple_of(LARGE)
                && addr + LARGE <= range.end
                && !self.is_table(pd, (addr >> 21) & 511)
            {
                // SAFETY: `pd` is one of our tables; the entry maps `addr` as requested.
                unsafe { write_entry(pd, (addr >> 21) & 511, addr | kind.flags() | HUGE) };
                addr += LARGE;
            } else {
                let pt = self.next_table(pd, (addr >> 21) & 511, alloc)?;
                // SAFETY: as above.
                unsafe { write_entry(pt, (addr >> 12) & 511, addr | kind.flags()) };
                addr += PAGE;
            }
        }
        Ok(())
    }

    fn is_table(&self, table: u64, index: u64) -> bool {
        // SAFETY: `table` is one of ours.
        let e = unsafe { read_entry(table, index) };
        e & PRESENT != 0 && e & HUGE == 0
    }
}

/// Builds the kernel's tables from `regions` and switches to them. Returns the number of
/// page-table frames used. `alloc` must hand out frames the loader's tables map (below
/// 4 GiB) until this returns.
pub fn init(
    regions: &[(Range, Kind)],
    alloc: &mut dyn FrameAllocator,
) -> Result<usize, PagingError> {
    let pml4 = alloc
        .alloc_frame()
        .ok_or(PagingError::OutOfFrames)?
        .as_u64();
    let mut tables = PageTables {
        pml4,
        table_frames: 1,
    };
    for (range, kind) in regions {
        tables.map(*range, *kind, alloc)?;
    }
    let used = tables.table_frames;
    // SAFETY: the new tables identity-map all RAM the kernel touches (its image, stacks,
    // heap, frames) with the same addresses as the loader's, so execution continues; WP makes
    // read-only mappings binding on the kernel itself; NXE makes NX bits valid.
    unsafe {
        x86::msr::wrmsr(
            x86::msr::IA32_EFER,
            x86::msr::rdmsr(x86::msr::IA32_EFER) | (1 << 11),
        );
        x86::controlregs::cr3_write(pml4);
        x86::controlregs::cr0_write(
            x86::controlregs::cr0() | x86::controlregs::Cr0::CR0_WRITE_PROTECT,
        );
    }
    *TABLES.lock() = Some(tables);
    Ok(used)
}

/// Maps `len` bytes of MMIO at `phys` uncached and returns the pointer to it (identity).
pub fn map_mmio(
    phys: PhysAddr,
    len: u64,
    alloc: &mut dyn FrameAllocator,
) -> Result<*mut u8, PagingError> {
    let mut guard = TABLES.lock();
    let tables = guard.as_mut().ok_or(PagingError::NotInitialised)?;
    let range = Range {
        start: phys.as_u64() & !(PAGE - 1),
        end: phys.as_u64().saturating_add(len),
    };
    tables.map(range, Kind::Mmio, alloc)?;
    // SAFETY: reloading CR3 flushes the TLB of every entry changed above.
    unsafe { x86::controlregs::cr3_write(x86::controlregs::cr3()) };
    Ok(phys.as_u64() as *mut u8)
}

/// Whether `addr` is mapped, by walking the live tables from CR3 (no lock: used by the
/// exception handler, which may have interrupted a holder of the lock).
pub fn is_mapped(addr: u64) -> bool {
    // SAFETY: reading CR3 has no side effects.
    let mut table = unsafe { x86::controlregs::cr3() } & ADDR_MASK;
    for shift in [39u64, 30, 21, 12] {
        // SAFETY: page tables are identity-mapped RAM (the loader's and ours alike).
        let e = unsafe { read_entry(table, (addr >> shift) & 511) };
        if e & PRESENT == 0 {
            return false;
        }
        if shift == 12 || (shift != 39 && e & HUGE != 0) {
            return true;
        }
        table = e & ADDR_MASK;
    }
    false
}
