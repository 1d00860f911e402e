//! Per-device quarantine tables (design §4; Xen's "scratch page" quarantine since XSA-400):
//! the shared [`lazaret_io_pagetable::QuarantineTables`] over the [`SecondLevel`] encoding,
//! built through [`TableMemory`](crate::TableMemory).
//!
//! * scratch mode: `levels + 1` pages, every IOVA → the device's own zeroed scratch page; RMRR
//!   ranges identity-mapped (R/W) on private paths.
//! * basic mode: only the RMRR identity maps; with no RMRR there are no tables at all and the
//!   context entry is not present (all DMA faults, and the fault names the requester).

pub use lazaret_io_pagetable::QuarantineError;

use crate::context::ContextEntry;
use crate::pagetable::SecondLevel;

/// Frozen per-device quarantine tables. RMRRs are `(start, end_inclusive)` byte addresses,
/// mapped 1:1 and R/W.
pub type QuarantineTables = lazaret_io_pagetable::QuarantineTables<SecondLevel>;

/// The VT-d side of quarantine tables: the context entry that puts a device on them.
pub trait QuarantineContext {
    /// AW comes from the same [`Levels`](crate::Levels) the tables were built with. Not
    /// present when there are no tables.
    fn context_entry(&self, domain_id: u16) -> ContextEntry;
}

