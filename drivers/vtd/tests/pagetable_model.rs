//! Property test: random map / unmap sequences (with injected allocation failures) agree with
//! a HashMap model when every IOVA of the universe is walked by the reference walker.

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use lazaret_types::sim::{SimFrameAllocator, SimMemory};
use lazaret_types::{Bdf, FrameAllocator, PhysAddr};
use lazaret_vtd::{
    translate, ContextEntry, Levels, MapError, PageTable, Perms, RootTable, TableMemory,
};
use proptest::prelude::*;

const DEV: Bdf = Bdf::from_requester_id(0x0100);
/// High parts that share or split tables at every level of a 3-level (and 4-level) tree.
const HIGH: [u64; 4] = [0, 1 << 21, 1 << 30, (1 << 38) | (1 << 30)];

#[derive(Clone, Debug)]
enum Op {
    Map {
        iova: u64,
        frame: u64,
        perms: Perms,
    },
    Unmap {
        iova: u64,
    },
    /// Map with the n-th allocation failing.
    MapFailing {
        iova: u64,
        frame: u64,
        fail_at: usize,
    },
}

fn iova() -> impl Strategy<Value = u64> {
    (0..HIGH.len(), 0u64..8).prop_map(|(h, p)| HIGH[h] | (p << 12))
}

fn perms() -> impl Strategy<Value = Perms> {
    prop_oneof![
        Just(Perms::READ),
        Just(Perms::WRITE),
        Just(Perms::READ_WRITE)
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (iova(), 0u64..64, perms()).prop_map(|(iova, frame, perms)| Op::Map { iova, frame, perms }),
        2 => iova().prop_map(|iova| Op::Unmap { iova }),
        1 => (iova(), 0u64..64, 0usize..3).prop_map(|(iova, frame, fail_at)| Op::MapFailing { iova, frame, fail_at }),
    ]
}

fn universe() -> impl Iterator<Item = u64> {
    HIGH.iter().flat_map(|h| (0..8).map(move |p| h | (p << 12)))
}

fn run(levels: Levels, ops: Vec<Op>) {
    let mem = SimMemory::new();
    let tm = TableMemory::coherent(&mem);
    let mut alloc = SimFrameAllocator::new(&mem, PhysAddr(0x1000_0000), 256);
    let mut rt = RootTable::new(tm, &mut alloc).unwrap();
    rt.ensure_bus(tm, &mut alloc, DEV.bus()).unwrap();
    let mut pt = PageTable::new(tm, &mut alloc, levels).unwrap();
    rt.switch_context(
        tm,
        DEV,
        ContextEntry::NOT_PRESENT,
        ContextEntry::translated(pt.root(), levels, 1),
    )
    .unwrap();
    let mut model: HashMap<u64, (PhysAddr, Perms)> = HashMap::new();
    for op in ops {
        match op {
            Op::Map { iova, frame, perms } => {
                let pa = PhysAddr(0x8000_0000 + frame * 0x1000);
                let r = pt.map(tm, &mut alloc, iova, pa, perms);
                match model.entry(iova) {
                    Entry::Occupied(_) => assert_eq!(r, Err(MapError::AlreadyMapped { iova })),
                    Entry::Vacant(v) => {
                        assert_eq!(r, Ok(()));
                        v.insert((pa, perms));
                    }
                }
            }
            Op::Unmap { iova } => {
                let r = pt.unmap(tm, iova).unwrap();
                assert_eq!(r, model.remove(&iova).map(|(pa, _)| pa));
            }
            Op::MapFailing {
                iova,
                frame,
                fail_at,
            } => {
                let pa = PhysAddr(0x8000_0000 + frame * 0x1000);
                let frames = alloc.frames_in_use();
                alloc.fail_allocation(fail_at);
                let attempts = alloc.allocation_attempts();
                let r = pt.map(tm, &mut alloc, iova, pa, Perms::READ);
                let failed_here = alloc.allocation_attempts() > attempts + fail_at;
                match r {
                    Ok(()) => {
                        assert!(!failed_here && !model.contains_key(&iova));
                        model.insert(iova, (pa, Perms::READ));
                    }
                    Err(MapError::OutOfFrames) => {
                        assert!(failed_here);
                        assert_eq!(alloc.frames_in_use(), frames, "no leak");
                    }
                    Err(e) => assert_eq!(e, MapError::AlreadyMapped { iova }),
                }
                // Disarm an unused injection so it cannot hit a later operation.
                if !failed_here {
                    alloc.fail_allocation(usize::MAX / 2);
                }
            }
        }
        for iova in universe() {
            for write in [false, true] {
                let got = translate(&mem, rt.address(), DEV, iova | 0x18, write);
                match model.get(&iova) {
                    Some((pa, p)) if (write && p.write) || (!write && p.read) => {
                        assert_eq!(got, Ok(PhysAddr(pa.0 | 0x18)))
                    }
                    _ => assert_eq!(
                        got.map_err(|f| f.reason_code()),
                        Err(if write { 5 } else { 6 }),
                        "{iova:#x} write={write}"
                    ),
                }
            }
        }
    }
    pt.free(&mem, &mut alloc);
    rt.free(&mut alloc);
    assert_eq!(alloc.frames_in_use(), 0);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn three_level_tables_match_the_model(ops in proptest::collection::vec(op(), 1..40)) {
        run(Levels::Three, ops);
    }

    #[test]
    fn four_level_tables_match_the_model(ops in proptest::collection::vec(op(), 1..40)) {
        run(Levels::Four, ops);
    }
}
