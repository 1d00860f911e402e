//! Per-device quarantine tables (design §4; Xen's "scratch page" quarantine since XSA-400).
//!
//! Built once, at device-add time, while the device lock is held; frozen afterwards: the type
//! has no mutating method, so no mapping lock is needed and the compiler says so.
//!
//! * scratch mode: one root and one table per lower level whose every entry points at the next
//!   level's single table, the leaf table's every entry at the device's own zeroed scratch page
//!   (R/W) — `levels + 1` pages in all. RMRR ranges are identity-mapped on private copies of
//!   the tables along their path, so they override the scratch page for exactly those IOVAs.
//! * basic mode: only the RMRR identity maps; with no RMRR there are no tables at all and the
//!   context entry is not present (all DMA faults).

use alloc::vec::Vec;
use core::fmt;

use lazaret_types::{FrameAllocator, PhysAddr, PhysMem, PAGE_SIZE};

use crate::context::ContextEntry;
use crate::levels::Levels;
use crate::pagetable::{pages, MapError, Perms};
use crate::pte::{entry_addr, Pte, ADDR_MASK};
use crate::table_memory::{CacheFlush, TableMemory};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuarantineError {
    OutOfFrames,
    /// An RMRR range is empty or does not fit in the tables' address width.
    BadRmrr {
        start: u64,
        end: u64,
    },
}

impl fmt::Display for QuarantineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QuarantineError::OutOfFrames => write!(f, "out of frames for quarantine tables"),
            QuarantineError::BadRmrr { start, end } => {
                write!(f, "RMRR {start:#x}..={end:#x} unusable for these tables")
            }
        }
    }
}

/// Frozen per-device quarantine tables.
#[derive(Debug)]
pub struct QuarantineTables {
    root: Option<PhysAddr>,
    levels: Levels,
    scratch: Option<PhysAddr>,
    frames: Vec<PhysAddr>,
}

/// Construction state: every frame taken so far is in `frames`, so one error path frees all.
struct Builder<'t, 'm, M: PhysMem + ?Sized, F: CacheFlush + ?Sized, A: FrameAllocator + ?Sized> {
    tm: TableMemory<'m, M, F>,
    alloc: &'t mut A,
    frames: Vec<PhysAddr>,
    /// Scratch mode: the shared table of each level (index = level), and the scratch page.
    shared: [Option<PhysAddr>; 6],
    scratch: Option<PhysAddr>,
}

impl<M: PhysMem + ?Sized, F: CacheFlush + ?Sized, A: FrameAllocator + ?Sized>
    Builder<'_, '_, M, F, A>
{
    fn frame(&mut self) -> Result<PhysAddr, QuarantineError> {
        let f = self
            .alloc
            .alloc_frame()
            .ok_or(QuarantineError::OutOfFrames)?;
        self.frames.push(f);
        Ok(f)
    }

    /// What every entry of a shared table at `level` holds: the next shared table, or the
    /// scratch page in the leaf table; zero (not present) in basic mode.
    fn shared_pattern(&self, level: u32) -> u64 {
        match (level, self.scratch) {
            (_, None) => 0,
            (1, Some(scratch)) => Pte::leaf(scratch, Perms::READ_WRITE).0,
            (l, Some(_)) => self.shared[l as usize - 1].map_or(0, |t| Pte::table(t).0),
        }
    }

    /// A new table at `level` filled with the shared pattern.
    fn table(&mut self, level: u32) -> Result<PhysAddr, QuarantineError> {
        let t = self.frame()?;
        self.tm.fill_table(t, self.shared_pattern(level));
        Ok(t)
    }

    /// Identity-maps one page, copying shared tables on the way down so that the change is
    /// private to this IOVA's path.
    fn identity(
        &mut self,
        root: PhysAddr,
        levels: Levels,
        page: u64,
    ) -> Result<(), QuarantineError> {
        let mut table = root;
        for level in (2..=levels.count()).rev() {
            let at = entry_addr(table, page, level);
            let e = Pte(self.tm.read_u64(at));
            let shared_child = self.shared[level as usize - 1];
            table = if e.present() && Some(e.addr()) != shared_child {
                e.addr()
            } else {
                let private = self.table(level - 1)?;
                self.tm.write_entry(at, Pte::table(private).0);
                private
            };
        }
        let leaf = Pte::leaf(PhysAddr(page), Perms::READ_WRITE);
        self.tm.write_entry(entry_addr(table, page, 1), leaf.0);
        Ok(())
    }

    fn build(
        &mut self,
        levels: Levels,
        rmrr: &[(u64, u64)],
        scratch: bool,
    ) -> Result<Option<PhysAddr>, QuarantineError> {
        if scratch {
            let page = self.frame()?;
            self.tm.mem().zero(page, PAGE_SIZE);
            self.scratch = Some(page);
            for level in 1..levels.count() {
                let t = self.table(level)?;
                self.shared[level as usize] = Some(t);
            }
        } else if rmrr.is_empty() {
            return Ok(None);
        }
        let root = self.table(levels.count())?;
        for &(start, end) in rmrr {
            let bad = QuarantineError::BadRmrr { start, end };
            // Identity maps need the IOVA to be a host address too (PTE address bits 51:12).
            if end > levels.max_iova().min(ADDR_MASK | 0xfff) {
                return Err(bad);
            }
            for page in pages(start, end).map_err(|_: MapError| bad)? {
                self.identity(root, levels, page)?;
            }
        }
        Ok(Some(root))
    }
}

