//! Per-device quarantine tables (design §4): the shared
//! [`lazaret_io_pagetable::QuarantineTables`] over the [`IoPageTable`] encoding.
//!
//! Scratch mode: `levels + 1` frames, every IOVA → the device's own zeroed scratch page, R/W.
//! Unity (IVMD) ranges are identity-mapped on top with their own read/write flags
//! (overlapping ranges add up), each on private copies of the shared tables.
//!
//! Basic mode: only the unity identity maps; without any, an empty root (see
//! [`IoPageTable`]'s `EMPTY_ROOT_IN_BASIC_MODE` for why not the blocking DTE).

pub use lazaret_io_pagetable::QuarantineError;

use crate::device_table::DeviceTableEntry;
use crate::pagetable::{IoPageTable, TranslationRoot};

/// A unity range from IVMD: `(start, end_inclusive, read, write)`, byte addresses.
pub type UnityRange = (u64, u64, bool, bool);

/// Frozen per-device quarantine tables.
pub type QuarantineTables = lazaret_io_pagetable::QuarantineTables<IoPageTable>;

/// The AMD side of quarantine tables: the DTE that puts a device on them.
pub trait QuarantineDte {
    /// Root and depth together, when there are tables.
    fn translation_root(&self) -> Option<TranslationRoot>;

    /// The DTE that puts a device on these tables (Mode from the same
    /// [`Levels`](crate::Levels) the tables were built with), or the blocking DTE when there
    /// are none.
    fn device_table_entry(&self, domain_id: u16) -> DeviceTableEntry;
}

impl QuarantineDte for QuarantineTables {
    fn translation_root(&self) -> Option<TranslationRoot> {
        self.root().map(|r| TranslationRoot::new(r, self.levels()))
    }

    fn device_table_entry(&self, domain_id: u16) -> DeviceTableEntry {
        match self.translation_root() {
            Some(root) => DeviceTableEntry::translated(root, domain_id),
            None => DeviceTableEntry::blocking(domain_id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device_table::DeviceTable;
    use crate::levels::{Depth, Levels};
    use crate::walker::{translate, walk_tables, Fault};
    use lazaret_types::sim::{SimFrameAllocator, SimMemory};
    use lazaret_types::{FrameAllocator, PhysAddr, PhysMem};

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
                Err(QuarantineError::BadRange {
                    start: bad.0,
                    end: bad.1
                })
            );
            assert_eq!(a.frames_in_use(), 0);
        }
    }

    /// A unity page is its own host address, so it must fit the entry's address field
    /// (bits 51:12): beyond it the leaf would silently point at a truncated address.
    #[test]
    fn unity_ranges_beyond_the_address_field_are_refused_at_every_depth() {
        let mem = SimMemory::new();
        let mut a = alloc(&mem);
        let beyond = (1u64 << 52, (1 << 52) + 0xfff, true, true);
        for levels in [Levels::FIVE, Levels::SIX] {
            assert_eq!(
                QuarantineTables::build(&mem, &mut a, levels, &[beyond], true).map(|_| ()),
                Err(QuarantineError::BadRange {
                    start: beyond.0,
                    end: beyond.1
                })
            );
        }
        assert_eq!(a.frames_in_use(), 0);
        let top = ((1u64 << 52) - 0x1000, (1 << 52) - 1, true, false);
        let q = QuarantineTables::build(&mem, &mut a, Levels::FIVE, &[top], true).unwrap();
        let root = q.translation_root().unwrap();
        assert_eq!(
            walk_tables(&mem, root.root(), 5, top.0 + 8, false),
            Ok(PhysAddr(top.0 + 8))
        );
        q.free(&mut a);
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
