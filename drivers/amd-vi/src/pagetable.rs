//! I/O page tables of 4 KiB and 2 MiB pages (AMD IOMMU spec §2.2.3), 1 to 6 levels deep, for
//! guest domains. A 2 MiB page is a level-2 entry with NextLevel = 0: a PTE whose page size is
//! its level's (§2.2.3, "PDE with NextLevel 0"; the page-size encoding of NextLevel 7 is not
//! needed for sizes a level covers exactly). Every table an operation needs is allocated before anything is linked, and a new
//! branch is linked with one final entry write, so an allocation failure leaves the tree
//! exactly as it was and the IOMMU never sees a half-built path.

use core::fmt;

use lazaret_types::{FrameAllocator, PhysAddr, PhysMem, PAGE_SIZE};

use crate::levels::Levels;
pub use crate::pte::Perms;
use crate::pte::{address, entry_addr, is_present, leaf, next_level, pde};

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
    /// An entry on the path is a large page or has an unexpected NextLevel (not built here).
    Foreign { iova: u64, level: u32 },
    /// A 4 KiB operation inside a 2 MiB page: unmap the whole large page instead.
    InsideLargePage { iova: u64 },
}

/// The size of one leaf.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PageSize {
    /// A PTE in a level-1 table.
    Size4K,
    /// A level-2 entry with NextLevel = 0.
    Size2M,
}

impl PageSize {
    pub const fn bytes(self) -> u64 {
        match self {
            PageSize::Size4K => PAGE_SIZE,
            PageSize::Size2M => PAGE_SIZE << 9,
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
            MapError::EmptyRange { start, end } => write!(f, "empty range {start:#x}..={end:#x}"),
            MapError::Foreign { iova, level } => {
                write!(f, "unexpected entry at level {level} for iova {iova:#x}")
            }
            MapError::InsideLargePage { iova } => {
                write!(f, "iova {iova:#x} lies inside a 2 MiB page")
            }
        }
    }
}

/// The pair a DTE needs: a table root and the depth it was built with. Only page tables of
/// this crate hand it out, so DTE\[Mode\] always equals the real depth (cf. XSA-445).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TranslationRoot {
    root: PhysAddr,
    levels: Levels,
}

impl TranslationRoot {
    pub(crate) const fn new(root: PhysAddr, levels: Levels) -> TranslationRoot {
        TranslationRoot { root, levels }
    }

    pub const fn root(self) -> PhysAddr {
        self.root
    }

    pub const fn levels(self) -> Levels {
        self.levels
    }
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

/// Page addresses of `[start, end_inclusive]`.
pub(crate) fn pages(start: u64, end_inclusive: u64) -> Result<impl Iterator<Item = u64>, MapError> {
    if end_inclusive < start {
        return Err(MapError::EmptyRange {
            start,
            end: end_inclusive,
        });
    }
    Ok((start / PAGE_SIZE..=end_inclusive / PAGE_SIZE).map(|p| p * PAGE_SIZE))
}

/// Where a walk for one IOVA stopped: the deepest existing table and its level, or a large
/// page on the way.
enum PathEnd {
    Table {
        table: PhysAddr,
        level: u32,
    },
    /// A level-2 entry with NextLevel 0 covers `iova`; `slot` is its address.
    LargePage {
        slot: PhysAddr,
        entry: u64,
    },
}

/// Follows present PDEs from `root` towards the table of `iova` at `leaf_level`.
fn descend<M: PhysMem + ?Sized>(
    mem: &M,
    root: PhysAddr,
    levels: Levels,
    iova: u64,
    leaf_level: u32,
) -> Result<PathEnd, MapError> {
    let mut table = root;
    let mut level = levels.count();
    while level > leaf_level {
        let slot = entry_addr(table, Levels::index(iova, level));
        let e = mem.read_u64(slot);
        if !is_present(e) {
            break;
        }
        if level == 2 && next_level(e) == 0 {
            return Ok(PathEnd::LargePage { slot, entry: e });
        }
        if next_level(e) != level - 1 {
            return Err(MapError::Foreign { iova, level });
        }
        table = address(e);
        level -= 1;
    }
    Ok(PathEnd::Table { table, level })
}

/// A mutable I/O page-table tree (a guest domain's). Not `Clone`: one owner frees it.
#[derive(Debug, PartialEq, Eq)]
pub struct PageTable {
    root: PhysAddr,
    levels: Levels,
}

impl PageTable {
    pub fn new<M, A>(mem: &M, alloc: &mut A, levels: Levels) -> Result<PageTable, MapError>
    where
        M: PhysMem + ?Sized,
        A: FrameAllocator + ?Sized,
    {
        let root = alloc.alloc_frame().ok_or(MapError::OutOfFrames)?;
        mem.zero(root, PAGE_SIZE);
        Ok(PageTable { root, levels })
    }