impl QuarantineTables {
    /// Builds a device's quarantine tables; on any error every frame taken is given back.
    /// `rmrr_ranges` are `(start, end_inclusive)` byte addresses, mapped 1:1 and R/W.
    pub fn build<M, F, A>(
        tm: TableMemory<'_, M, F>,
        alloc: &mut A,
        levels: Levels,
        rmrr_ranges: &[(u64, u64)],
        scratch: bool,
    ) -> Result<QuarantineTables, QuarantineError>
    where
        M: PhysMem + ?Sized,
        F: CacheFlush + ?Sized,
        A: FrameAllocator + ?Sized,
    {
        let mut b = Builder {
            tm,
            alloc,
            frames: Vec::new(),
            shared: [None; 6],
            scratch: None,
        };
        match b.build(levels, rmrr_ranges, scratch) {
            Ok(root) => Ok(QuarantineTables {
                root,
                levels,
                scratch: b.scratch,
                frames: b.frames,
            }),
            Err(e) => {
                b.frames.iter().for_each(|f| b.alloc.free_frame(*f));
                Err(e)
            }
        }
    }

    /// Root of the tables; `None` in basic mode without RMRR (program a not-present context).
    pub fn root(&self) -> Option<PhysAddr> {
        self.root
    }

    pub fn levels(&self) -> Levels {
        self.levels
    }

    pub fn scratch_page(&self) -> Option<PhysAddr> {
        self.scratch
    }

    /// Frames held, scratch page included.
    pub fn page_count(&self) -> usize {
        self.frames.len()
    }

    pub fn frames(&self) -> &[PhysAddr] {
        &self.frames
    }

    /// The context entry that puts a device on these tables: AW comes from the same
    /// [`Levels`] the tables were built with. Not present when there are no tables.
    pub fn context_entry(&self, domain_id: u16) -> ContextEntry {
        match self.root {
            Some(root) => ContextEntry::translated(root, self.levels, domain_id),
            None => ContextEntry::NOT_PRESENT,
        }
    }

    /// Zeroes the scratch page (data, not tables): done every time the device enters quarantine.
    pub fn zero_scratch<M: PhysMem + ?Sized>(&self, mem: &M) {
        if let Some(page) = self.scratch {
            mem.zero(page, PAGE_SIZE);
        }
    }

    /// Gives every frame back. Only once no context entry points here any more.
    pub fn free<A: FrameAllocator + ?Sized>(self, alloc: &mut A) {
        self.frames.iter().for_each(|f| alloc.free_frame(*f));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::RootTable;
    use crate::walker::{translate, Fault};
    use lazaret_types::sim::{SimFrameAllocator, SimMemory};
    use lazaret_types::Bdf;
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
                Some(QuarantineError::BadRmrr {
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
