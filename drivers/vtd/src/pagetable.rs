//! Second-level page tables of 4 KiB pages (§3.6, §9.8), 3, 4 or 5 levels deep. Guest domains
//! use these; every intermediate table an operation needs is allocated before anything is
//! linked, so an allocation failure leaves the tree exactly as it was.

use core::fmt;

use lazaret_types::{FrameAllocator, PhysAddr, PhysMem, PAGE_SIZE};

use crate::levels::Levels;
pub use crate::pte::Perms;
use crate::pte::{entry_addr, Pte};
use crate::table_memory::{CacheFlush, TableMemory};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// The frame allocator had no frame for a table (nothing was changed).
    OutOfFrames,
    /// IOVA or physical address not 4 KiB aligned.
    Unaligned { iova: u64, pa: PhysAddr },
    /// IOVA does not fit in the tables' address width.
    BeyondAddressWidth { iova: u64, levels: Levels },
    /// A leaf for this IOVA is already present: unmap it first.
    AlreadyMapped { iova: u64 },
    /// Neither read nor write requested: that is an unmap, not a map.
    NoAccess,
    /// `end` below `start`.
    EmptyRange { start: u64, end: u64 },
}

impl fmt::Display for MapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MapError::OutOfFrames => write!(f, "out of frames for IOMMU page tables"),
            MapError::Unaligned { iova, pa } => {
                write!(f, "iova {iova:#x} / pa {pa} not 4 KiB aligned")
            }
            MapError::BeyondAddressWidth { iova, levels } => {
                write!(f, "iova {iova:#x} beyond {levels} tables")
            }
            MapError::AlreadyMapped { iova } => write!(f, "iova {iova:#x} already mapped"),
            MapError::NoAccess => write!(f, "mapping without read or write permission"),
            MapError::EmptyRange { start, end } => {
                write!(f, "empty range {start:#x}..={end:#x}")
            }
        }
    }
}

/// Allocates `n` frames, or none: on failure every frame taken so far is given back.
pub(crate) fn alloc_frames<const N: usize>(
    alloc: &mut (impl FrameAllocator + ?Sized),
    n: usize,
) -> Result<[PhysAddr; N], MapError> {
    let mut frames = [PhysAddr(0); N];
    for i in 0..n.min(N) {
        match alloc.alloc_frame() {
            Some(f) => frames[i] = f,
            None => {
                frames[..i].iter().for_each(|f| alloc.free_frame(*f));
                return Err(MapError::OutOfFrames);
            }
        }
    }
    Ok(frames)
}

/// Checks an IOVA against the tables' width and page alignment.
pub(crate) fn check_iova(levels: Levels, iova: u64) -> Result<(), MapError> {
    if iova > levels.max_iova() {
        return Err(MapError::BeyondAddressWidth { iova, levels });
    }
    if !iova.is_multiple_of(PAGE_SIZE) {
        return Err(MapError::Unaligned {
            iova,
            pa: PhysAddr(0),
        });
    }
    Ok(())
}

/// Pages of `[start, end_inclusive]`, page-aligned.
pub(crate) fn pages(start: u64, end_inclusive: u64) -> Result<impl Iterator<Item = u64>, MapError> {
    if end_inclusive < start {
        return Err(MapError::EmptyRange {
            start,
            end: end_inclusive,
        });
    }
    let first = start / PAGE_SIZE;
    let last = end_inclusive / PAGE_SIZE;
    Ok((first..=last).map(|p| p * PAGE_SIZE))
}

/// A mutable second-level page table tree (a guest domain's). Not `Clone`: one owner frees it.
#[derive(Debug, PartialEq, Eq)]
pub struct PageTable {
    root: PhysAddr,
    levels: Levels,
}

