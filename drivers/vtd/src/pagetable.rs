//! Second-level page tables of 4 KiB and 2 MiB pages (§3.6, §9.8), 3, 4 or 5 levels deep.
//! A 2 MiB leaf is a PDE with PS = 1, legal only where CAP.SLLPS bit 0 says so (§10.4.2):
//! the caller checks the unit, these tables do not know it. Guest domains
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
    /// A 4 KiB operation inside a 2 MiB leaf: unmap the whole large page instead.
    InsideLargePage { iova: u64 },
}

/// The size of one leaf.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PageSize {
    /// A PTE (level 1).
    Size4K,
    /// A PDE with PS = 1 (level 2).
    Size2M,
}

impl PageSize {
    pub const fn bytes(self) -> u64 {
        PAGE_SIZE << self.order()
    }

    /// log2 of the number of 4 KiB pages: the invalidation's address mask (§6.5.1.3).
    pub const fn order(self) -> u8 {
        match self {
            PageSize::Size4K => 0,
            PageSize::Size2M => 9,
        }
    }

    const fn leaf_level(self) -> u32 {
        match self {
            PageSize::Size4K => 1,
            PageSize::Size2M => 2,
        }
    }
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
            MapError::InsideLargePage { iova } => {
                write!(f, "iova {iova:#x} lies inside a 2 MiB page")
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

    /// Maps the 4 KiB page at `iova` to `pa`.
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
        self.map_sized(tm, alloc, iova, pa, perms, PageSize::Size4K)
    }

