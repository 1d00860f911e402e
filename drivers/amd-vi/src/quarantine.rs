//! Per-device quarantine tables (design §4): built once while the device lock is held, frozen
//! afterwards — the type has no mutation API, so no mapping lock is needed.
//!
//! Scratch mode: one root and one table per lower level whose every entry points to the
//! next level's single table, leaves → the device's own zeroed scratch page, R/W:
//! `levels + 1` frames. Unity (IVMD) ranges are identity-mapped on top: the path of each
//! unity page gets private copies of the shared tables, so the unity leaf overrides the
//! scratch leaf for that page only.
//!
//! Basic mode: only the unity identity maps; without any, there are no tables at all and
//! [`QuarantineTables::device_table_entry`] yields the blocking DTE.

extern crate alloc;

use alloc::vec::Vec;
use core::fmt;

use lazaret_types::{FrameAllocator, PhysAddr, PhysMem, PAGE_SIZE};

use crate::device_table::DeviceTableEntry;
use crate::levels::Levels;
use crate::pagetable::{pages, TranslationRoot};
use crate::pte::{address, entry_addr, is_present, leaf, pde, Perms};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuarantineError {
    OutOfFrames,
    /// A unity range is empty, grants no access, is unaligned at no page, or does not fit
    /// in the tables' address width.
    BadUnityRange {
        start: u64,
        end: u64,
    },
}

impl fmt::Display for QuarantineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QuarantineError::OutOfFrames => write!(f, "out of frames for quarantine tables"),
            QuarantineError::BadUnityRange { start, end } => {
                write!(
                    f,
                    "unity range {start:#x}..={end:#x} unusable for these tables"
                )
            }
        }
    }
}

/// A unity range from IVMD: `(start, end_inclusive, read, write)`, byte addresses.
pub type UnityRange = (u64, u64, bool, bool);

/// Frozen per-device quarantine tables.
#[derive(Debug)]
pub struct QuarantineTables {
    root: Option<PhysAddr>,
    levels: Levels,
    scratch: Option<PhysAddr>,
    frames: Vec<PhysAddr>,
}

/// Construction state: every frame taken so far is in `frames`, so one error path frees all.
struct Builder<'a, M: PhysMem + ?Sized, A: FrameAllocator + ?Sized> {
    mem: &'a M,
    alloc: &'a mut A,
    frames: Vec<PhysAddr>,
    /// Scratch mode: the shared table of each level (index = level), and the scratch page.
    shared: [Option<PhysAddr>; 7],
    scratch: Option<PhysAddr>,
}

