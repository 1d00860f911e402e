//! I/O page tables of 4 KiB pages (AMD IOMMU spec §2.2.3), 1 to 6 levels deep, for guest
//! domains. Every table an operation needs is allocated before anything is linked, and a new
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

/// Where a walk for one IOVA stopped: the deepest existing table and its level.
struct PathEnd {
    table: PhysAddr,
    level: u32,
}

/// Follows present PDEs from `root` towards the leaf table of `iova`.
fn descend<M: PhysMem + ?Sized>(
    mem: &M,
    root: PhysAddr,
    levels: Levels,
    iova: u64,
) -> Result<PathEnd, MapError> {
    let mut table = root;
    let mut level = levels.count();
    while level > 1 {
        let e = mem.read_u64(entry_addr(table, Levels::index(iova, level)));
        if !is_present(e) {
            break;
        }
        if next_level(e) != level - 1 {
            return Err(MapError::Foreign { iova, level });
        }
        table = address(e);
        level -= 1;
    }
    Ok(PathEnd { table, level })
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
        check_iova(self.levels, iova)?;
        if !pa.is_page_aligned() {
            return Err(MapError::Unaligned { iova, pa });
        }
        if perms.is_none() {
            return Err(MapError::NoAccess);
        }
        let end = descend(mem, self.root, self.levels, iova)?;
        if end.level == 1 {
            let slot = entry_addr(end.table, Levels::index(iova, 1));
            if is_present(mem.read_u64(slot)) {
                return Err(MapError::AlreadyMapped { iova });
            }
            mem.write_u64(slot, leaf(pa, perms));
            return Ok(());
        }
        // Tables for levels end.level-1 down to 1, all taken before anything is linked.
        let missing = (end.level - 1) as usize;
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
        // new[i] is the table of level end.level-1-i; chain them, leaf last, link first last.
        for i in 0..missing {
            let level = end.level - 1 - i as u32;
            let slot = entry_addr(new[i], Levels::index(iova, level));
            let value = match new.get(i + 1) {
                Some(child) if i + 1 < missing => pde(*child, level - 1),
                _ => leaf(pa, perms),
            };
            mem.write_u64(slot, value);
        }
        let link = entry_addr(end.table, Levels::index(iova, end.level));
        mem.write_u64(link, pde(new[0], end.level - 1));
        Ok(())
    }

    /// Removes the leaf for `iova`; returns the page it mapped, if any. Tables stay (no
    /// allocation or freeing on unmap); [`PageTable::free`] takes them all.
    pub fn unmap<M: PhysMem + ?Sized>(
        &mut self,
        mem: &M,
        iova: u64,
    ) -> Result<Option<PhysAddr>, MapError> {
        check_iova(self.levels, iova)?;
        let end = descend(mem, self.root, self.levels, iova)?;
        if end.level != 1 {
            return Ok(None);
        }
        let slot = entry_addr(end.table, Levels::index(iova, 1));
        let e = mem.read_u64(slot);
        if !is_present(e) {
            return Ok(None);
        }
        mem.write_u64(slot, 0);
        Ok(Some(address(e)))
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