impl QuarantineContext for QuarantineTables {
    fn context_entry(&self, domain_id: u16) -> ContextEntry {
        match self.root() {
            Some(root) => ContextEntry::translated(root, self.levels(), domain_id),
            None => ContextEntry::NOT_PRESENT,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::RootTable;
    use crate::levels::{Depth, Levels};
    use crate::table_memory::TableMemory;
    use crate::walker::{translate, Fault};
    use lazaret_types::sim::{SimFrameAllocator, SimMemory};
    use lazaret_types::Bdf;
    use lazaret_types::FrameAllocator;
    use lazaret_types::{PhysAddr, PhysMem};
    use std::collections::BTreeSet;

    const DEV: Bdf = Bdf::from_requester_id(0x0008);
    const RMRR: (u64, u64) = (0xe_8000, 0xe_afff);

    /// Puts DEV on `q` and returns the root table address for the walker.
    fn install(mem: &SimMemory, alloc: &mut SimFrameAllocator, q: &QuarantineTables) -> PhysAddr {
        let tm = TableMemory::coherent(mem);
        let mut rt = RootTable::new(tm, alloc).unwrap();
        rt.ensure_bus(tm, alloc, DEV.bus()).unwrap();
        rt.switch_context(tm, DEV, ContextEntry::NOT_PRESENT, q.context_entry(1))
            .unwrap();
        rt.address()
    }

    fn sample_iovas(levels: Levels) -> Vec<u64> {
        let max = levels.max_iova();
        let mut v = vec![0, 0xfff, 0x1000, 0xd_f000, 0xe_b000, max, max & !0xfff];
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            v.push(x & max);
        }
        v
    }

    #[test]
    fn scratch_tables_are_levels_plus_one_pages_and_everything_hits_scratch() {
        for levels in Levels::ALL {
            let mem = SimMemory::new();
            let mut alloc = SimFrameAllocator::new(&mem, PhysAddr(0x100_0000), 64);
            let q =
                QuarantineTables::build(TableMemory::coherent(&mem), &mut alloc, levels, &[], true)
                    .unwrap();
            assert_eq!(q.page_count(), levels.count() as usize + 1);
            assert_eq!(alloc.frames_in_use(), q.page_count());
            assert_eq!(q.context_entry(9).levels(), Some(levels));
            let scratch = q.scratch_page().unwrap();
            let root = install(&mem, &mut alloc, &q);
            for iova in sample_iovas(levels) {
                for write in [false, true] {
                    assert_eq!(
                        translate(&mem, root, DEV, iova, write),
                        Ok(PhysAddr(scratch.0 | (iova & 0xfff))),
                        "{levels} iova {iova:#x}"
                    );
                }
            }
            assert!(matches!(
                translate(&mem, root, DEV, levels.max_iova() + 1, false),
                Err(Fault::AddressBeyondWidth { .. })
            ));
        }
    }

    #[test]
    fn rmrr_ranges_walk_to_themselves_on_private_paths() {
        for levels in Levels::ALL {
            let mem = SimMemory::new();
            let mut alloc = SimFrameAllocator::new(&mem, PhysAddr(0x100_0000), 64);
            let top = levels.max_iova().min((1 << 52) - 1) & !0x1f_ffff;
            let far = (top, top + 0x1fff);
            let q = QuarantineTables::build(
                TableMemory::coherent(&mem),
                &mut alloc,
                levels,
                &[RMRR, far],
                true,
            )
            .unwrap();
            // Two disjoint private paths: (levels - 1) private tables each.
            assert_eq!(
                q.page_count(),
                levels.count() as usize + 1 + 2 * (levels.count() as usize - 1)
            );
            let distinct: BTreeSet<_> = q.frames().iter().collect();
            assert_eq!(distinct.len(), q.page_count());
            let scratch = q.scratch_page().unwrap();
            let root = install(&mem, &mut alloc, &q);
            for p in (RMRR.0..=RMRR.1)
                .step_by(0x1000)
                .chain([far.0, far.0 + 0x1000])
            {
                assert_eq!(translate(&mem, root, DEV, p + 8, true), Ok(PhysAddr(p + 8)));
            }
            for iova in sample_iovas(levels) {
                let page = iova & !0xfff;
                let in_rmrr = (RMRR.0..=RMRR.1).contains(&page) || (far.0..=far.1).contains(&page);
                if !in_rmrr {
                    assert_eq!(
                        translate(&mem, root, DEV, iova, false),
                        Ok(PhysAddr(scratch.0 | (iova & 0xfff)))
                    );
                }
            }
            // Neighbours of the RMRR on its private leaf still reach scratch.
            assert_eq!(translate(&mem, root, DEV, RMRR.1 + 1, true), Ok(scratch));
            assert_eq!(
                translate(&mem, root, DEV, RMRR.0 - 0x1000, true),
                Ok(scratch)
            );
        }
    }

    #[test]
    fn basic_mode_maps_only_rmrr_and_is_empty_without() {
        let mem = SimMemory::new();
        let mut alloc = SimFrameAllocator::new(&mem, PhysAddr(0x100_0000), 64);
        let tm = TableMemory::coherent(&mem);
        let none = QuarantineTables::build(tm, &mut alloc, Levels::Four, &[], false).unwrap();
        assert_eq!(
            (none.root(), none.page_count(), none.scratch_page()),
            (None, 0, None)
        );
        assert_eq!(none.context_entry(3), ContextEntry::NOT_PRESENT);
        let q = QuarantineTables::build(tm, &mut alloc, Levels::Four, &[RMRR], false).unwrap();
        assert_eq!(q.page_count(), 4);
        assert_eq!(q.scratch_page(), None);
        let root = install(&mem, &mut alloc, &q);
        assert_eq!(
            translate(&mem, root, DEV, RMRR.0, true),
            Ok(PhysAddr(RMRR.0))
        );
        assert_eq!(
            translate(&mem, root, DEV, RMRR.1 + 1, false),
            Err(Fault::PteNotPresent {
                level: 1,
                write: false
            })
        );
        assert_eq!(
            translate(&mem, root, DEV, 1 << 40, true),
            Err(Fault::PteNotPresent {
                level: 4,
                write: true
            })
        );
        let before = alloc.frames_in_use();
        q.free(&mut alloc);
        assert_eq!(alloc.frames_in_use(), before - 4);
    }

    #[test]
    fn every_allocation_failure_in_build_leaks_nothing() {
        for levels in [Levels::Three, Levels::Four] {
            for scratch in [false, true] {
                let mem = SimMemory::new();
                let mut alloc = SimFrameAllocator::new(&mem, PhysAddr(0x100_0000), 64);
                let tm = TableMemory::coherent(&mem);
                let ok = QuarantineTables::build(
                    tm,
                    &mut alloc,
                    levels,
                    &[RMRR, (0x4000_0000, 0x4000_0fff)],
                    scratch,
                )
                .unwrap();
                let needed = ok.page_count();
                ok.free(&mut alloc);
                for fail in 0..needed {
                    alloc.fail_allocation(fail);
                    let r = QuarantineTables::build(
                        tm,
                        &mut alloc,
                        levels,
                        &[RMRR, (0x4000_0000, 0x4000_0fff)],
                        scratch,
                    );
                    assert_eq!(r.err(), Some(QuarantineError::OutOfFrames));
                    assert_eq!(
                        alloc.frames_in_use(),
                        0,
                        "{levels} scratch={scratch} fail at {fail}"
                    );
                }
            }
        }
    }

    #[test]
    fn bad_rmrr_is_rejected_without_leak() {
        let mem = SimMemory::new();
        let mut alloc = SimFrameAllocator::new(&mem, PhysAddr(0x100_0000), 64);
        let tm = TableMemory::coherent(&mem);
        for (levels, r) in [
            (Levels::Three, (1u64 << 39, (1 << 39) + 0xfff)),
            (Levels::Three, (0x2000, 0x1000)),
            (Levels::Five, (1 << 52, (1 << 52) + 0xfff)),
        ] {
            assert_eq!(
                QuarantineTables::build(tm, &mut alloc, levels, &[r], true).err(),
                Some(QuarantineError::BadRange {
                    start: r.0,
                    end: r.1
                })
            );
        }
        assert_eq!(alloc.frames_in_use(), 0);
    }

    #[test]
    fn zero_scratch_clears_data_only() {
        let mem = SimMemory::new();
        let mut alloc = SimFrameAllocator::new(&mem, PhysAddr(0x100_0000), 64);
        let tm = TableMemory::coherent(&mem);
        let q = QuarantineTables::build(tm, &mut alloc, Levels::Three, &[], true).unwrap();
        let scratch = q.scratch_page().unwrap();
        mem.write_u64(PhysAddr(scratch.0 + 0x80), 0xdead_beef);
        let root = install(&mem, &mut alloc, &q);
        q.zero_scratch(&mem);
        assert_eq!(mem.read_u64(PhysAddr(scratch.0 + 0x80)), 0);
        assert_eq!(translate(&mem, root, DEV, 0x5000, true), Ok(scratch));
    }
}