    /// Maps one page of `size` at `iova` (both `iova` and `pa` aligned to it) to `pa`. Needed
    /// tables are allocated first and the new branch is linked with one final entry write, so
    /// hardware never sees a half-built path.
    pub fn map_sized<M, F, A>(
        &mut self,
        tm: TableMemory<'_, M, F>,
        alloc: &mut A,
        iova: u64,
        pa: PhysAddr,
        perms: Perms,
        size: PageSize,
    ) -> Result<(), MapError>
    where
        M: PhysMem + ?Sized,
        F: CacheFlush + ?Sized,
        A: FrameAllocator + ?Sized,
    {
        check_iova(self.levels, iova)?;
        if !pa.0.is_multiple_of(size.bytes()) || !iova.is_multiple_of(size.bytes()) {
            return Err(MapError::Unaligned { iova, pa });
        }
        if !perms.read && !perms.write {
            return Err(MapError::NoAccess);
        }
        let leaf_level = size.leaf_level();
        // Descend through existing tables.
        let mut table = self.root;
        let mut level = self.levels.count();
        while level > leaf_level {
            let e = Pte(tm.read_u64(entry_addr(table, iova, level)));
            if !e.present() {
                break;
            }
            if e.large() {
                return Err(MapError::AlreadyMapped { iova });
            }
            table = e.addr();
            level -= 1;
        }
        let leaf = match size {
            PageSize::Size4K => Pte::leaf(pa, perms),
            PageSize::Size2M => Pte::large_leaf(pa, perms),
        };
        if level == leaf_level {
            // Present here is a leaf, or (for 2 MiB) a table of 4 KiB pages: both refuse.
            let at = entry_addr(table, iova, leaf_level);
            if Pte(tm.read_u64(at)).present() {
                return Err(MapError::AlreadyMapped { iova });
            }
            tm.write_entry(at, leaf.0);
            return Ok(());
        }
        // `level - leaf_level` new tables, for levels level-1 down to leaf_level.
        let need = (level - leaf_level) as usize;
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

    /// Removes the leaf for `iova`; returns the page it mapped, if any (see
    /// [`PageTable::unmap_sized`]).
    pub fn unmap<M, F>(
        &mut self,
        tm: TableMemory<'_, M, F>,
        iova: u64,
    ) -> Result<Option<PhysAddr>, MapError>
    where
        M: PhysMem + ?Sized,
        F: CacheFlush + ?Sized,
    {
        Ok(self.unmap_sized(tm, iova)?.map(|(pa, _)| pa))
    }

    /// Removes the leaf that starts at `iova`, 4 KiB or 2 MiB; returns the page it mapped and
    /// its size (what the IOTLB invalidation must cover). An `iova` inside a 2 MiB leaf but
    /// not at its start is refused. Intermediate tables stay (they are freed with the tree).
    pub fn unmap_sized<M, F>(
        &mut self,
        tm: TableMemory<'_, M, F>,
        iova: u64,
    ) -> Result<Option<(PhysAddr, PageSize)>, MapError>
    where
        M: PhysMem + ?Sized,
        F: CacheFlush + ?Sized,
    {
        check_iova(self.levels, iova)?;
        let mut table = self.root;
        for level in (2..=self.levels.count()).rev() {
            let at = entry_addr(table, iova, level);
            let e = Pte(tm.read_u64(at));
            if !e.present() {
                return Ok(None);
            }
            if e.large() {
                // Only PDEs are ever built large here.
                if level != 2 || !iova.is_multiple_of(PageSize::Size2M.bytes()) {
                    return Err(MapError::InsideLargePage { iova });
                }
                tm.write_entry(at, 0);
                return Ok(Some((e.addr(), PageSize::Size2M)));
            }
            table = e.addr();
        }
        let at = entry_addr(table, iova, 1);
        let old = Pte(tm.read_u64(at));
        if !old.present() {
            return Ok(None);
        }
        tm.write_entry(at, 0);
        Ok(Some((old.addr(), PageSize::Size4K)))
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

#[cfg(test)]
mod large_page_tests {
    use super::*;
    use crate::walker::{walk, Fault, WalkerConfig};
    use lazaret_types::sim::{SimFrameAllocator, SimMemory};

    const BASE: PhysAddr = PhysAddr(0x100_0000);
    const MIB2: u64 = 2 << 20;

    #[test]
    fn a_2m_leaf_is_one_pde_the_walker_translates_where_sllps_allows() {
        let mem = SimMemory::new();
        let tm = TableMemory::coherent(&mem);
        let mut alloc = SimFrameAllocator::new(&mem, BASE, 64);
        let mut pt = PageTable::new(tm, &mut alloc, Levels::Four).unwrap();
        let iova = 0x4060_0000;
        let size = PageSize::Size2M;
        pt.map_sized(
            tm,
            &mut alloc,
            iova,
            PhysAddr(0x8_0000_0000),
            Perms::READ,
            size,
        )
        .unwrap();
        assert_eq!(alloc.frames_in_use(), 3, "root, PDPT and PD: no leaf table");
        let n = pt.levels().count();
        let leaf = walk(
            &WalkerConfig::PERMISSIVE,
            &mem,
            pt.root(),
            n,
            iova + 0x1f_f123,
            false,
        )
        .unwrap();
        assert_eq!(leaf.page_bits, 21);
        assert_eq!(leaf.address(iova + 0x1f_f123), PhysAddr(0x8_001f_f123));
        assert!(!leaf.writable);
        let no_large = WalkerConfig {
            sllps: 0,
            ..WalkerConfig::PERMISSIVE
        };
        assert_eq!(
            walk(&no_large, &mem, pt.root(), n, iova, false),
            Err(Fault::PteReserved { level: 2 })
        );
        // Nothing can be mapped inside it, nor unmapped piecemeal.
        let inside = iova + 0x1000;
        assert_eq!(
            pt.map(tm, &mut alloc, inside, PhysAddr(0x5000), Perms::READ),
            Err(MapError::AlreadyMapped { iova: inside })
        );
        assert_eq!(
            pt.unmap(tm, inside),
            Err(MapError::InsideLargePage { iova: inside })
        );
        assert_eq!(
            pt.unmap_sized(tm, iova),
            Ok(Some((PhysAddr(0x8_0000_0000), PageSize::Size2M)))
        );
        assert!(walk(&WalkerConfig::PERMISSIVE, &mem, pt.root(), n, iova, false).is_err());
        assert_eq!(pt.unmap_sized(tm, iova), Ok(None));
        pt.free(&mem, &mut alloc);
        assert_eq!(alloc.frames_in_use(), 0);
    }

    #[test]
    fn a_2m_leaf_refuses_misalignment_and_a_range_holding_4k_pages() {
        let mem = SimMemory::new();
        let tm = TableMemory::coherent(&mem);
        let mut alloc = SimFrameAllocator::new(&mem, BASE, 64);
        let mut pt = PageTable::new(tm, &mut alloc, Levels::Three).unwrap();
        let size = PageSize::Size2M;
        for (iova, pa) in [(MIB2 + 0x1000, 0), (MIB2, 0x1000)] {
            assert!(matches!(
                pt.map_sized(tm, &mut alloc, iova, PhysAddr(pa), Perms::READ, size),
                Err(MapError::Unaligned { .. })
            ));
        }
        pt.map(tm, &mut alloc, MIB2 + 0x3000, PhysAddr(0x3000), Perms::READ)
            .unwrap();
        assert_eq!(
            pt.map_sized(tm, &mut alloc, MIB2, PhysAddr(0), Perms::READ, size),
            Err(MapError::AlreadyMapped { iova: MIB2 })
        );
        assert_eq!(
            pt.unmap_sized(tm, MIB2 + 0x3000),
            Ok(Some((PhysAddr(0x3000), PageSize::Size4K)))
        );
        pt.free(&mem, &mut alloc);
        assert_eq!(alloc.frames_in_use(), 0);
    }

    #[test]
    fn every_allocation_failure_of_a_2m_map_leaks_nothing() {
        for levels in Levels::ALL {
            for fail in 0..levels.count() as usize - 2 {
                let mem = SimMemory::new();
                let tm = TableMemory::coherent(&mem);
                let mut alloc = SimFrameAllocator::new(&mem, BASE, 64);
                let mut pt = PageTable::new(tm, &mut alloc, levels).unwrap();
                alloc.fail_allocation(fail);
                let pa = PhysAddr(0x4000_0000);
                assert_eq!(
                    pt.map_sized(tm, &mut alloc, MIB2, pa, Perms::READ, PageSize::Size2M),
                    Err(MapError::OutOfFrames)
                );
                assert_eq!(alloc.frames_in_use(), 1, "{levels} fail at {fail}");
                pt.map_sized(tm, &mut alloc, MIB2, pa, Perms::READ, PageSize::Size2M)
                    .unwrap();
                assert_eq!(alloc.frames_in_use(), levels.count() as usize - 1);
                pt.free(&mem, &mut alloc);
                assert_eq!(alloc.frames_in_use(), 0);
            }
        }
    }
}
