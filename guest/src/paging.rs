//! Mapping one more 2 MiB page into the guest's own page tables: the *rogue-mmio* variant
//! reads the IOMMU's registers at their host-physical address, which Lazaret's identity map
//! of guest RAM and the MMIO window does not cover. Mapped (identity, uncached) in the
//! guest's tables, the read leaves the guest's own translation and meets nested paging,
//! which must end the guest with a nested page fault, not a guest #PF.
//!
//! 4-level paging, Intel SDM vol. 3A §4.5 / AMD APM vol. 2 §5.3.

const PRESENT: u64 = 1 << 0;
const WRITABLE: u64 = 1 << 1;
const WRITE_THROUGH: u64 = 1 << 3;
const CACHE_DISABLE: u64 = 1 << 4;
/// In a PDPT or PD entry: the entry maps a 1 GiB / 2 MiB page.
const HUGE: u64 = 1 << 7;
/// Bits 51:12: the next table or the page.
const ADDRESS: u64 = 0x000f_ffff_ffff_f000;

use crate::Platform;

const PAGE_2M: u64 = 1 << 21;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mapped {
    /// The walk met a present leaf or table already: the address was mapped before.
    Already,
    /// A new 2 MiB leaf was written.
    New,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// Above the 48-bit canonical lower half.
    NotCanonical(u64),
    /// A table pointer outside guest RAM: the walk would read what is not ours.
    BadTable(u64),
    /// No free page left for a missing table.
    OutOfPages,
}

impl core::fmt::Display for MapError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            MapError::NotCanonical(a) => write!(f, "{a:#x} is not a canonical lower-half address"),
            MapError::BadTable(t) => write!(f, "page table at {t:#x} is outside guest RAM"),
            MapError::OutOfPages => write!(f, "no free page for a page table"),
        }
    }
}

/// Free pages of guest RAM for new tables: `[next, end)`, page-aligned.
pub struct PagePool {
    pub next: u64,
    pub end: u64,
}

impl PagePool {
    fn take(&mut self) -> Option<u64> {
        let page = self.next;
        (page < self.end).then(|| {
            self.next += 0x1000;
            page
        })
    }
}

/// Identity-maps the 2 MiB page holding `va`, uncached, unless something already maps it.
pub fn map_uncached_2m<P: Platform>(
    p: &P,
    va: u64,
    memory_size: u64,
    pool: &mut PagePool,
) -> Result<Mapped, MapError> {
    if va >= 1 << 47 {
        return Err(MapError::NotCanonical(va));
    }
    let mut table = p.cr3() & ADDRESS;
    // PML4 (bits 47:39), then PDPT (38:30): descend, creating tables where absent.
    for shift in [39, 30] {
        let slot = entry_at(table, va, shift, memory_size)?;
        let entry = read_u64(p, slot);
        if entry & PRESENT == 0 {
            let new = pool.take().ok_or(MapError::OutOfPages)?;
            p.write_ram(new, &[0; 4096]);
            write_u64(p, slot, new | PRESENT | WRITABLE);
            table = new;
        } else if entry & HUGE != 0 && shift == 30 {
            return Ok(Mapped::Already);
        } else {
            table = entry & ADDRESS;
        }
    }
    // PD (29:21): the 2 MiB leaf.
    let slot = entry_at(table, va, 21, memory_size)?;
    if read_u64(p, slot) & PRESENT != 0 {
        return Ok(Mapped::Already);
    }
    let leaf = (va & !(PAGE_2M - 1)) | PRESENT | WRITABLE | WRITE_THROUGH | CACHE_DISABLE | HUGE;
    write_u64(p, slot, leaf);
    p.invlpg(va);
    Ok(Mapped::New)
}

/// The gpa of `va`'s entry in `table` at the level indexed by bits `shift + 8 .. shift`.
fn entry_at(table: u64, va: u64, shift: u32, memory_size: u64) -> Result<u64, MapError> {
    if table.saturating_add(0x1000) > memory_size {
        return Err(MapError::BadTable(table));
    }
    Ok(table + ((va >> shift) & 0x1ff) * 8)
}

fn read_u64<P: Platform>(p: &P, gpa: u64) -> u64 {
    let mut b = [0; 8];
    p.read_ram(gpa, &mut b);
    u64::from_le_bytes(b)
}

fn write_u64<P: Platform>(p: &P, gpa: u64, value: u64) {
    p.write_ram(gpa, &value.to_le_bytes());
}