    pub fn root(&self) -> PhysAddr {
        self.root
    }

    pub fn levels(&self) -> Levels {
        self.levels
    }

    /// Root and depth for [`crate::DeviceTableEntry::translated`].
    pub fn translation_root(&self) -> TranslationRoot {
        TranslationRoot::new(self.root, self.levels)
    }

    /// Maps the 4 KiB page at `iova` to `pa`.
    pub fn map<M, A>(
        &mut self,
        mem: &M,
        alloc: &mut A,
        iova: u64,
        pa: PhysAddr,
        perms: Perms,
    ) -> Result<(), MapError>
    where
        M: PhysMem + ?Sized,
        A: FrameAllocator + ?Sized,
    {
        self.map_sized(mem, alloc, iova, pa, perms, PageSize::Size4K)
    }

    /// Maps one page of `size` at `iova` (both `iova` and `pa` aligned to it) to `pa`.
    pub fn map_sized<M, A>(
        &mut self,
        mem: &M,
        alloc: &mut A,
        iova: u64,
        pa: PhysAddr,
        perms: Perms,
        size: PageSize,
    ) -> Result<(), MapError>
    where
        M: PhysMem + ?Sized,
        A: FrameAllocator + ?Sized,
    {
        check_iova(self.levels, iova)?;
        let leaf_level = size.leaf_level();
        if !pa.0.is_multiple_of(size.bytes()) || !iova.is_multiple_of(size.bytes()) {
            return Err(MapError::Unaligned { iova, pa });
        }
        if leaf_level > self.levels.count() {
            return Err(MapError::BeyondAddressWidth {
                iova,
                levels: self.levels,
            });
        }
        if perms.is_none() {
            return Err(MapError::NoAccess);
        }
        let (table, level) = match descend(mem, self.root, self.levels, iova, leaf_level)? {
            PathEnd::LargePage { .. } => return Err(MapError::AlreadyMapped { iova }),
            PathEnd::Table { table, level } => (table, level),
        };
        // A 2 MiB page is a 4 KiB leaf's encoding one level up (NextLevel 0).
        let page = leaf(pa, perms);
        if level == leaf_level {
            // Present here is a page, or (for 2 MiB) a table of 4 KiB pages: both refuse.
            let slot = entry_addr(table, Levels::index(iova, leaf_level));
            if is_present(mem.read_u64(slot)) {
                return Err(MapError::AlreadyMapped { iova });
            }
            mem.write_u64(slot, page);
            return Ok(());
        }
        // Tables for levels level-1 down to leaf_level, all taken before anything is linked.
        let missing = (level - leaf_level) as usize;
        let mut new = [PhysAddr(0); 5];
        for i in 0..missing {
            match alloc.alloc_frame() {
                Some(f) => {
                    mem.zero(f, PAGE_SIZE);
                    new[i] = f;
                }
                None => {
                    new[..i].iter().for_each(|f| alloc.free_frame(*f));
                    return Err(MapError::OutOfFrames);
                }
            }
        }
        // new[i] is the table of level level-1-i; chain them, page last, link first last.
        for i in 0..missing {
            let table_level = level - 1 - i as u32;
            let slot = entry_addr(new[i], Levels::index(iova, table_level));
            let value = match new.get(i + 1) {
                Some(child) if i + 1 < missing => pde(*child, table_level - 1),
                _ => page,
            };
            mem.write_u64(slot, value);
        }
        let link = entry_addr(table, Levels::index(iova, level));
        mem.write_u64(link, pde(new[0], level - 1));
        Ok(())
    }