impl PageTable {
    pub fn new<M, F, A>(
        tm: TableMemory<'_, M, F>,
        alloc: &mut A,
        levels: Levels,
    ) -> Result<PageTable, MapError>
    where
        M: PhysMem + ?Sized,
        F: CacheFlush + ?Sized,
        A: FrameAllocator + ?Sized,
    {
        let root = alloc.alloc_frame().ok_or(MapError::OutOfFrames)?;
        tm.fill_table(root, 0);
        Ok(PageTable { root, levels })
    }

    pub fn root(&self) -> PhysAddr {
        self.root
    }

    pub fn levels(&self) -> Levels {
        self.levels
    }

    /// Maps the 4 KiB page at `iova` to `pa`. Needed tables are allocated first and the new
    /// branch is linked with one final entry write, so hardware never sees a half-built path.
    pub fn map<M, F, A>(
        &mut self,
        tm: TableMemory<'_, M, F>,
        alloc: &mut A,
        iova: u64,
        pa: PhysAddr,
        perms: Perms,
    ) -> Result<(), MapError>
    where
        M: PhysMem + ?Sized,
        F: CacheFlush + ?Sized,
        A: FrameAllocator + ?Sized,
    {
        check_iova(self.levels, iova)?;
        if !pa.is_page_aligned() {
            return Err(MapError::Unaligned { iova, pa });
        }
        if !perms.read && !perms.write {
            return Err(MapError::NoAccess);
        }
        // Descend through existing tables.
        let mut table = self.root;
        let mut level = self.levels.count();
        while level > 1 {
            let e = Pte(tm.read_u64(entry_addr(table, iova, level)));
            if !e.present() {
                break;
            }
            table = e.addr();
            level -= 1;
        }
        let leaf = Pte::leaf(pa, perms);
        if level == 1 {
            let at = entry_addr(table, iova, 1);
            if Pte(tm.read_u64(at)).present() {
                return Err(MapError::AlreadyMapped { iova });
            }
            tm.write_entry(at, leaf.0);
            return Ok(());
        }
        // `level - 1` new tables, for levels level-1 down to 1.
        let need = (level - 1) as usize;
        let fresh: [PhysAddr; 4] = alloc_frames(alloc, need)?;
        let mut child_level = level - 1;
        for (i, t) in fresh[..need].iter().enumerate() {
            tm.fill_table(*t, 0);
            let value = match fresh[..need].get(i + 1) {
                Some(next) => Pte::table(*next).0,
                None => leaf.0,
            };
            tm.write_entry(entry_addr(*t, iova, child_level), value);
            child_level -= 1;
        }
        tm.write_entry(entry_addr(table, iova, level), Pte::table(fresh[0]).0);
        Ok(())
    }

    /// Removes the leaf for `iova`; returns the page it mapped, if any. Intermediate tables stay
    /// (they are freed with the tree). The caller owes an IOTLB invalidation.
    pub fn unmap<M, F>(
        &mut self,
        tm: TableMemory<'_, M, F>,
        iova: u64,
    ) -> Result<Option<PhysAddr>, MapError>
    where
        M: PhysMem + ?Sized,
        F: CacheFlush + ?Sized,
    {
        check_iova(self.levels, iova)?;
        let mut table = self.root;
        for level in (2..=self.levels.count()).rev() {
            let e = Pte(tm.read_u64(entry_addr(table, iova, level)));
            if !e.present() {
                return Ok(None);
            }
            table = e.addr();
        }
        let at = entry_addr(table, iova, 1);
        let old = Pte(tm.read_u64(at));
        if !old.present() {
            return Ok(None);
        }
        tm.write_entry(at, 0);
        Ok(Some(old.addr()))
    }

