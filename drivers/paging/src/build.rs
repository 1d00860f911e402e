//! The builder: validates the whole list first, then writes leaves top-down, allocating each
//! table the first time a mapping needs it. Every page it takes is recorded, so a failure
//! gives them all back and [`PageTables::free`] never reads the (possibly guest-writable)
//! tables to find them.
use alloc::vec::Vec;

use lazaret_types::{FrameAllocator, PhysAddr, PhysMem, PAGE_SIZE};

use crate::entry::{
    index, ADDR_MASK, CACHE_DISABLE, LARGE, NO_EXECUTE, PRESENT, USER, WRITABLE, WRITE_THROUGH,
};
use crate::mapping::{check_all, Cache, Config, Format, Mapping, PagingError, LARGE_PAGE_SIZE};

const LEVELS: u32 = 4;

/// What building cost, for the figures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Entries written (table pointers and leaves; zeroing a fresh table not counted).
    pub pte_writes: u64,
    pub leaves_4k: u64,
    pub leaves_2m: u64,
    pub table_pages: u64,
}

/// A built tree. Not `Clone`: one owner frees it.
#[derive(Debug, PartialEq, Eq)]
pub struct PageTables {
    root: PhysAddr,
    pages: Vec<PhysAddr>,
    counts: Counts,
}

impl PageTables {
    /// The PML4, in the address space of the allocator (host-physical for nested tables: the
    /// VMCB's N_CR3; guest-physical for the guest's own: its CR3).
    pub fn root(&self) -> PhysAddr {
        self.root
    }

    /// Every table page, root first.
    pub fn pages(&self) -> &[PhysAddr] {
        &self.pages
    }

    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// Gives every table page back to `alloc` (the one that built them). Never allocates.
    pub fn free(self, alloc: &mut (impl FrameAllocator + ?Sized)) {
        give_back(self.pages, alloc);
    }
}

fn give_back(pages: Vec<PhysAddr>, alloc: &mut (impl FrameAllocator + ?Sized)) {
    pages.into_iter().for_each(|p| alloc.free_frame(p));
}

/// Builds 4-level tables mapping every `mappings` entry. On any error nothing stays allocated.
pub fn build<M, A>(
    mem: &M,
    alloc: &mut A,
    config: Config,
    mappings: &[Mapping],
) -> Result<PageTables, PagingError>
where
    M: PhysMem + ?Sized,
    A: FrameAllocator + ?Sized,
{
    check_all(mappings, config)?;
    let mut b = Builder {
        mem,
        alloc,
        config,
        pages: Vec::new(),
        counts: Counts::default(),
    };
    let built = b.table().and_then(|root| {
        mappings.iter().try_for_each(|m| b.map(root, m))?;
        Ok(root)
    });
    let Builder { pages, counts, .. } = b;
    match built {
        Ok(root) => Ok(PageTables {
            root,
            pages,
            counts,
        }),
        Err(e) => {
            give_back(pages, alloc);
            Err(e)
        }
    }
}

struct Builder<'a, M: ?Sized, A: ?Sized> {
    mem: &'a M,
    alloc: &'a mut A,
    config: Config,
    pages: Vec<PhysAddr>,
    counts: Counts,
}

impl<M: PhysMem + ?Sized, A: FrameAllocator + ?Sized> Builder<'_, M, A> {
    /// A fresh zeroed table, recorded before anything points to it.
    fn table(&mut self) -> Result<PhysAddr, PagingError> {
        self.pages
            .try_reserve(1)
            .map_err(|_| PagingError::OutOfMemory)?;
        let page = self.alloc.alloc_frame().ok_or(PagingError::OutOfMemory)?;
        self.pages.push(page);
        if !page.is_page_aligned() {
            return Err(PagingError::Inconsistent);
        }
        self.mem.zero(page, PAGE_SIZE);
        self.counts.table_pages += 1;
        Ok(page)
    }

    fn write(&mut self, table: PhysAddr, addr: u64, level: u32, value: u64) {
        self.mem
            .write_u64(PhysAddr(table.0 + index(addr, level) * 8), value);
        self.counts.pte_writes += 1;
    }

    fn read(&self, table: PhysAddr, addr: u64, level: u32) -> u64 {
        self.mem
            .read_u64(PhysAddr(table.0 + index(addr, level) * 8))
    }

    /// The U bit this format wants on every entry.
    fn user(&self) -> u64 {
        match self.config.format {
            Format::Nested => USER,
            Format::Guest => 0,
        }
    }

    fn map(&mut self, root: PhysAddr, m: &Mapping) -> Result<(), PagingError> {
        let mut leaf_bits = PRESENT | self.user();
        if m.writable {
            leaf_bits |= WRITABLE;
        }
        if !m.executable {
            leaf_bits |= NO_EXECUTE;
        }
        if m.cache == Cache::Uncached {
            leaf_bits |= CACHE_DISABLE | WRITE_THROUGH;
        }
        let mut offset = 0;
        while offset < m.len {
            let (gpa, hpa) = (m.gpa + offset, m.hpa + offset);
            let large = gpa.is_multiple_of(LARGE_PAGE_SIZE)
                && hpa.is_multiple_of(LARGE_PAGE_SIZE)
                && m.len - offset >= LARGE_PAGE_SIZE;
            let (level, size, bits) = if large {
                (2, LARGE_PAGE_SIZE, leaf_bits | LARGE)
            } else {
                (1, PAGE_SIZE, leaf_bits)
            };
            let table = self.table_for(root, gpa, level)?;
            if self.read(table, gpa, level) & PRESENT != 0 {
                // Validated mappings never share a leaf slot.
                return Err(PagingError::Inconsistent);
            }
            self.write(table, gpa, level, (hpa & ADDR_MASK) | bits);
            if large {
                self.counts.leaves_2m += 1;
            } else {
                self.counts.leaves_4k += 1;
            }
            offset += size;
        }
        Ok(())
    }

    /// The table at `level` on `gpa`'s path, creating the missing ones above it.
    fn table_for(&mut self, root: PhysAddr, gpa: u64, level: u32) -> Result<PhysAddr, PagingError> {
        let mut table = root;
        for l in (level + 1..=LEVELS).rev() {
            let e = self.read(table, gpa, l);
            table = if e & PRESENT != 0 {
                if e & LARGE != 0 {
                    return Err(PagingError::Inconsistent);
                }
                PhysAddr(e & ADDR_MASK)
            } else {
                let next = self.table()?;
                let bits = PRESENT | WRITABLE | self.user();
                self.write(table, gpa, l, next.0 | bits);
                next
            };
        }
        Ok(table)
    }
}