    /// Removes the leaf for `iova`; returns the page it mapped, if any (see
    /// [`PageTable::unmap_sized`]).
    pub fn unmap<M: PhysMem + ?Sized>(
        &mut self,
        mem: &M,
        iova: u64,
    ) -> Result<Option<PhysAddr>, MapError> {
        Ok(self.unmap_sized(mem, iova)?.map(|(pa, _)| pa))
    }

    /// Removes the page that starts at `iova`, 4 KiB or 2 MiB; returns it and its size (what
    /// the invalidation must cover). An `iova` inside a 2 MiB page but not at its start is
    /// refused. Tables stay (no allocation or freeing on unmap); [`PageTable::free`] takes
    /// them all.
    pub fn unmap_sized<M: PhysMem + ?Sized>(
        &mut self,
        mem: &M,
        iova: u64,
    ) -> Result<Option<(PhysAddr, PageSize)>, MapError> {
        check_iova(self.levels, iova)?;
        let table = match descend(mem, self.root, self.levels, iova, 1)? {
            PathEnd::LargePage { slot, entry } => {
                if !iova.is_multiple_of(PageSize::Size2M.bytes()) {
                    return Err(MapError::InsideLargePage { iova });
                }
                mem.write_u64(slot, 0);
                return Ok(Some((address(entry), PageSize::Size2M)));
            }
            PathEnd::Table { table, level: 1 } => table,
            PathEnd::Table { .. } => return Ok(None),
        };
        let slot = entry_addr(table, Levels::index(iova, 1));
        let e = mem.read_u64(slot);
        if !is_present(e) {
            return Ok(None);
        }
        mem.write_u64(slot, 0);
        Ok(Some((address(e), PageSize::Size4K)))
    }

    /// Maps `[start, end_inclusive]` 1:1. On failure, the pages this call mapped are unmapped
    /// again (tables it allocated stay in the tree until [`PageTable::free`]).
    pub fn identity_map<M, A>(
        &mut self,
        mem: &M,
        alloc: &mut A,
        start: u64,
        end_inclusive: u64,
        perms: Perms,
    ) -> Result<(), MapError>
    where
        M: PhysMem + ?Sized,
        A: FrameAllocator + ?Sized,
    {
        for page in pages(start, end_inclusive)? {
            if let Err(e) = self.map(mem, alloc, page, PhysAddr(page), perms) {
                for done in pages(start, end_inclusive)?.take_while(|p| *p < page) {
                    self.unmap(mem, done)?;
                }
                return Err(e);
            }
        }
        Ok(())
    }

    /// Gives every table back. Only once no DTE points here any more.
    pub fn free<M, A>(self, mem: &M, alloc: &mut A)
    where
        M: PhysMem + ?Sized,
        A: FrameAllocator + ?Sized,
    {
        free_tree(mem, alloc, self.root, self.levels.count());
    }
}

/// Frees the table at `table` (of `level`) and every table below it.
fn free_tree<M, A>(mem: &M, alloc: &mut A, table: PhysAddr, level: u32)
where
    M: PhysMem + ?Sized,
    A: FrameAllocator + ?Sized,
{
    if level > 1 {
        for i in 0..512 {
            let e = mem.read_u64(entry_addr(table, i));
            if is_present(e) && next_level(e) == level - 1 {
                free_tree(mem, alloc, address(e), level - 1);
            }
        }
    }
    alloc.free_frame(table);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::walker::walk_tables;
    use lazaret_types::sim::{SimFrameAllocator, SimMemory};

    fn setup(mem: &SimMemory) -> SimFrameAllocator<'_> {
        SimFrameAllocator::new(mem, PhysAddr(0x100_0000), 256)
    }

    #[test]
    fn map_walks_and_unmap_faults() {
        let mem = SimMemory::new();
        let mut a = setup(&mem);
        let mut pt = PageTable::new(&mem, &mut a, Levels::FOUR).unwrap();
        let iova = 0x7f12_3456_7000;
        pt.map(&mem, &mut a, iova, PhysAddr(0x5000), Perms::READ)
            .unwrap();
        assert_eq!(a.frames_in_use(), 4, "root + 3 lower tables");
        let root = pt.translation_root();
        assert_eq!(
            walk_tables(&mem, root.root(), root.levels().count(), iova + 0x10, false),
            Ok(PhysAddr(0x5010))
        );
        assert!(
            walk_tables(&mem, root.root(), root.levels().count(), iova, true).is_err(),
            "read-only"
        );
        assert_eq!(
            pt.map(&mem, &mut a, iova, PhysAddr(0x6000), Perms::READ),
            Err(MapError::AlreadyMapped { iova })
        );
        assert_eq!(pt.unmap(&mem, iova), Ok(Some(PhysAddr(0x5000))));
        assert!(walk_tables(&mem, root.root(), root.levels().count(), iova, false).is_err());
        assert_eq!(pt.unmap(&mem, iova), Ok(None));
        pt.free(&mem, &mut a);
        assert_eq!(a.frames_in_use(), 0);
    }