    /// Maps every page of `[start, end_inclusive]` to itself. On failure the pages this call
    /// mapped are unmapped again (tables it allocated stay in the tree until [`PageTable::free`]).
    pub fn identity_map<M, F, A>(
        &mut self,
        tm: TableMemory<'_, M, F>,
        alloc: &mut A,
        start: u64,
        end_inclusive: u64,
        perms: Perms,
    ) -> Result<(), MapError>
    where
        M: PhysMem + ?Sized,
        F: CacheFlush + ?Sized,
        A: FrameAllocator + ?Sized,
    {
        for page in pages(start, end_inclusive)? {
            if let Err(e) = self.map(tm, alloc, page, PhysAddr(page), perms) {
                for done in pages(start, end_inclusive)?.take_while(|p| *p < page) {
                    self.unmap(tm, done)?;
                }
                return Err(e);
            }
        }
        Ok(())
    }

    /// Frees every table of the tree (not the mapped pages).
    pub fn free<M, A>(self, mem: &M, alloc: &mut A)
    where
        M: PhysMem + ?Sized,
        A: FrameAllocator + ?Sized,
    {
        free_subtree(mem, alloc, self.root, self.levels.count());
    }
}

fn free_subtree<M, A>(mem: &M, alloc: &mut A, table: PhysAddr, level: u32)
where
    M: PhysMem + ?Sized,
    A: FrameAllocator + ?Sized,
{
    if level > 1 {
        for i in 0..512 {
            let e = Pte(mem.read_u64(PhysAddr(table.0 + i * 8)));
            if e.present() && !e.large() {
                free_subtree(mem, alloc, e.addr(), level - 1);
            }
        }
    }
    alloc.free_frame(table);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table_memory::test_flush::RecordingFlush;
    use lazaret_types::sim::{SimFrameAllocator, SimMemory};

    const BASE: PhysAddr = PhysAddr(0x100_0000);

    /// Software lookup used to check the tree shape (the walker module checks hardware rules).
    fn lookup(mem: &SimMemory, pt: &PageTable, iova: u64) -> Option<Pte> {
        let mut table = pt.root();
        for level in (2..=pt.levels().count()).rev() {
            let e = Pte(mem.read_u64(entry_addr(table, iova, level)));
            if !e.present() {
                return None;
            }
            table = e.addr();
        }
        Some(Pte(mem.read_u64(entry_addr(table, iova, 1)))).filter(|e| e.present())
    }

    #[test]
    fn map_allocates_one_table_per_missing_level_and_flushes_every_write() {
        let mem = SimMemory::new();
        let flush = RecordingFlush::default();
        let tm = TableMemory::new(&mem, &flush);
        let mut alloc = SimFrameAllocator::new(&mem, BASE, 64);
        let mut pt = PageTable::new(tm, &mut alloc, Levels::Four).unwrap();
        pt.map(tm, &mut alloc, 0x4000_0000, PhysAddr(0x8000), Perms::READ)
            .unwrap();
        assert_eq!(alloc.frames_in_use(), 4);
        // A neighbour shares all tables.
        pt.map(
            tm,
            &mut alloc,
            0x4000_1000,
            PhysAddr(0x9000),
            Perms::READ_WRITE,
        )
        .unwrap();
        assert_eq!(alloc.frames_in_use(), 4);
        let e = lookup(&mem, &pt, 0x4000_1000).unwrap();
        assert_eq!((e.addr(), e.writable()), (PhysAddr(0x9000), true));
        assert!(flush.covers(entry_addr(pt.root(), 0x4000_0000, 4), 8));
        assert_eq!(
            pt.map(tm, &mut alloc, 0x4000_0000, PhysAddr(0xa000), Perms::READ),
            Err(MapError::AlreadyMapped { iova: 0x4000_0000 })
        );
        assert_eq!(pt.unmap(tm, 0x4000_0000), Ok(Some(PhysAddr(0x8000))));
        assert_eq!(pt.unmap(tm, 0x4000_0000), Ok(None));
        assert_eq!(lookup(&mem, &pt, 0x4000_0000), None);
        pt.free(&mem, &mut alloc);
        assert_eq!(alloc.frames_in_use(), 0);
    }

    #[test]
    fn every_allocation_failure_in_map_leaks_nothing_and_changes_nothing() {
        for levels in Levels::ALL {
            for fail in 0..levels.count() as usize - 1 {
                let mem = SimMemory::new();
                let tm = TableMemory::coherent(&mem);
                let mut alloc = SimFrameAllocator::new(&mem, BASE, 64);
                let mut pt = PageTable::new(tm, &mut alloc, levels).unwrap();
                let before = alloc.frames_in_use();
                alloc.fail_allocation(fail);
                assert_eq!(
                    pt.map(tm, &mut alloc, 0x20_0000, PhysAddr(0x5000), Perms::READ),
                    Err(MapError::OutOfFrames)
                );
                assert_eq!(alloc.frames_in_use(), before, "{levels} fail at {fail}");
                assert_eq!(lookup(&mem, &pt, 0x20_0000), None);
                assert!((0..4096)
                    .step_by(8)
                    .all(|o| mem.read_u64(PhysAddr(pt.root().0 + o)) == 0));
                // And it works once memory is there.
                pt.map(tm, &mut alloc, 0x20_0000, PhysAddr(0x5000), Perms::READ)
                    .unwrap();
                pt.free(&mem, &mut alloc);
                assert_eq!(alloc.frames_in_use(), 0);
            }
        }
    }

    #[test]
    fn rejects_bad_arguments() {
        let mem = SimMemory::new();
        let tm = TableMemory::coherent(&mem);
        let mut alloc = SimFrameAllocator::new(&mem, BASE, 8);
        let mut pt = PageTable::new(tm, &mut alloc, Levels::Three).unwrap();
        assert!(matches!(
            pt.map(tm, &mut alloc, 1 << 39, PhysAddr(0), Perms::READ),
            Err(MapError::BeyondAddressWidth { .. })
        ));
        assert!(matches!(
            pt.map(tm, &mut alloc, 0x1000, PhysAddr(0x10), Perms::READ),
            Err(MapError::Unaligned { .. })
        ));
        let none = Perms {
            read: false,
            write: false,
            snoop: true,
        };
        assert_eq!(
            pt.map(tm, &mut alloc, 0x1000, PhysAddr(0x1000), none),
            Err(MapError::NoAccess)
        );
        assert!(matches!(
            pt.identity_map(tm, &mut alloc, 0x2000, 0x1000, Perms::READ),
            Err(MapError::EmptyRange { .. })
        ));
        assert_eq!(alloc.frames_in_use(), 1);
    }

    #[test]
    fn identity_map_covers_partial_pages_and_rolls_back_on_failure() {
        let mem = SimMemory::new();
        let tm = TableMemory::coherent(&mem);
        let mut alloc = SimFrameAllocator::new(&mem, BASE, 64);
        let mut pt = PageTable::new(tm, &mut alloc, Levels::Four).unwrap();
        pt.identity_map(tm, &mut alloc, 0xe_8000, 0xe_bfff, Perms::READ_WRITE)
            .unwrap();
        for p in [0xe_8000u64, 0xe_9000, 0xe_a000, 0xe_b000] {
            assert_eq!(lookup(&mem, &pt, p).map(|e| e.addr()), Some(PhysAddr(p)));
        }
        assert_eq!(lookup(&mem, &pt, 0xe_c000), None);
        // A range crossing into a new leaf table, failing at that table's allocation.
        alloc.fail_allocation(0);
        assert_eq!(
            pt.identity_map(tm, &mut alloc, 0x1f_e000, 0x20_0fff, Perms::READ),
            Err(MapError::OutOfFrames)
        );
        assert_eq!(lookup(&mem, &pt, 0x1f_e000), None);
        assert_eq!(lookup(&mem, &pt, 0x1f_f000), None);
        pt.free(&mem, &mut alloc);
        assert_eq!(alloc.frames_in_use(), 0);
    }
}