impl<M: PhysMem + ?Sized, A: FrameAllocator + ?Sized> Builder<'_, M, A> {
    fn frame(&mut self) -> Result<PhysAddr, QuarantineError> {
        let f = self
            .alloc
            .alloc_frame()
            .ok_or(QuarantineError::OutOfFrames)?;
        self.frames.push(f);
        self.mem.zero(f, PAGE_SIZE);
        Ok(f)
    }

    /// What every entry of a fresh table at `level` holds: in scratch mode the shared path
    /// down to the scratch page, in basic mode nothing (not present).
    fn default_entry(&self, level: u32) -> u64 {
        match (level, self.scratch) {
            (1, Some(s)) => leaf(s, Perms::READ_WRITE),
            (_, Some(_)) => match self.shared.get(level as usize - 1).copied().flatten() {
                Some(child) => pde(child, level - 1),
                None => 0,
            },
            (_, None) => 0,
        }
    }

    /// A new table at `level` filled with [`Builder::default_entry`].
    fn table(&mut self, level: u32) -> Result<PhysAddr, QuarantineError> {
        let t = self.frame()?;
        let e = self.default_entry(level);
        if e != 0 {
            for i in 0..512 {
                self.mem.write_u64(entry_addr(t, i), e);
            }
        }
        Ok(t)
    }

    /// Scratch page and the shared chain, leaf table first; returns the shared root.
    fn shared_chain(&mut self, levels: Levels) -> Result<PhysAddr, QuarantineError> {
        self.scratch = Some(self.frame()?);
        let mut top = PhysAddr(0);
        for level in 1..=levels.count() {
            top = self.table(level)?;
            if let Some(slot) = self.shared.get_mut(level as usize) {
                *slot = Some(top);
            }
        }
        Ok(top)
    }

    /// Identity-maps `page` with `perms`, giving its path private tables where it would
    /// otherwise go through a shared one.
    fn identity(
        &mut self,
        root: PhysAddr,
        levels: Levels,
        page: u64,
        perms: Perms,
    ) -> Result<(), QuarantineError> {
        let mut table = root;
        for level in (2..=levels.count()).rev() {
            let slot = entry_addr(table, Levels::index(page, level));
            let e = self.mem.read_u64(slot);
            let shared_child = self.shared.get(level as usize - 1).copied().flatten();
            table = if is_present(e) && Some(address(e)) != shared_child {
                address(e)
            } else {
                let private = self.table(level - 1)?;
                self.mem.write_u64(slot, pde(private, level - 1));
                private
            };
        }
        let slot = entry_addr(table, Levels::index(page, 1));
        let e = self.mem.read_u64(slot);
        // Overlapping unity ranges add up; the scratch leaf never counts as a unity grant.
        let old = if is_present(e) && Some(address(e)) == Some(PhysAddr(page)) {
            Perms::from_bits(e)
        } else {
            Perms::NONE
        };
        self.mem
            .write_u64(slot, leaf(PhysAddr(page), perms.union(old)));
        Ok(())
    }

    fn build(
        &mut self,
        levels: Levels,
        unity: &[UnityRange],
        scratch: bool,
    ) -> Result<Option<PhysAddr>, QuarantineError> {
        for &(start, end, read, write) in unity {
            let bad = QuarantineError::BadUnityRange { start, end };
            if end < start || end > levels.max_iova() || !(read || write) {
                return Err(bad);
            }
        }
        // Basic mode always gets a root, empty without unity ranges: the DTE then has
        // translation on and every access walks into a not-present entry, which hardware
        // logs as IO_PAGE_FAULT (§2.5.3), naming the device and address. The blocking DTE
        // (Mode 0, IR = IW = 0) would refuse DMA too, but a refused Mode-0 access is not a
        // page fault, so nobody would learn which device tried.
        let root = if scratch {
            self.shared_chain(levels)?
        } else {
            self.table(levels.count())?
        };
        for &(start, end, read, write) in unity {
            let bad = QuarantineError::BadUnityRange { start, end };
            for page in pages(start, end).map_err(|_| bad)? {
                self.identity(root, levels, page, Perms { read, write })?;
            }
        }
        Ok(Some(root))
    }
}

