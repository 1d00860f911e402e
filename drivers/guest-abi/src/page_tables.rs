//! The guest's own page tables, which Lazaret builds at [`PAGE_TABLES_GPA`] before the first
//! entry (guest contract): an identity map of guest RAM except page 0 (the null guard), with
//! 2 MiB pages wherever alignment allows, and the MMIO window identity-mapped uncached.
//!
//! 4-level paging, Intel SDM vol. 3A §4.5 / AMD APM vol. 2 §5.3: P bit 0, R/W bit 1, PWT
//! bit 3, PCD bit 4, PS bit 7 (in a PD entry: a 2 MiB page), address bits 51:12. The
//! BootInfo checks keep RAM below the window, which starts at 3 GiB, so at most one PML4
//! entry, four PDs (one per GiB) and two PTs (the first 2 MiB, and a ragged end) are needed.

use crate::image::GuestWriter;
use crate::layout::{
    MMIO_WINDOW_GPA, MMIO_WINDOW_SIZE, PAGE_SIZE, PAGE_TABLES_GPA, PAGE_TABLES_SIZE,
};

/// Page-table entry bits both Lazaret's builder and the guest (which adds a mapping for
/// rogue-mmio) use; the tests' walkers keep their own.
pub mod pte {
    pub const PRESENT: u64 = 1 << 0;
    pub const WRITABLE: u64 = 1 << 1;
    pub const WRITE_THROUGH: u64 = 1 << 3;
    pub const CACHE_DISABLE: u64 = 1 << 4;
    /// In a PDPT or PD entry: the entry maps a 1 GiB / 2 MiB page.
    pub const HUGE: u64 = 1 << 7;
    /// Bits 51:12: the next table or the page.
    pub const ADDRESS: u64 = 0x000f_ffff_ffff_f000;
}

use pte::{CACHE_DISABLE, HUGE, PRESENT, WRITABLE, WRITE_THROUGH};

const TABLE: u64 = PRESENT | WRITABLE;
const SIZE_2M: u64 = 1 << 21;
const SIZE_1G: u64 = 1 << 30;

/// What was built: CR3, and how many of the area's pages it took.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestPageTables {
    pub cr3: u64,
    pub pages: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageTableError<E> {
    /// RAM must be page-granular, reach past page 0 and end below the MMIO window.
    BadMemorySize(u64),
    /// The writer refused bytes at `gpa`.
    Write { gpa: u64, error: E },
}

/// Builds the tables through `write(gpa, bytes)` (table pages are zeroed first).
pub fn build_page_tables<E>(
    memory_size: u64,
    write: &mut GuestWriter<'_, E>,
) -> Result<GuestPageTables, PageTableError<E>> {
    let ok = memory_size.is_multiple_of(PAGE_SIZE)
        && memory_size > PAGE_SIZE
        && memory_size <= MMIO_WINDOW_GPA;
    if !ok {
        return Err(PageTableError::BadMemorySize(memory_size));
    }
    let mut t = Tables {
        next: PAGE_TABLES_GPA,
        write,
    };
    let pml4 = t.table()?;
    let pdpt = t.table()?;
    t.entry(pml4, 0, pdpt | TABLE)?;
    let mut pds = [0u64; 4];
    let mut pd_for = |t: &mut Tables<'_, '_, E>, gpa: u64| -> Result<u64, PageTableError<E>> {
        let gib = (gpa / SIZE_1G) as usize;
        if pds[gib] == 0 {
            pds[gib] = t.table()?;
            t.entry(pdpt, gib as u64, pds[gib] | TABLE)?;
        }
        Ok(pds[gib])
    };
    let mut gpa = 0;
    while gpa < memory_size {
        let pd = pd_for(&mut t, gpa)?;
        let index = (gpa / SIZE_2M) % 512;
        if gpa != 0 && memory_size - gpa >= SIZE_2M {
            t.entry(pd, index, gpa | TABLE | HUGE)?;
        } else {
            // 4 KiB pages: the first 2 MiB (page 0 left out) and a ragged end of RAM.
            let pt = t.table()?;
            t.entry(pd, index, pt | TABLE)?;
            let end = memory_size.min(gpa + SIZE_2M);
            let mut page = gpa.max(PAGE_SIZE);
            while page < end {
                t.entry(pt, (page / PAGE_SIZE) % 512, page | TABLE)?;
                page += PAGE_SIZE;
            }
        }
        gpa += SIZE_2M;
    }
    let uncached = TABLE | WRITE_THROUGH | CACHE_DISABLE | HUGE;
    let mut gpa = MMIO_WINDOW_GPA;
    while gpa < MMIO_WINDOW_GPA + MMIO_WINDOW_SIZE {
        let pd = pd_for(&mut t, gpa)?;
        t.entry(pd, (gpa / SIZE_2M) % 512, gpa | uncached)?;
        gpa += SIZE_2M;
    }
    Ok(GuestPageTables {
        cr3: pml4,
        pages: (t.next - PAGE_TABLES_GPA) / PAGE_SIZE,
    })
}

struct Tables<'a, 'w, E> {
    next: u64,
    write: &'a mut GuestWriter<'w, E>,
}

impl<E> Tables<'_, '_, E> {
    /// A zeroed table page from the area (the layout bounds the count well inside it).
    fn table(&mut self) -> Result<u64, PageTableError<E>> {
        static ZEROS: [u8; PAGE_SIZE as usize] = [0; PAGE_SIZE as usize];
        let page = self.next;
        debug_assert!(page + PAGE_SIZE <= PAGE_TABLES_GPA + PAGE_TABLES_SIZE);
        (self.write)(page, &ZEROS).map_err(|error| PageTableError::Write { gpa: page, error })?;
        self.next += PAGE_SIZE;
        Ok(page)
    }

    fn entry(&mut self, table: u64, index: u64, value: u64) -> Result<(), PageTableError<E>> {
        let gpa = table + index * 8;
        (self.write)(gpa, &value.to_le_bytes())
            .map_err(|error| PageTableError::Write { gpa, error })
    }
}
