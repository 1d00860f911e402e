//! I/O page tables of 4 KiB and 2 MiB pages (AMD IOMMU spec §2.2.3), 1 to 6 levels deep, for
//! guest domains: the shared [`lazaret_io_pagetable::PageTable`] over the [`IoPageTable`]
//! entry encoding. A 2 MiB page is a level-2 entry with NextLevel = 0: a PTE whose page size
//! is its level's (§2.2.3, "PDE with NextLevel 0"; the page-size encoding of NextLevel 7 is
//! not needed for sizes a level covers exactly). Table walks snoop (Control.Coherent), so
//! tables are written with plain [`PhysMem`](lazaret_types::PhysMem) stores.

use lazaret_io_pagetable::{EntryFormat, EntryKind, SnoopedWalks};
use lazaret_types::PhysAddr;

pub use lazaret_io_pagetable::PageSize;

use crate::levels::Levels;
pub use crate::pte::Perms;
use crate::pte::{address, is_present, leaf, next_level, pde, ADDR_MASK};
use crate::quarantine::UnityRange;

/// The I/O page-table entry encoding (§2.2.3) for the shared table code.
#[derive(Clone, Copy, Debug)]
pub enum IoPageTable {}

impl EntryFormat for IoPageTable {
    type Levels = Levels;
    type Perms = Perms;
    type Range = UnityRange;

    const MAX_ADDRESS: u64 = ADDR_MASK | 0xfff;

    /// Yes: the DTE then has translation on and every access walks into a not-present
    /// entry, which hardware logs as IO_PAGE_FAULT (§2.5.3), naming the device and address.
    /// The blocking DTE (Mode 0, IR = IW = 0) would refuse DMA too, but a refused Mode-0
    /// access is not a page fault, so nobody would learn which device tried.
    const EMPTY_ROOT_IN_BASIC_MODE: bool = true;

    fn table(table: PhysAddr, child_level: u32) -> u64 {
        pde(table, child_level)
    }

    /// A 2 MiB page is a 4 KiB leaf's encoding one level up (NextLevel 0).
    fn page(page: PhysAddr, perms: Perms, _level: u32) -> u64 {
        leaf(page, perms)
    }

    /// Pages only at level 1 and (NextLevel 0) level 2; a NextLevel other than the level
    /// below is not something these tables build.
    fn kind(entry: u64, level: u32) -> EntryKind {
        match (is_present(entry), level, next_level(entry)) {
            (false, _, _) => EntryKind::NotPresent,
            (true, 1, _) | (true, 2, 0) => EntryKind::Page(address(entry)),
            (true, l, n) if n == l - 1 => EntryKind::Table(address(entry)),
            _ => EntryKind::Foreign,
        }
    }

    fn perms(read: bool, write: bool) -> Perms {
        Perms { read, write }
    }

    fn access(entry: u64) -> (bool, bool) {
        let p = Perms::from_bits(entry);
        (p.read, p.write)
    }

    fn grants_nothing(perms: Perms) -> bool {
        perms.is_none()
    }
}

impl SnoopedWalks for IoPageTable {}

/// Why mapping failed.
pub type MapError = lazaret_io_pagetable::MapError<Levels>;

/// A mutable I/O page-table tree (a guest domain's). Not `Clone`: one owner frees it.
pub type PageTable = lazaret_io_pagetable::PageTable<IoPageTable>;

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

/// The AMD side of tables the shared code built: root and depth for a DTE.
pub trait Translated {
    /// Root and depth for [`crate::DeviceTableEntry::translated`].
    fn translation_root(&self) -> TranslationRoot;
}

impl Translated for PageTable {
    fn translation_root(&self) -> TranslationRoot {
        TranslationRoot::new(self.root(), self.levels())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::walker::walk_tables;
    use lazaret_types::sim::{SimFrameAllocator, SimMemory};
    use lazaret_types::FrameAllocator;

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
    use lazaret_types::FrameAllocator;

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
