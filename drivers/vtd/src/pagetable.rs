//! Second-level page tables of 4 KiB and 2 MiB pages (§3.6, §9.8), 3, 4 or 5 levels deep:
//! the shared [`lazaret_io_pagetable::PageTable`] over the [`SecondLevel`] entry encoding.
//! A 2 MiB leaf is a PDE with PS = 1, legal only where CAP.SLLPS bit 0 says so (§10.4.2):
//! the caller checks the unit, these tables do not know it. Every write goes through
//! [`TableMemory`], so a non-coherent unit (ECAP.C = 0) sees it.

use lazaret_io_pagetable::{EntryFormat, EntryKind, TableWriter};
use lazaret_types::{PhysAddr, PhysMem};

pub use lazaret_io_pagetable::PageSize;

use crate::levels::Levels;
pub use crate::pte::Perms;
use crate::pte::{Pte, ADDR_MASK};
use crate::table_memory::{CacheFlush, TableMemory};

/// The second-level entry encoding (§9.8) for the shared table code.
#[derive(Clone, Copy, Debug)]
pub enum SecondLevel {}

impl EntryFormat for SecondLevel {
    type Levels = Levels;
    type Perms = Perms;
    /// An RMRR `(start, end_inclusive)`: always read/write.
    type Range = (u64, u64);

    const MAX_ADDRESS: u64 = ADDR_MASK | 0xfff;

    /// No: with no RMRR a not-present context entry blocks all DMA and the fault record
    /// still names the requester (§7.1.3, reason 2h), so an empty root would only cost a
    /// frame.
    const EMPTY_ROOT_IN_BASIC_MODE: bool = false;

    fn table(table: PhysAddr, _child_level: u32) -> u64 {
        Pte::table(table).0
    }

    fn page(page: PhysAddr, perms: Perms, level: u32) -> u64 {
        match level {
            1 => Pte::leaf(page, perms).0,
            _ => Pte::large_leaf(page, perms).0,
        }
    }

    fn kind(entry: u64, level: u32) -> EntryKind {
        let e = Pte(entry);
        match (e.present(), level == 1 || e.large()) {
            (false, _) => EntryKind::NotPresent,
            (true, true) => EntryKind::Page(e.addr()),
            (true, false) => EntryKind::Table(e.addr()),
        }
    }

    fn perms(read: bool, write: bool) -> Perms {
        Perms {
            read,
            write,
            snoop: false,
        }
    }

    fn access(entry: u64) -> (bool, bool) {
        (Pte(entry).readable(), Pte(entry).writable())
    }

    fn grants_nothing(perms: Perms) -> bool {
        !perms.read && !perms.write
    }
}

impl<M: PhysMem + ?Sized, F: CacheFlush + ?Sized> TableWriter<SecondLevel>
    for TableMemory<'_, M, F>
{
    fn read_u64(&self, addr: PhysAddr) -> u64 {
        TableMemory::read_u64(self, addr)
    }

    fn write_entry(&self, addr: PhysAddr, value: u64) {
        TableMemory::write_entry(self, addr, value);
    }

    fn fill_table(&self, table: PhysAddr, entry: u64) {
        TableMemory::fill_table(self, table, entry);
    }

    fn zero_page(&self, page: PhysAddr) {
        self.mem().zero(page, lazaret_types::PAGE_SIZE);
    }
}

/// Why mapping failed.
pub type MapError = lazaret_io_pagetable::MapError<Levels>;

/// A mutable second-level page table tree (a guest domain's). Not `Clone`: one owner frees it.
pub type PageTable = lazaret_io_pagetable::PageTable<SecondLevel>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pte::entry_addr;
    use crate::table_memory::test_flush::RecordingFlush;
    use lazaret_types::sim::{SimFrameAllocator, SimMemory};
    use lazaret_types::FrameAllocator;

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
        assert_eq!(
            e.0 & (1 << 7),
            0,
            "PS is a PDE bit: a 4 KiB PTE leaves it clear (§9.8)"
        );
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
    use lazaret_types::FrameAllocator;

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