    #[test]
    fn rejects_bad_arguments() {
        let mem = SimMemory::new();
        let mut a = setup(&mem);
        let mut pt = PageTable::new(&mem, &mut a, Levels::THREE).unwrap();
        let pa = PhysAddr(0x5000);
        assert_eq!(
            pt.map(&mem, &mut a, 1 << 39, pa, Perms::READ),
            Err(MapError::BeyondAddressWidth {
                iova: 1 << 39,
                levels: Levels::THREE
            })
        );
        assert!(matches!(
            pt.map(&mem, &mut a, 0x1001, pa, Perms::READ),
            Err(MapError::Unaligned { .. })
        ));
        assert_eq!(
            pt.map(&mem, &mut a, 0x1000, pa, Perms::NONE),
            Err(MapError::NoAccess)
        );
        assert_eq!(
            pt.identity_map(&mem, &mut a, 0x2000, 0x1000, Perms::READ),
            Err(MapError::EmptyRange {
                start: 0x2000,
                end: 0x1000
            })
        );
        pt.free(&mem, &mut a);
    }

    #[test]
    fn allocation_failure_at_every_step_changes_nothing() {
        for fail_at in 0..3 {
            let mem = SimMemory::new();
            let mut a = setup(&mem);
            let mut pt = PageTable::new(&mem, &mut a, Levels::FOUR).unwrap();
            pt.map(&mem, &mut a, 0, PhysAddr(0x9000), Perms::READ_WRITE)
                .unwrap();
            let before = a.frames_in_use();
            let root = pt.translation_root();
            let far = 1 << 39; // shares only the root with iova 0: 3 new tables
            a.fail_allocation(fail_at);
            assert_eq!(
                pt.map(&mem, &mut a, far, PhysAddr(0xa000), Perms::READ),
                Err(MapError::OutOfFrames)
            );
            assert_eq!(a.frames_in_use(), before, "no leak (fail at {fail_at})");
            assert!(walk_tables(&mem, root.root(), root.levels().count(), far, false).is_err());
            assert_eq!(
                walk_tables(&mem, root.root(), root.levels().count(), 0, true),
                Ok(PhysAddr(0x9000))
            );
            pt.free(&mem, &mut a);
            assert_eq!(a.frames_in_use(), 0);
        }
    }

    #[test]
    fn identity_map_rolls_back_on_failure() {
        let mem = SimMemory::new();
        let mut a = setup(&mem);
        let mut pt = PageTable::new(&mem, &mut a, Levels::THREE).unwrap();
        let root = pt.translation_root();
        // 0x1ff000 and 0x200000 sit in different leaf tables: the second needs a new one.
        a.fail_allocation(2);
        assert_eq!(
            pt.identity_map(&mem, &mut a, 0x1ff000, 0x200fff, Perms::READ),
            Err(MapError::OutOfFrames)
        );
        assert!(walk_tables(&mem, root.root(), root.levels().count(), 0x1ff000, false).is_err());
        pt.identity_map(&mem, &mut a, 0x1ff000, 0x200fff, Perms::READ)
            .unwrap();
        assert_eq!(
            walk_tables(&mem, root.root(), root.levels().count(), 0x200123, false),
            Ok(PhysAddr(0x200123))
        );
        pt.free(&mem, &mut a);
        assert_eq!(a.frames_in_use(), 0);
    }
}

#[cfg(test)]
mod large_page_tests {
    use super::*;
    use crate::walker::walk_tables;
    use lazaret_types::sim::{SimFrameAllocator, SimMemory};

    const MIB2: u64 = 2 << 20;

