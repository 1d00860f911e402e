//! Property tests: random map/unmap sequences agree with a HashMap model when walked by the
//! reference walker, for 3- and 4-level tables; quarantine tables send every random IOVA to
//! the scratch page or to its unity range.

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use lazaret_amd_vi::{
    walk_tables, Depth, Levels, MapError, PageTable, Perms, QuarantineDte, QuarantineTables,
    Translated,
};
use lazaret_types::sim::{SimFrameAllocator, SimMemory};
use lazaret_types::{FrameAllocator, PhysAddr};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Map {
        slot: u64,
        frame: u64,
        read: bool,
        write: bool,
    },
    Unmap {
        slot: u64,
    },
}

/// IOVAs clustered so that operations share tables, but spread across top-level entries.
fn iova(levels: Levels, slot: u64) -> u64 {
    let top_shift = levels.address_bits() - 9;
    ((slot % 3) << top_shift) | (((slot / 3) % 4) << 21) | ((slot / 12) << 12)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..48u64, 0..1024u64, any::<bool>(), any::<bool>()).prop_map(
            |(slot, frame, read, write)| Op::Map {
                slot,
                frame,
                read,
                write
            }
        ),
        (0..48u64).prop_map(|slot| Op::Unmap { slot }),
    ]
}

fn check(levels: Levels, ops: &[Op]) -> Result<(), TestCaseError> {
    let mem = SimMemory::new();
    let mut alloc = SimFrameAllocator::new(&mem, PhysAddr(0x1000_0000), 512);
    let mut pt = PageTable::new(&mem, &mut alloc, levels).expect("root");
    let root = pt.translation_root();
    let mut model: HashMap<u64, (PhysAddr, Perms)> = HashMap::new();
    for op in ops {
        match *op {
            Op::Map {
                slot,
                frame,
                read,
                write,
            } => {
                let (va, pa, perms) = (
                    iova(levels, slot),
                    PhysAddr(frame << 12),
                    Perms { read, write },
                );
                let r = pt.map(&mem, &mut alloc, va, pa, perms);
                let expected = if perms.is_none() {
                    Err(MapError::NoAccess)
                } else {
                    match model.entry(va) {
                        Entry::Occupied(_) => Err(MapError::AlreadyMapped { iova: va }),
                        Entry::Vacant(v) => {
                            v.insert((pa, perms));
                            Ok(())
                        }
                    }
                };
                prop_assert_eq!(r, expected);
            }
            Op::Unmap { slot } => {
                let va = iova(levels, slot);
                let r = pt.unmap(&mem, va).expect("in range");
                prop_assert_eq!(r, model.remove(&va).map(|(pa, _)| pa));
            }
        }
        for slot in 0..48 {
            let va = iova(levels, slot);
            for write in [false, true] {
                let got =
                    walk_tables(&mem, root.root(), root.levels().count(), va | 0x18, write).ok();
                let want = model
                    .get(&va)
                    .filter(|(_, p)| p.allows(write))
                    .map(|(pa, _)| PhysAddr(pa.0 | 0x18));
                prop_assert_eq!(got, want, "iova {:#x} write {}", va, write);
            }
        }
    }
    pt.free(&mem, &mut alloc);
    prop_assert_eq!(alloc.frames_in_use(), 0);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn map_unmap_matches_model_3_levels(ops in prop::collection::vec(op(), 1..40)) {
        check(Levels::THREE, &ops)?;
    }

    #[test]
    fn map_unmap_matches_model_4_levels(ops in prop::collection::vec(op(), 1..40)) {
        check(Levels::FOUR, &ops)?;
    }

    #[test]
    fn quarantine_reaches_only_scratch_or_unity(
        four in any::<bool>(),
        unity_pages in prop::collection::vec((0..1u64 << 26, 1..4u64, any::<bool>()), 0..4),
        probes in prop::collection::vec(any::<u64>(), 32),
    ) {
        let levels = if four { Levels::FOUR } else { Levels::THREE };
        let unity: Vec<_> = unity_pages
            .iter()
            .map(|&(page, n, write)| (page << 12, ((page + n) << 12) - 1, true, write))
            .collect();
        let mem = SimMemory::new();
        let mut alloc = SimFrameAllocator::new(&mem, PhysAddr(0x1_0000_0000), 256);
        let q = QuarantineTables::build(&mem, &mut alloc, levels, &unity, true).expect("build");
        let root = q.translation_root().expect("scratch mode has tables");
        let scratch = q.scratch_page().expect("scratch page");
        let unity_probes = unity.iter().map(|u| u.0 + 8);
        for va in probes.iter().map(|p| p & levels.max_iova()).chain(unity_probes) {
            let hit = unity.iter().filter(|u| u.0 <= va && va <= u.1);
            let writable = hit.clone().any(|u| u.3);
            let in_unity = hit.count() > 0;
            let read = walk_tables(&mem, root.root(), root.levels().count(), va, false);
            let write = walk_tables(&mem, root.root(), root.levels().count(), va, true);
            if in_unity {
                prop_assert_eq!(read, Ok(PhysAddr(va)));
                prop_assert_eq!(write.is_ok(), writable);
            } else {
                let s = PhysAddr(scratch.0 | (va & 0xfff));
                prop_assert_eq!(read, Ok(s));
                prop_assert_eq!(write, Ok(s));
            }
        }
        q.free(&mut alloc);
        prop_assert_eq!(alloc.frames_in_use(), 0);
    }
}