impl QuarantineTables {
    /// Builds a device's quarantine tables; on any error every frame taken is given back.
    pub fn build<M, A>(
        mem: &M,
        alloc: &mut A,
        levels: Levels,
        unity_ranges: &[UnityRange],
        scratch: bool,
    ) -> Result<QuarantineTables, QuarantineError>
    where
        M: PhysMem + ?Sized,
        A: FrameAllocator + ?Sized,
    {
        let mut b = Builder {
            mem,
            alloc,
            frames: Vec::new(),
            shared: [None; 7],
            scratch: None,
        };
        match b.build(levels, unity_ranges, scratch) {
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

    /// Root of the tables (always present: basic mode without unity ranges has an empty one).
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

    /// Root and depth together, when there are tables.
    pub fn translation_root(&self) -> Option<TranslationRoot> {
        self.root.map(|r| TranslationRoot::new(r, self.levels))
    }

    /// The DTE that puts a device on these tables (Mode from the same [`Levels`] the tables
    /// were built with), or the blocking DTE when there are none.
    pub fn device_table_entry(&self, domain_id: u16) -> DeviceTableEntry {
        match self.translation_root() {
            Some(root) => DeviceTableEntry::translated(root, domain_id),
            None => DeviceTableEntry::blocking(domain_id),
        }
    }

    /// Zeroes the scratch page (data, not tables): done every time the device enters
    /// quarantine, before its DTE is switched here.
    pub fn zero_scratch<M: PhysMem + ?Sized>(&self, mem: &M) {
        if let Some(page) = self.scratch {
            mem.zero(page, PAGE_SIZE);
        }
    }

    /// Gives every frame back. Only once no DTE points here any more (after the
    /// invalidation that follows the switch away).
    pub fn free<A: FrameAllocator + ?Sized>(self, alloc: &mut A) {
        self.frames.iter().for_each(|f| alloc.free_frame(*f));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device_table::DeviceTable;
    use crate::walker::{translate, walk_tables, Fault};
    use lazaret_types::sim::{SimFrameAllocator, SimMemory};

    fn alloc(mem: &SimMemory) -> SimFrameAllocator<'_> {
        SimFrameAllocator::new(mem, PhysAddr(0x100_0000), 4096)
    }

    /// IOVAs spread over the whole width, page offsets included.
    fn samples(levels: Levels) -> impl Iterator<Item = u64> {
        let max = levels.max_iova();
        (0..64u64)
            .map(move |i| (max / 63).wrapping_mul(i) & max)
            .chain([0, 0xfff, 0x1000, 0xfee0_0000, max])
    }

    #[test]
    fn scratch_tables_are_levels_plus_one_and_reach_only_scratch() {
        for levels in [Levels::THREE, Levels::FOUR, Levels::FIVE] {
            let mem = SimMemory::new();
            let mut a = alloc(&mem);
            let q = QuarantineTables::build(&mem, &mut a, levels, &[], true).unwrap();
            assert_eq!(q.page_count(), levels.count() as usize + 1);
            assert_eq!(a.frames_in_use(), q.page_count());
            let root = q.translation_root().unwrap();
            let scratch = q.scratch_page().unwrap();
            for iova in samples(levels) {
                for write in [false, true] {
                    let pa =
                        walk_tables(&mem, root.root(), root.levels().count(), iova, write).unwrap();
                    assert_eq!(pa, PhysAddr(scratch.0 | (iova & 0xfff)), "iova {iova:#x}");
                }
            }
            q.free(&mut a);
            assert_eq!(a.frames_in_use(), 0);
        }
    }

    #[test]
    fn unity_ranges_override_scratch_with_their_permissions() {
        let levels = Levels::FOUR;
        let mem = SimMemory::new();
        let mut a = alloc(&mem);
        let unity = [
            (0xfed0_0000, 0xfed0_1fff, true, false),
            (0x7_0000_0000, 0x7_0000_0fff, true, true),
        ];
        let q = QuarantineTables::build(&mem, &mut a, levels, &unity, true).unwrap();
        let root = q.translation_root().unwrap();
        let scratch = q.scratch_page().unwrap();
        for iova in [0xfed0_0000u64, 0xfed0_1abc] {
            assert_eq!(
                walk_tables(&mem, root.root(), root.levels().count(), iova, false),
                Ok(PhysAddr(iova))
            );
            assert_eq!(
                walk_tables(&mem, root.root(), root.levels().count(), iova, true),
                Err(Fault::Permission {
                    level: 1,
                    write: true
                })
            );
        }
        assert_eq!(
            walk_tables(
                &mem,
                root.root(),
                root.levels().count(),
                0x7_0000_0010,
                true
            ),
            Ok(PhysAddr(0x7_0000_0010))
        );
        // Neighbours of unity pages, including ones in the private tables, still hit scratch.
        for iova in [0xfecf_f000u64, 0xfed0_2000, 0x7_0000_1000, 0x6_ffff_f000, 0] {
            assert_eq!(
                walk_tables(&mem, root.root(), root.levels().count(), iova, true),
                Ok(scratch),
                "iova {iova:#x}"
            );
        }
        // Both ranges sit under root entry 0: one private level-3 table, then 2 each.
        assert_eq!(q.page_count(), 5 + 1 + 2 + 2);
        q.free(&mut a);
        assert_eq!(a.frames_in_use(), 0);
    }

    #[test]
    fn basic_mode_maps_only_unity_or_nothing() {
        let mem = SimMemory::new();
        let mut a = alloc(&mem);
        let q = QuarantineTables::build(&mem, &mut a, Levels::THREE, &[], false).unwrap();
        assert_eq!(q.page_count(), 1, "an empty root");
        let empty = q.translation_root().unwrap();
        assert!(!q.device_table_entry(5).is_blocking());
        assert_eq!(
            walk_tables(&mem, empty.root(), empty.levels().count(), 0, true),
            Err(Fault::NotPresent { level: 3 })
        );
        let unity = [(0x10_0000, 0x10_0fff, true, true)];
        let q2 = QuarantineTables::build(&mem, &mut a, Levels::THREE, &unity, false).unwrap();
        let root = q2.translation_root().unwrap();
        assert_eq!(q2.scratch_page(), None);
        assert_eq!(
            walk_tables(&mem, root.root(), root.levels().count(), 0x10_0123, true),
            Ok(PhysAddr(0x10_0123))
        );
        assert_eq!(
            walk_tables(&mem, root.root(), root.levels().count(), 0x10_1000, false),
            Err(Fault::NotPresent { level: 1 })
        );
        assert_eq!(
            walk_tables(&mem, root.root(), root.levels().count(), 0x4000_0000, false),
            Err(Fault::NotPresent { level: 3 })
        );
        q2.free(&mut a);
        q.free(&mut a);
        assert_eq!(a.frames_in_use(), 0);
    }

    #[test]
    fn bad_unity_ranges_are_refused_without_leaks() {
        let mem = SimMemory::new();
        let mut a = alloc(&mem);
        for bad in [
            (0x2000, 0x1000, true, true),
            (0, 0xfff, false, false),
            (0, 1 << 39, true, true),
        ] {
            assert_eq!(
                QuarantineTables::build(&mem, &mut a, Levels::THREE, &[bad], true).map(|_| ()),
                Err(QuarantineError::BadUnityRange {
                    start: bad.0,
                    end: bad.1
                })
            );
            assert_eq!(a.frames_in_use(), 0);
        }
    }

    #[test]
    fn allocation_failure_at_every_step_leaks_nothing() {
        let unity = [
            (0xfed0_0000, 0xfed0_0fff, true, true),
            (0x1_0000_0000, 0x1_0000_0fff, true, false),
        ];
        for scratch in [true, false] {
            let mem = SimMemory::new();
            let mut a = alloc(&mem);
            let full =
                QuarantineTables::build(&mem, &mut a, Levels::FOUR, &unity, scratch).unwrap();
            let needed = full.page_count();
            full.free(&mut a);
            for fail_at in 0..needed {
                a.fail_allocation(fail_at);
                let r = QuarantineTables::build(&mem, &mut a, Levels::FOUR, &unity, scratch);
                assert_eq!(r.map(|_| ()), Err(QuarantineError::OutOfFrames));
                assert_eq!(a.frames_in_use(), 0, "leak failing allocation {fail_at}");
            }
        }
    }

    #[test]
    fn dte_mode_equals_table_depth_and_scratch_is_zeroed() {
        let mem = SimMemory::new();
        let mut a = alloc(&mem);
        let dt = DeviceTable::new(&mem, PhysAddr(0x10_0000), 0xff).unwrap();
        for levels in [Levels::THREE, Levels::FOUR, Levels::SIX] {
            let q = QuarantineTables::build(&mem, &mut a, levels, &[], true).unwrap();
            let dte = q.device_table_entry(0x42);
            assert_eq!(dte.levels(), Some(q.levels()));
            dt.switch_owner(&mem, 0x10, dte).unwrap();
            let scratch = q.scratch_page().unwrap();
            mem.write_u64(scratch, 0x5ec2e7);
            q.zero_scratch(&mem);
            assert_eq!(mem.read_u64(scratch), 0);
            let pa = translate(&mem, dt.base(), dt.entries(), 0x10, 0x1234_5678, true);
            assert_eq!(pa, Ok(PhysAddr(scratch.0 | 0x678)));
            dt.switch_owner(&mem, 0x10, DeviceTableEntry::blocking(0))
                .unwrap();
            q.free(&mut a);
        }
        assert_eq!(
            translate(&mem, dt.base(), dt.entries(), 0x10, 0, false),
            Err(Fault::Blocked { write: false })
        );
    }
}