    #[test]
    fn a_2m_page_is_one_level_2_entry_the_walker_translates() {
        let mem = SimMemory::new();
        let mut a = SimFrameAllocator::new(&mem, PhysAddr(0x100_0000), 64);
        let mut pt = PageTable::new(&mem, &mut a, Levels::FOUR).unwrap();
        let iova = 0x4060_0000;
        let pa = PhysAddr(0x8_0000_0000);
        pt.map_sized(&mem, &mut a, iova, pa, Perms::READ, PageSize::Size2M)
            .unwrap();
        assert_eq!(
            a.frames_in_use(),
            3,
            "root, level 3 and level 2: no level-1 table"
        );
        let n = pt.levels().count();
        assert_eq!(
            walk_tables(&mem, pt.root(), n, iova + 0x1f_f123, false),
            Ok(PhysAddr(0x8_001f_f123))
        );
        assert!(
            walk_tables(&mem, pt.root(), n, iova, true).is_err(),
            "read-only"
        );
        let inside = iova + 0x1000;
        assert_eq!(
            pt.map(&mem, &mut a, inside, PhysAddr(0x5000), Perms::READ),
            Err(MapError::AlreadyMapped { iova: inside })
        );
        assert_eq!(
            pt.unmap(&mem, inside),
            Err(MapError::InsideLargePage { iova: inside })
        );
        assert_eq!(pt.unmap_sized(&mem, iova), Ok(Some((pa, PageSize::Size2M))));
        assert!(walk_tables(&mem, pt.root(), n, iova, false).is_err());
        assert_eq!(pt.unmap_sized(&mem, iova), Ok(None));
        pt.free(&mem, &mut a);
        assert_eq!(a.frames_in_use(), 0);
    }

    #[test]
    fn a_2m_page_refuses_misalignment_and_a_range_holding_4k_pages() {
        let mem = SimMemory::new();
        let mut a = SimFrameAllocator::new(&mem, PhysAddr(0x100_0000), 64);
        let mut pt = PageTable::new(&mem, &mut a, Levels::THREE).unwrap();
        let size = PageSize::Size2M;
        for (iova, pa) in [(MIB2 + 0x1000, 0), (MIB2, 0x1000)] {
            assert!(matches!(
                pt.map_sized(&mem, &mut a, iova, PhysAddr(pa), Perms::READ, size),
                Err(MapError::Unaligned { .. })
            ));
        }
        pt.map(&mem, &mut a, MIB2 + 0x3000, PhysAddr(0x3000), Perms::READ)
            .unwrap();
        assert_eq!(
            pt.map_sized(&mem, &mut a, MIB2, PhysAddr(0), Perms::READ, size),
            Err(MapError::AlreadyMapped { iova: MIB2 })
        );
        assert_eq!(
            pt.unmap_sized(&mem, MIB2 + 0x3000),
            Ok(Some((PhysAddr(0x3000), PageSize::Size4K)))
        );
        let mut one = PageTable::new(&mem, &mut a, Levels::new(1).unwrap()).unwrap();
        assert!(matches!(
            one.map_sized(&mem, &mut a, 0, PhysAddr(0), Perms::READ, size),
            Err(MapError::BeyondAddressWidth { .. })
        ));
        one.free(&mem, &mut a);
        pt.free(&mem, &mut a);
        assert_eq!(a.frames_in_use(), 0);
    }

    #[test]
    fn every_allocation_failure_of_a_2m_map_leaks_nothing() {
        for fail in 0..2 {
            let mem = SimMemory::new();
            let mut a = SimFrameAllocator::new(&mem, PhysAddr(0x100_0000), 64);
            let mut pt = PageTable::new(&mem, &mut a, Levels::FOUR).unwrap();
            a.fail_allocation(fail);
            let pa = PhysAddr(0x4000_0000);
            assert_eq!(
                pt.map_sized(&mem, &mut a, MIB2, pa, Perms::READ, PageSize::Size2M),
                Err(MapError::OutOfFrames)
            );
            assert_eq!(a.frames_in_use(), 1, "fail at {fail}");
            assert!(walk_tables(&mem, pt.root(), 4, MIB2, false).is_err());
            pt.map_sized(&mem, &mut a, MIB2, pa, Perms::READ, PageSize::Size2M)
                .unwrap();
            pt.free(&mem, &mut a);
            assert_eq!(a.frames_in_use(), 0);
        }
    }
}
